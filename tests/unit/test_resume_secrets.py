"""Secrets a run logged as ``***`` are given again to ``pipeline.resume``: on its command line or in
the environment; one given neither way is used as ``***`` and the command says so."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pipeline import PipelineError
from pipeline.resume import supply_secrets
from pipeline.tracking.scrub import redacted

LOGGED = OmegaConf.create(
    redacted({"tracking": {"api_token": "tok-1234", "uri": "x"}, "data": {"hf_token": "hf-1234"}})
)


def test_secrets_come_from_the_command_line_then_the_environment(caplog):
    supplied = supply_secrets(LOGGED, ["tracking.api_token=tok-1234"], {"PIPELINE_DATA_HF_TOKEN": "hf-1234"})
    assert supplied == ["tracking.api_token=tok-1234", "data.hf_token=hf-1234"]
    assert "***" not in caplog.text


def test_a_secret_given_neither_way_is_said_to_be_used_as_hidden(caplog):
    assert supply_secrets(LOGGED, [], {}) == []
    assert "data.hf_token was logged as ***" in caplog.text and "PIPELINE_DATA_HF_TOKEN" in caplog.text


def test_only_hidden_keys_can_be_given_again():
    with pytest.raises(PipelineError, match=r"'tracking.uri=y': resume continues the logged config"):
        supply_secrets(LOGGED, ["tracking.uri=y"], {})
