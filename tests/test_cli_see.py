"""The see-and-play commands through ``diamond-env``: video, report and play (headless)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from diamond_env.cli.main import main
from diamond_env.data.dataset import EpisodeDataset


def test_video_command(
    tiny_checkpoint: Path, breakout_dataset: EpisodeDataset, tmp_path: Path
) -> None:
    out = tmp_path / "clip.gif"
    args = [
        "video",
        "--checkpoint",
        str(tiny_checkpoint),
        "--dataset",
        str(breakout_dataset.root),
        "--out",
        str(out),
        "--horizon",
        "6",
        "--rollouts",
        "2",
        "--scale",
        "1",
    ]
    assert main(args) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 4 + 6 and gif.size[0] >= 2 * 64  # context + horizon


def test_play_command_headless(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    assert (
        main(
            [
                "play",
                "--checkpoint",
                str(tiny_checkpoint),
                "--max-frames",
                "5",
                "--horizon",
                "3",
                "--fps",
                "1000",
                "--record",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "keys:" in out and "steps" in out


def test_report_command_needs_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--run-dir", str(tmp_path / "none")]) == 2
    assert "diamond-env report: error" in capsys.readouterr().err
