"""Everything MLflow: the store, what a run records, how it ends, replaying it, sweeps.

Only this package calls MLflow's logging API; the stages and the runtime hand it what to record.
Importing it is cheap (MLflow is imported where it is used).

- ``store``: the tracking target, its experiment;
- ``scrub``: the one scrubber (secrets, URI credentials, MLflow's length limits);
- ``record``: params, replay tags, dataset lineage, metrics, the model;
- ``run``: the job's run, and the one way any run ends with a reason;
- ``replay``: a logged run's config and overrides, read back;
- ``environment``: the installed packages against the committed lock or a run's record;
- ``baseline``: the baseline cache (runs that computed a baseline, by key);
- ``leaderboard``: runs side by side;
- ``registry``: model versions, aliases (promotion);
- ``sweep``: the Hydra callback behind ``-m`` (parent and child runs);
- ``study``: the Optuna sweep's persistent study (storage, name, link to the parent run, plots).
"""

from pipeline.tracking.baseline import copy_baseline_items, find_baseline, log_baseline_items, record_baseline
from pipeline.tracking.record import (
    config_params,
    flatten,
    flush,
    log_data_lineage,
    log_files,
    log_leakage,
    log_metrics,
    log_mined_set,
    log_model,
    package_versions,
    set_tags,
)
from pipeline.tracking.registry import check_registry, register_model
from pipeline.tracking.replay import artifact_text, hidden_keys, logged_config, logged_file, logged_list, with_overrides
from pipeline.tracking.run import config_secrets, end_run, job_run
from pipeline.tracking.scrub import LogScrubber, metric_key, metric_name, redact, scrub
from pipeline.tracking.store import (
    check_target,
    check_uri,
    client,
    default_tracking_uri,
    is_server,
    open_experiment,
    ui_command,
)

__all__ = [
    "LogScrubber",
    "artifact_text",
    "check_registry",
    "check_target",
    "check_uri",
    "client",
    "config_params",
    "config_secrets",
    "copy_baseline_items",
    "default_tracking_uri",
    "end_run",
    "find_baseline",
    "flatten",
    "flush",
    "hidden_keys",
    "is_server",
    "job_run",
    "log_baseline_items",
    "log_data_lineage",
    "log_files",
    "log_leakage",
    "log_metrics",
    "log_mined_set",
    "log_model",
    "logged_config",
    "logged_file",
    "with_overrides",
    "logged_list",
    "metric_key",
    "metric_name",
    "open_experiment",
    "record_baseline",
    "package_versions",
    "redact",
    "register_model",
    "scrub",
    "set_tags",
    "ui_command",
]
