"""docs/config.md is generated from the declarations (pipeline.stages.settings): it must be current."""

from __future__ import annotations

from pipeline.schema_docs import PAGE, render
from pipeline.stages import settings


def test_the_config_reference_is_current():
    assert PAGE.read_text(encoding="utf-8") == render(), "docs/config.md is stale: run python -m pipeline.schema_docs"


def test_every_declared_key_has_a_help_text():
    missing = [
        f"{cls.__name__}.{key}"
        for cls in (
            settings.Job,
            settings.Mine,
            settings.Model,
            settings.Peft,
            settings.Data,
            settings.Splits,
            settings.LossOptions,
            settings.Evaluator,
            settings.Hardware,
            settings.Tracking,
            settings.EarlyStopping,
            settings.Guard,
        )
        for key, (_, meta) in settings.declared(cls).items()
        if not meta.get("help")
    ]
    assert not missing, f"declared without a help text: {missing}"
