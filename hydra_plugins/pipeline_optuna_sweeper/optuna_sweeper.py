"""``hydra/sweeper=optuna_study``: the sweeper of ``pipeline.runtime.optuna_sweeper``, where Hydra looks for it."""

from pipeline.runtime import optuna_sweeper


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    """Optuna's ask/tell API behind Hydra's sweeper interface, its study persistent (docs/sweeps.md)."""
