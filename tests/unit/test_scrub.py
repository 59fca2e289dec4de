"""The one scrubber: values under secret-looking keys, known secret values and URI credentials."""

from __future__ import annotations

import pytest

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
    secrets = override_secrets(["+tracking.api_token=s3cret-a,s3cret-b", "seed=1"])
    assert scrub("job with s3cret-b failed", secrets) == "job with *** failed"
    assert scrub("x" * 50, limit=10) == "x" * 10
