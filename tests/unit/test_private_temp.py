"""What outlives a job in the temporary folder lives in the user's own folder there, and one that
another user made or may write into is refused."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest
from omegaconf import OmegaConf

from pipeline import PipelineError
from pipeline.runtime import packing
from pipeline.runtime.private_temp import private_temp
from pipeline.stages import build


def test_the_folder_is_the_users_alone_and_one_others_could_write_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = tmp_path / f"pipeline-{os.getuid()}"
    assert private_temp("models") == root / "models"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    # the built models and the packing check's results are kept there
    model = OmegaConf.create({"architecture": {"model_type": "bert", "hidden_size": 32}, "tokenizer": "x"})
    assert build.architecture_folder(model, 1).parent == root / "models"
    assert packing.verdicts() == root / "packing"
    root.chmod(0o777)  # another user could plant a model or a verdict under its predictable names
    with pytest.raises(PipelineError, match=r"is not a folder of this user's alone .*mode drwxrwxrwx.*set TMPDIR"):
        private_temp("models")
    root.chmod(0o700)
    if os.getuid() == 0:  # only root can give a folder away
        os.chown(root, os.getuid() + 12345, -1)
        with pytest.raises(PipelineError, match=f"owner uid {os.getuid() + 12345}"):
            packing.verdicts()
