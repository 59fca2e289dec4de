"""What the jobs of one process share: a small keyed cache of things that are expensive to make and never
change between jobs with the same key (the loaded starting model, the read and checked data).

Hydra's basic launcher runs every job of a sequential sweep in one Python process, one after another; the
first job with a key makes the value, later jobs with the same key take it from here. Callers hand each job
its own copy (a job must never see what another one trained or changed). Each cache keeps at most a few
keys, the least recently used one is dropped first, and a key is a digest of everything the value depends
on: two different keys never share a value. Writes nothing to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ProcessCache:
    """At most ``size`` values, by key, least recently used dropped first."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self.entries: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str, make: Callable[[], Any]) -> tuple[Any, bool]:
        """(the value for ``key``, whether it was here already); ``make()`` builds it on a miss."""
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key], True
        value = make()
        self.entries[key] = value
        while len(self.entries) > self.size:
            dropped, _ = self.entries.popitem(last=False)
            log.debug("%s cache: dropped %s", self.name, dropped[:12])
        return value, False

    def discard(self, key: str) -> None:
        """Forget ``key`` (its value no longer holds): the next ``get`` makes it again."""
        self.entries.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()


def digest(parts: Any) -> str:
    """A sha256 hex digest of a JSON-able description of what a value depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def files_signature(path: Path) -> list[tuple[str, int, int]]:
    """(path, size, modification time in ns) of a file, or of every file under a folder: a file rewritten
    or replaced changes it. Cheap (no file is read), for keys of values made from large files."""
    path = path.expanduser().resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists()]


_CONTENT: dict[tuple, str] = {}  # a folder's files_signature -> its content digest, for this process


def folder_digest(folder: Path) -> str:
    """A sha256 of every file's name and bytes under ``folder`` (read once per process while no file changes)."""
    signature = tuple(files_signature(folder))
    if signature not in _CONTENT:
        content = hashlib.sha256()
        for name, _, _ in signature:
            content.update(str(Path(name).relative_to(folder.expanduser().resolve())).encode())
            with open(name, "rb") as stream:
                content.update(hashlib.file_digest(stream, "sha256").digest())
        _CONTENT[signature] = content.hexdigest()
    return _CONTENT[signature]
