"""``tracking.register_as`` refused before any run where it cannot register. The versions a sweep
registers, ``pipeline.promote`` and the champion loaded back by alias: tests/e2e/test_promote_compose.py
(one registered sweep shared by those tests)."""

from __future__ import annotations

import pytest

from pipeline import PipelineError


def test_register_as_needs_a_store_with_a_registry(tmp_path):
    from pipeline.job import preflight
    from tests.conftest import compose_config

    store = tmp_path / "filestore"
    cfg = compose_config(["debug=smoke", f"tracking.uri=file://{store}", "tracking.register_as=tiny"])
    with pytest.raises(PipelineError, match="has no usable Model Registry"):
        preflight(cfg, tmp_path / "job", None)
    assert not store.exists() or not any(store.rglob("meta.yaml"))  # no run was created there
    local = f"tracking.uri=sqlite:///{tmp_path}/local.db"  # never the repo's own mlruns/
    cfg = compose_config(["debug=smoke", local, "tracking.register_as=tiny", "tracking.log_model=false"])
    with pytest.raises(PipelineError, match="tracking.log_model=true"):
        preflight(cfg, tmp_path / "job", None)
    cfg = compose_config(["debug=smoke", f"tracking.uri=sqlite:///{tmp_path}/x.db", "tracking.register_as=a/b"])
    with pytest.raises(PipelineError, match="tracking.register_as='a/b'"):
        preflight(cfg, tmp_path / "job", None)
