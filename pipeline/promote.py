"""``python -m pipeline.promote``: register the best run of a sweep (or one run) in the MLflow Model
Registry and point an alias at it.

The best child of ``--parent`` is the FINISHED one with the best ``--metric`` (default: the sweep's
``optimized_metric``, in the sweep's direction; sentence-transformers' name, ``ir-dev_cosine_ndcg@10``).
When the sweep swept ``seed``, it is the leaderboard's pick: the configuration with the best mean over
its seeds, and within it the best seed (the output says which). A FAILED or unfinished run, a run
without that metric or without a logged model is refused (exit 2). A run whose model is registered
under the name already (``tracking.register_as``) keeps that version: only the alias moves. A new
model version carries the run id, the config digest and the key metrics as tags
(``pipeline.tracking.registry``).

A champion must win: when the alias is already held (by another run's model), the challenger is
compared with the holder on the same evaluation items (their ``items/*.parquet``: a paired bootstrap
of the difference on the metric, 10,000 resamples); unless the 95% interval of challenger - holder lies
wholly on the better side of 0, promotion is refused (exit 2), naming both runs and the interval.
``--force`` promotes without the comparison. A first promotion (no holder) needs none.

    python -m pipeline.promote --parent SWEEP_RUN_ID --alias champion
    python -m pipeline.promote --run RUN_ID --register-as sts-minilm
    python -c 'import mlflow; mlflow.sentence_transformers.load_model("models:/sts-minilm@champion")'
"""

from __future__ import annotations

import argparse
import logging

from pipeline import PipelineError, tracking
from pipeline.cli import add_tracking_uri, parse_args, reported, run_command, tracking_uri
from pipeline.tracking import comparison, intervals, registry
from pipeline.tracking.direction import metric_direction
from pipeline.tracking.scrub import metric_name


def _run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise PipelineError(f"--run {run_id}: no such run in this store: copy the run id from the MLflow UI.") from None


def _name(client, run, register_as: str | None) -> str:
    """``--register-as``, else the run's own ``tracking.register_as``, else its experiment's name."""
    logged = run.data.params.get("tracking.register_as")
    if register_as or (logged and logged != "None"):
        return register_as or logged
    return client.get_experiment(run.info.experiment_id).name


def check_beats_holder(client, name: str, alias: str, run, metric: str | None, resamples: int, seed: int):
    """The challenger's difference from the holder of ``NAME@ALIAS`` (None: no holder, or the holder is
    this run); refused unless its interval lies wholly on the better side of 0."""
    holder = registry.alias_holder(client, name, alias)
    challenger = run.info.run_id
    if holder is None or holder == challenger:
        return None
    if not metric or metric == "None":
        raise PipelineError(
            f"{name}@{alias} is held by run {holder}; run {challenger} names no metric to compare them on: "
            "pass --metric NAME, or --force."
        )
    metric = metric_name(metric)
    difference = comparison.challenge(client, holder, challenger, metric, resamples, seed)
    better = difference.low > 0 if metric_direction(metric) == "maximize" else difference.high < 0
    if not better:
        verdict = "includes 0" if not difference.excludes_zero() else "favours the holder"
        raise PipelineError(
            f"run {challenger} is not shown better than {name}@{alias}'s run {holder} on {metric}: challenger - holder "
            f"= {intervals.spelled(difference)} (95% paired-bootstrap interval over the items) {verdict}; "
            "the holder keeps the alias (--force promotes anyway)."
        )
    return difference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.promote", description=__doc__.split("\n\n")[0])
    add_tracking_uri(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--parent", metavar="SWEEP_RUN_ID", help="promote the best FINISHED child of this sweep")
    which.add_argument("--run", metavar="RUN_ID", help="promote this run")
    parser.add_argument("--alias", default="champion", help="the alias set on the new version (default: champion)")
    parser.add_argument(
        "--metric", help="rank / check by this metric, e.g. ir-dev_cosine_ndcg@10 (default: the optimized_metric)"
    )
    parser.add_argument("--register-as", metavar="NAME", help="registered model name (default: the experiment's)")
    parser.add_argument(
        "--force", action="store_true", help="move the alias without showing the run beats the alias's holder"
    )
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed (default 0)")
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.WARNING)
    with reported():
        uri = tracking_uri(args)
        tracking.check_uri(uri)
        registry.check_alias(args.alias)
        registry.check_registry(uri, args.register_as, "--register-as")
        client = tracking.client(uri)
        if args.parent:
            choice = registry.best_child(client, args.parent, args.metric)
            run, metric = choice.run, choice.metric
            print(f"picked run {run.info.run_id}: {choice.reason}")
        else:
            run = _run(client, args.run)
            metric = args.metric or run.data.params.get("optimized_metric")
        value = registry.check_promotable(run, metric)
        name = _name(client, run, args.register_as)
        beaten = (
            None if args.force else check_beats_holder(client, name, args.alias, run, metric, args.resamples, args.seed)
        )
        version, reused = registry.promote(uri, run, name, args.alias)
    scored = f", {tracking.metric_name(metric)}={value:.4f}" if value is not None else ""
    if beaten is not None:
        print(f"it beats the alias's holder on {metric_name(metric)}: {intervals.spelled(beaten)} (95% interval)")
    made = "its existing version" if reused else "new version"
    print(f"run {run.info.run_id}{scored} -> {name} {made} {version.version}, alias {args.alias!r}")
    print(f'load it: mlflow.sentence_transformers.load_model("models:/{name}@{args.alias}")')
    return 0


if __name__ == "__main__":
    run_command(main)
