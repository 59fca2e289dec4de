"""Read back what a logged run needs to be replayed: its resolved config and its overrides.

What ``pipeline.rerun`` and ``pipeline.resume`` rebuild a job from: never today's defaults.
Reads MLflow only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import PipelineError


def logged_config(client, run_id: str, overrides: list[str]) -> DictConfig:
    """The run's logged ``config.yaml`` with ``overrides`` merged in (unknown keys are an error)."""
    return with_overrides(logged_file(client, run_id), overrides, run_id)


def logged_file(client, run_id: str) -> DictConfig:
    """The run's logged ``config.yaml`` as it was written (struct: no key can be added by mistake)."""
    try:
        text = artifact_text(client, run_id, "config.yaml")
    except LookupError as error:
        raise PipelineError(
            f"run {run_id} has no config.yaml artifact ({error}): only runs logged by `python -m pipeline` can be replayed."
        ) from None
    try:
        cfg = OmegaConf.create(text)
    except Exception as error:  # noqa: BLE001 - yaml's errors share no base class worth naming
        raise PipelineError(
            f"config.yaml of run {run_id} does not parse ({type(error).__name__}): fix the artifact or rerun by hand."
        ) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def with_overrides(cfg: DictConfig, overrides: list[str], run_id: str) -> DictConfig:
    """``cfg`` with the ``key=value`` overrides merged in: a key the logged config lacks is an error."""
    bad = [o for o in overrides if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        raise PipelineError(
            f"override {bad[0]!r}: write key=value with a key of the logged config (e.g. training.learning_rate=1e-4)."
        )
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        reason = error.msg if hasattr(error, "msg") else error
        raise PipelineError(
            f"override does not fit the logged config: {reason}: use keys that config.yaml of run {run_id} has."
        ) from None


def logged_list(client, run_id: str, name: str) -> list[str]:
    """A YAML list artifact of the run (the command-line overrides), empty when absent."""
    try:
        return [str(item) for item in OmegaConf.create(artifact_text(client, run_id, name))]
    except LookupError:
        return []


def artifact_text(client, run_id: str, name: str) -> str:
    """A text artifact of the run, read through a temporary download; LookupError when absent."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="pipeline-logged-") as folder:
        try:
            return Path(client.download_artifacts(run_id, name, folder)).read_text(encoding="utf-8")
        except (MlflowException, OSError) as error:
            raise LookupError(str(error)) from None


def hidden_keys(cfg: DictConfig) -> list[str]:
    """Dot keys of the config whose logged value is the scrubber's ``***`` (secrets never logged)."""
    from pipeline.tracking.scrub import HIDDEN

    found: list[str] = []

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif node == HIDDEN:
            found.append(prefix[:-1])

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found
