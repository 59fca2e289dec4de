"""The user's own folder under the system's temporary folder, for what outlives a job and is read back as
this user's own: models built from ``architecture`` (``stages.build``), the packing check's results
(``runtime.packing``).

``$TMPDIR/pipeline-<uid>/``, made readable and writable by its owner only. The names inside are
predictable (content digests), so in a temporary folder shared with other users a folder that someone
else made, or may write into, could hand this user planted weights or a planted verdict: such a folder
is refused, with how to fix it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from pipeline import PipelineError


def private_temp(name: str) -> Path:
    """``$TMPDIR/pipeline-<uid>/<name>`` (the name's folder is not made here)."""
    root = Path(tempfile.gettempdir()) / f"pipeline-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PipelineError(
            f"{root} is not a folder of this user's alone (owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)}): "
            "what another user wrote there would be read as this user's models and checks; remove it, "
            "or set TMPDIR to a folder of your own."
        )
    return root / name
