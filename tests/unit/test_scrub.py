"""The one scrubber: values under secret-looking keys, known secret values and URI credentials."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pipeline.tracking.scrub import override_secrets, scrub


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("+tracking.api_token=abc123 seed=2", "+tracking.api_token=*** seed=2"),
        ("+tracking.password=aa11,bb22 seed=1,2", "+tracking.password=*** seed=1,2"),
        ("{'api_token': 'abc123', 'seed': 1}", "{'api_token': '***', 'seed': 1}"),
        ("+  hf_token: tok-xyz\n-  hf_token: null", "+  hf_token: ***\n-  hf_token: null"),
        ("see https://bob:pw@example.com/x", "see https://***@example.com/x"),
        ("tokenizer_name: bert max_tokens=5", "tokenizer_name: bert max_tokens=5"),
    ],
)
def test_scrub_hides_secret_assignments_and_credentials(text, expect):
    assert scrub(text) == expect


def test_known_secret_values_are_hidden_anywhere():
    secrets = override_secrets(["+tracking.api_token=s3cret-a,s3cret-b", "seed=1", "tracking.uri=http://u:pw-uri1@h"])
    assert scrub("job with s3cret-b failed", secrets) == "job with *** failed"
    assert scrub('+ token, password = "tok-x", "pw-uri1"', secrets) == '+ token, password = "***", "***"'
    assert scrub("x" * 50, limit=10) == "x" * 10


def test_a_launch_file_holds_no_secret_and_the_ranks_get_every_one_back(tmp_path, monkeypatch):
    from pipeline.runtime import launch
    from tests.conftest import compose_config

    overrides = ["hardware=cpu_ddp", "+training.hub_token=tok-launch-1", "tracking.uri=http://bob:pw-launch-2@h:5000"]
    cfg = compose_config(overrides)
    secrets = launch.write_job(cfg, tmp_path, {"overrides": overrides, "run_name": "+training.hub_token=tok-launch-1"})
    written = (tmp_path / "job.yaml").read_text()
    assert "tok-launch-1" not in written and "pw-launch-2" not in written, written
    monkeypatch.setenv(launch.SECRETS_ENV, secrets)
    job = launch.read_job(tmp_path)
    assert job.config == OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # every rank's config, whole
    assert launch.config_digest(job.config) == launch.config_digest(cfg)
    assert job.overrides[1] == "+training.hub_token=***"
