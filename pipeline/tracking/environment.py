"""The installed packages against the committed lock (``requirements-lock.txt``) or a run's record.

``python -m pipeline.env`` checks this environment against the lock (``make setup``, ``make test-latest``).
Every run logs the lock it was installed from (``environment/lock.txt``, tag ``environment.lock_digest``)
and what was installed (``environment/installed.txt``); ``pipeline.rerun`` compares the latter with
today's packages (:func:`differing`).
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path

from pipeline import REPO_ROOT

LOCK_FILE = REPO_ROOT / "requirements-lock.txt"
# The project itself (an editable install) is versioned by git, not by the lock.
OWN_PACKAGES = frozenset({"pipeline"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """Package names as pip compares them (PEP 503): ``Sentence_Transformers`` -> ``sentence-transformers``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str) -> dict[str, str]:
    """``name==version`` lines (a lock, ``pip freeze``, ``environment/installed.txt``) -> {name: version}."""
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    """Every distribution importable here -> its version (the project itself left out)."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in OWN_PACKAGES:
            found.setdefault(canonical(name), dist.version)
    return found


def installed_text(versions: dict[str, str] | None = None) -> str:
    """``name==version`` lines, sorted: what a run logs as ``environment/installed.txt``."""
    versions = installed() if versions is None else versions
    return "".join(f"{name}=={version}\n" for name, version in sorted(versions.items()))


def differing(expected: dict[str, str], actual: dict[str, str], both_ways: bool = True) -> list[tuple[str, str, str]]:
    """(name, expected, actual) for each package whose versions differ; ``missing`` where one side has
    none. ``both_ways=False`` looks only at the expected names (a lock lists a subset of what is installed)."""
    names = set(expected) | set(actual) if both_ways else set(expected)
    rows = []
    for name in sorted(names - OWN_PACKAGES):
        want, have = expected.get(name, "missing"), actual.get(name, "missing")
        if want != have:
            rows.append((name, want, have))
    return rows


def format_rows(rows: list[tuple[str, str, str]], expected: str, actual: str = "installed") -> str:
    """An aligned table, one package a line."""
    width = max([len(name) for name, _, _ in rows] + [7])
    lines = [f"  {'package':<{width}}  {expected:>14}  {actual:>14}"]
    lines += [f"  {name:<{width}}  {want:>14}  {have:>14}" for name, want, have in rows]
    return "\n".join(lines)


def lock_text(path: Path = LOCK_FILE) -> str | None:
    """The lock's text, or None where the project was installed without one (a wheel, a copy)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def digest(text: str) -> str:
    """A short content digest of a lock: the ``environment.lock_digest`` tag."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
