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
from collections.abc import Callable, Mapping
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


def content_digest(path: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 of a file's bytes, or of every file's name (relative) and bytes under a folder but those whose
    name ends with one of ``skip``, read in blocks (``hashlib.file_digest``): a rewrite that keeps the size
    and modification time still changes it (2.3 ms per MB measured: a third of pandas.read_csv)."""
    path = path.expanduser().resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.endswith(skip)) if path.is_dir() else [path]
    content = hashlib.sha256()
    for file in files:
        content.update(str(file.relative_to(path)).encode() if file != path else b"")
        with open(file, "rb") as stream:
            content.update(hashlib.file_digest(stream, "sha256").digest())
    return content.hexdigest()


PACKAGE = Path(__file__).resolve().parents[1]  # pipeline/


def source_digest(*files: str, package: Path = PACKAGE) -> str:
    """sha256 of the named source files of ``pipeline`` (paths relative to the package): a fix in the code
    that makes a value changes the key of every value it made before."""
    return digest({name: content_digest(package / name) for name in files})


def not_keyed(path: str, declared: Mapping[str, str], kept: tuple[str, ...] = ()) -> bool:
    """Whether the config leaf ``path`` is declared not to change a cache's value: it, or a node above it,
    is in ``declared`` (path -> reason), and neither it nor a node above it is in ``kept``."""
    above = [".".join(path.split(".")[:i]) for i in range(1, path.count(".") + 2)]
    return any(node in declared for node in above) and not any(node in kept for node in above)


def keyed_leaves(leaves: Mapping[str, Any], declared: Mapping[str, str], kept: tuple[str, ...] = ()) -> dict:
    """The job's config leaves (``JobSpec.leaves``) a cache key holds: every one, but those declared not to
    change the cached value. A leaf added to the config later is keyed until someone declares otherwise."""
    return {path: value for path, value in leaves.items() if not not_keyed(path, declared, kept)}


def tf32_settings() -> dict[str, str]:
    """Torch's float32 matmul / convolution precision as set in this process (``hardware.tf32``)."""
    import torch

    # torch's fp32_precision API (reading the older allow_tf32 flags after it is used raises)
    backends = {"all": torch.backends, "matmul": torch.backends.cuda.matmul, "cudnn": torch.backends.cudnn}
    return {name: str(getattr(backend, "fp32_precision", None)) for name, backend in backends.items()}
