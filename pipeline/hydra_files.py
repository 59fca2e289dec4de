"""What Hydra writes beside a job, written with every secret hidden (``pipeline.tracking.scrub``).

Hydra saves the composed config, its own config and the overrides of every job to
``<output_dir>/<hydra.output_subdir>/`` as they are, secrets included (``hydra/core/utils.py``
``run_job``). The pipeline sets ``hydra.output_subdir: null``, so Hydra writes none of them, and
:class:`ScrubbedHydraFiles` (a Hydra callback in ``conf/config.yaml``) writes the same three files,
scrubbed, to ``<output_dir>/.hydra/`` when the job starts: a secret never reaches the disk, not even
for a moment, and the folder looks as it always did. A sweep's ``multirun.yaml`` is written by the
sweeper itself before any job (``BasicSweeper.sweep``): the first job to start rewrites it scrubbed,
and so does the end of the sweep. ``hydra.output_subdir`` set on the command line would make Hydra write
its own copies again: refused before Hydra starts (set in a config file, the copies Hydra has just written
are replaced scrubbed as the job starts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.tracking.run import config_secrets
from pipeline.tracking.scrub import redacted, scrub


class ScrubbedHydraFiles(Callback):
    """Writes ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` of each job to ``<output_dir>/<subdir>``
    (what Hydra writes with ``hydra.output_subdir``), and rewrites a sweep's ``multirun.yaml``, scrubbed."""

    def __init__(self, subdir: str = ".hydra") -> None:
        self.subdir = subdir

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
        overrides = [str(o) for o in config.hydra.overrides.task]
        secrets = config_secrets(task, overrides)
        # hydra.output_subdir set in a config file: Hydra has just written its copies there; they are replaced
        chosen = config.hydra.output_subdir
        for subdir in dict.fromkeys([self.subdir, *([chosen] if chosen is not None else [])]):
            folder = Path(config.hydra.runtime.output_dir) / subdir
            folder.mkdir(parents=True, exist_ok=True)
            for name, node in {
                "config.yaml": task,
                "hydra.yaml": OmegaConf.create({"hydra": config.hydra}),
                "overrides.yaml": config.hydra.overrides.task,
            }.items():
                write_scrubbed(folder / name, OmegaConf.to_yaml(redacted(OmegaConf.to_container(node))), secrets)
        if config.hydra.mode == RunMode.MULTIRUN:
            scrub_file(Path(config.hydra.sweep.dir) / "multirun.yaml", secrets)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        scrub_file(Path(config.hydra.sweep.dir) / "multirun.yaml", [])


def refuse_hydra_copies(argv: list[str], subdir: str = ".hydra") -> None:
    """``hydra.output_subdir`` set on the command line: Hydra would write its copies, secrets included,
    before any job code runs. Refused before Hydra starts, with how to name the scrubbed copies' folder."""
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "hydra.output_subdir" and value not in ("null", ""):
            raise PipelineError(
                f"hydra.output_subdir={value}: Hydra would write each job's config there as it is, secrets "
                f"included; the pipeline writes it scrubbed to {subdir}/ itself: drop the override, or name that "
                f"folder with hydra.callbacks.scrubbed_files.subdir={value}."
            )


def scrub_file(path: Path, secrets: list[str]) -> None:
    """Rewrite ``path`` scrubbed when it holds a secret (a sweep's ``multirun.yaml``); absent: nothing."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    if scrub(text, secrets) != text:
        write_scrubbed(path, text, secrets)


def write_scrubbed(path: Path, text: str, secrets: list[str]) -> None:
    """``text`` scrubbed into ``path``, replaced at once (jobs of a parallel sweep rewrite the same file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(scrub(text, secrets), encoding="utf-8")
    os.replace(temporary, path)
