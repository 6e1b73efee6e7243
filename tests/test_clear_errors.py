"""Bad input gets one clear line (CLI exit 2), not a torch traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diamond_env.checkpoint import resolve_device
from diamond_env.cli import main


def test_resolve_device_says_why() -> None:
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type == "cpu"
    with pytest.raises(ValueError, match="not a torch device name"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="CUDA is not available here"):
            resolve_device("cuda:1")


@pytest.mark.parametrize("device", ["nonsense", "cuda:99"])
def test_commands_refuse_a_device_in_one_line(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["train-wm", "--steps", "1", "--run-dir", str(tmp_path / "wm")],
                 ["train", "--run-dir", str(tmp_path / "full")],
                 ["train-agent", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "a")]):  # fmt: skip
        assert main([*argv, "--device", device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "device:" in err[0], err
    assert not (tmp_path / "wm" / "dataset").exists()  # refused before collecting anything
