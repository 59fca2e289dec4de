"""The installed packages against the committed lock (``requirements-lock.txt``) or a run's record.

``python -m pipeline.env`` checks this environment against the lock (``make setup``, ``make test-latest``).
Every run records what ran (:func:`snapshot`): ``environment/installed.txt``, every installed package
and the Python version as ``name==version`` (tag ``environment.digest``), the lock beside it
(``environment/lock.txt``, tag ``environment.lock_digest``) and whether the two agree (tag
``environment.matches_lock``: torch, installed apart from the lock, is not part of that check; its
version is in ``installed.txt``). ``pipeline.rerun`` compares ``installed.txt`` with today's (:func:`differing`).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
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
        fields = dist.metadata  # parsed from the file on each access: read once for both fields
        name = fields["Name"]
        if name and canonical(name) not in OWN_PACKAGES:
            found.setdefault(canonical(name), fields["Version"])
    return found


def python_version() -> str:
    """This interpreter's version (``3.11.7``): a line ``python==3.11.7`` of ``environment/installed.txt``."""
    return sys.version.split()[0]


def current() -> dict[str, str]:
    """What runs here: every installed package and ``python`` -> its version."""
    return {**installed(), "python": python_version()}


def installed_text(versions: dict[str, str] | None = None) -> str:
    """``name==version`` lines, sorted: what a run logs as ``environment/installed.txt`` (:func:`current`)."""
    versions = current() if versions is None else versions
    return "".join(f"{name}=={version}\n" for name, version in sorted(versions.items()))


@dataclass(frozen=True)
class Snapshot:
    """What a run records of its environment: the artifacts' texts and the tags."""

    installed: str  # environment/installed.txt
    lock: str | None  # environment/lock.txt (None: installed without the lock)
    tags: dict[str, str]


def snapshot(lock_path: Path = LOCK_FILE) -> Snapshot:
    """This environment as a run records it: ``environment.digest`` of what is installed,
    ``environment.lock_digest`` of the lock, and ``environment.matches_lock``: ``true`` when every package
    the lock pins is installed at that version (torch is not in the lock: see the module's docstring)."""
    versions = current()
    text, lock = installed_text(versions), lock_text(lock_path)
    matches = lock is not None and not differing(parse_pins(lock), versions, both_ways=False)
    tags = {
        "environment.digest": digest(text),
        "environment.lock_digest": digest(lock) if lock is not None else "none",
        "environment.matches_lock": str(matches).lower(),
    }
    return Snapshot(text, lock, tags)


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
    """A short content digest: of ``installed.txt`` (tag ``environment.digest``) or of the lock
    (``environment.lock_digest``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
