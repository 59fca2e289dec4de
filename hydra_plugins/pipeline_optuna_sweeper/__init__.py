"""Hydra loads sweepers only from the ``hydra_plugins`` namespace: this package makes
``pipeline.runtime.optuna_sweeper`` one (``conf/hydra/sweeper/optuna_study.yaml``)."""
