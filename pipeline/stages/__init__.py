"""The stages of a job, each a short function over its slice of the config.

``settings`` (every pipeline-owned key declared once), ``schema`` (unknown keys refused;
``config_files`` names the file that brought one), ``spec`` (the config read once: which evaluators, their
metric names, ...), ``validate`` (config checks, no data), ``load`` (read and check the data; ``smoke`` for
``debug=smoke``, ``splits`` for what it returns, ``transforms`` for row transforms), ``build`` (model,
guide, loss, evaluators, the miner's loader), ``mine`` (hard negatives), ``train``, ``evaluate``. Stages never start or end MLflow runs: the job
(``pipeline.job``) logs what they return.
"""
