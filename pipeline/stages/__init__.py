"""The stages of a job, each a short function over its slice of the config.

``validate`` (config checks, no data), ``load`` (read and check the data; ``smoke`` for
``debug=smoke``, ``splits`` for what it returns, ``transforms`` for row transforms), ``evaluators``
(which evaluators a config asks for, their metric names), ``build`` (model, guide, loss, evaluators),
``mine`` (hard negatives), ``train``, ``evaluate``. Stages never start or end MLflow runs: the job
(``pipeline.job``) logs what they return.
"""
