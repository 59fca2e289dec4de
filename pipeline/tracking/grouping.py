"""Which runs are the same configuration: the one rule behind the sweep's leaderboard, ``compare --group-by``
and ``promote --parent``. Reads and writes nothing.

Runs are the same configuration when every param of their logged config is equal except the folded
key (``seed``) and its copies (a param equal to the key in every run, such as ``training.seed: ${seed}``).
Config groups (``loss=gist``) and experiments (``experiment=...``) are in the params through what they
compose (``loss._target_``, ``tracking.experiment_name``, ...): two runs of different groups are two
configurations even when no swept *param* tells them apart. A param one run logged and another did not
is a difference too.
"""

from __future__ import annotations

from collections.abc import Mapping

FOLDED = "seed"

Configuration = tuple[tuple[str, str | None], ...]


def folded_keys(runs: list[Mapping[str, str | None]], key: str = FOLDED) -> set[str]:
    """``key`` and the params equal to it in every run (its copies)."""
    names = {name for run in runs for name in run}
    return {key} | {n for n in names if runs and all(_text(run.get(n)) == _text(run.get(key)) for run in runs)}


def configurations(runs: list[Mapping[str, str | None]], key: str = FOLDED) -> list[Configuration]:
    """Each run's configuration (its params less ``key`` and its copies), in the order given: equal
    configurations, equal tuples."""
    folded = folded_keys(runs, key)
    names = sorted({name for run in runs for name in run} - folded)
    return [tuple((n, _text(run.get(n))) for n in names) for run in runs]


def differing(configs: list[Configuration]) -> list[str]:
    """The params whose values differ between ``configs``: what tells the configurations apart."""
    if not configs:
        return []
    return [name for i, (name, _) in enumerate(configs[0]) if len({c[i][1] for c in configs}) > 1]


def _text(value) -> str | None:
    """A param's value as text; missing (None, NaN in a pandas frame) as None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)
