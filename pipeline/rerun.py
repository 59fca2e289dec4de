"""``python -m pipeline.rerun RUN_ID [--tracking-uri URI] [--tolerance T] [key=value ...]``: replay a run.

The job is rebuilt from the run's logged ``config.yaml`` artifact (the resolved config it ran with,
not today's defaults); the only changes are the given ``key=value`` overrides, merged with OmegaConf
(unknown keys rejected). It runs as a new MLflow run in the original's experiment, tagged
``pipeline.rerun_of=RUN_ID``, and every final metric of the original is compared with the replay's:
exit 0 when all match (exactly by default, as on CPU with the same seed; ``--tolerance`` for GPU
runs), 1 when one differs, 2 on a user mistake. Before replaying it lists each package whose installed
version differs from the original's, and the Python version when it differs (its
``environment/installed.txt``, or the ``version.*`` tags of runs logged before it existed);
``--strict-versions`` refuses to replay on any. Warns when the git commit, uncommitted changes or data
fingerprint differ from the original's tags.
The replay scores its starting model itself (``baseline_reuse=false``): its ``baseline/`` metrics are
compared with the original's too, never copied from the store.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

import pipeline.tracking.environment as environment
from pipeline import PipelineError, tracking
from pipeline.cli import add_tracking_uri, parse_args, reported, run_command, tracking_uri
from pipeline.tracking.scrub import MAX_RUN_NAME_LENGTH

log = logging.getLogger(__name__)

# Metrics that measure time or throughput: never expected to replay.
TIMING = ("job_seconds", "startup_seconds", "runtime", "per_second", "total_flos")


def differences(original: dict[str, str], current: dict[str, str]) -> list[str]:
    """Warnings: what of code and data differs between the original run and now."""
    notes = []
    if original.get("git.commit") and current.get("git.commit") and original["git.commit"] != current["git.commit"]:
        notes.append(f"git commit differs: original {original['git.commit'][:12]}, now {current['git.commit'][:12]}")
    if original.get("git.dirty") == "true":
        notes.append("the original ran with uncommitted changes: its git.patch artifact holds them")
    if current.get("git.dirty") == "true":
        notes.append("this checkout has uncommitted changes")
    if (
        original.get("data.fingerprint")
        and current.get("data.fingerprint")
        and original["data.fingerprint"] != current["data.fingerprint"]
    ):
        notes.append(
            f"data fingerprint differs: original {original['data.fingerprint']}, now {current['data.fingerprint']}"
        )
    return notes


def version_differences(client, run_id: str, tags: dict[str, str]) -> list[tuple[str, str, str]]:
    """(package, logged, installed) for each package, and Python, whose version here differs from the run's."""
    now = environment.current()
    try:
        logged = environment.parse_pins(tracking.artifact_text(client, run_id, "environment/installed.txt"))
    except LookupError:  # logged before runs recorded every package: the version.* tags
        logged = {environment.canonical(k[len("version.") :]): v for k, v in tags.items() if k.startswith("version.")}
        return environment.differing(logged, now, both_ways=False)
    if "python" not in logged:  # installed.txt before it held the Python version: the version.python tag
        logged["python"] = tags.get("version.python", now["python"])
    return environment.differing(logged, now)


def compare_metrics(
    original: dict[str, float], replay: dict[str, float], tolerance: float
) -> tuple[list[tuple[str, float, float | None, bool]], bool]:
    """(name, original, replay, equal) for every non-timing metric of the original; all equal?"""
    rows = []
    for name in sorted(original):
        if any(word in name for word in TIMING):
            continue
        old, new = original[name], replay.get(name)
        if new is None:
            same = False
        elif tolerance > 0:
            same = math.isclose(old, new, rel_tol=0.0, abs_tol=tolerance) or (math.isnan(old) and math.isnan(new))
        else:
            same = old == new or (math.isnan(old) and math.isnan(new))
        rows.append((name, old, new, same))
    return rows, all(row[3] for row in rows) and bool(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.rerun", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_id", metavar="RUN_ID", help="the MLflow run to replay")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="changes to the logged config (OmegaConf dot keys)"
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--strict-versions",
        action="store_true",
        help="refuse to replay when any installed package version differs from the original run's",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest absolute difference accepted per metric (default 0: exact)",
    )
    args = parse_args(parser, argv, intermixed=True)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    with reported():
        return _rerun(args)


def _rerun(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from pipeline.job import JobRequest
    from pipeline.logged_config import read_logged
    from pipeline.start import start_job

    uri = tracking_uri(args)
    tracking.check_uri(uri)
    client = tracking.client(uri)
    try:
        original = client.get_run(args.run_id)
    except MlflowException:
        raise PipelineError(f"run {args.run_id} is not in {uri}: check the run id and --tracking-uri.") from None
    if original.info.status != "FINISHED":
        log.warning("the original run ended %s: its metrics may be partial", original.info.status)
    cfg = read_logged(tracking.logged_file(client, args.run_id), f"config.yaml of run {args.run_id}")
    cfg = tracking.with_overrides(cfg, list(args.overrides), args.run_id)
    # The replay goes where the original is, whatever store its config named.
    experiment = client.get_experiment(original.info.experiment_id)
    cfg.tracking.uri = uri
    cfg.tracking.experiment_name = experiment.name
    # The replay scores the starting model itself: a copied baseline would match the original by construction.
    OmegaConf.update(cfg, "baseline_reuse", False, force_add=True)
    tags = original.data.tags
    versions = version_differences(client, args.run_id, tags)
    _report_versions(versions, args.strict_versions)
    logged_overrides = tracking.logged_list(client, args.run_id, "overrides.yaml")
    choices = {"experiment": tags["pipeline.experiment"]} if tags.get("pipeline.experiment", "none") != "none" else {}
    name = f"rerun of {tags.get('mlflow.runName', args.run_id)}" + (
        f" with {' '.join(args.overrides)}" if args.overrides else ""
    )
    with tempfile.TemporaryDirectory(prefix="rerun-") as folder:
        request = JobRequest(
            overrides=[*logged_overrides, *args.overrides],
            choices=choices,
            tags={"pipeline.rerun_of": args.run_id},
            run_name=name[:MAX_RUN_NAME_LENGTH],
        )
        result = start_job(cfg, Path(folder), request)
    replay = client.get_run(result.run_id)
    for note in differences(tags, replay.data.tags):  # the replay's run recorded today's code, packages and data
        print(f"warning: {note}", file=sys.stderr)
    rows, same = compare_metrics(original.data.metrics, replay.data.metrics, args.tolerance)
    width = max([len(r[0]) for r in rows] + [6])
    print(
        f"\nrerun {result.run_id} of {args.run_id} ({'exact' if args.tolerance == 0 else f'tolerance {args.tolerance:g}'}):"
    )
    print(f"  {'metric':<{width}}  {'original':>22}  {'rerun':>22}  ")
    for metric, old, new, equal in rows:
        shown = "missing" if new is None else repr(new)
        print(f"  {metric:<{width}}  {old!r:>22}  {shown:>22}  {'same' if equal else 'DIFFERENT'}")
    if not rows:
        print("  the original run has no metrics to compare")
    if same:
        print("metrics match")
    elif versions:
        names = ", ".join(f"{name} {old} -> {new}" for name, old, new in versions)
        print(f"metrics DIFFER; the installed packages differ from the original's ({len(versions)}): {names}")
    else:
        print("metrics DIFFER (the installed package versions are the original's)")
    return 0 if same else 1


def _report_versions(rows: list[tuple[str, str, str]], strict: bool) -> None:
    """Print the packages that differ from the original run's, before replaying; refuse with ``strict``."""
    if not rows:
        return
    if strict:
        names = ", ".join(f"{name} {old} -> {new}" for name, old, new in rows)
        raise PipelineError(
            f"--strict-versions: {len(rows)} installed packages differ from the original run's: {names}; "
            "install the run's environment/lock.txt, or replay without --strict-versions."
        )
    print(f"{len(rows)} installed packages differ from the original run's:", file=sys.stderr)
    print(environment.format_rows(rows, "logged"), file=sys.stderr)


if __name__ == "__main__":
    run_command(main)
