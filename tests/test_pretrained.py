"""Where the dream env finds a world model when no checkpoint is given, and what ships."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

import diamond_env
from diamond_env.run import paths
from diamond_env.run.paths import checkpoint_candidates, pretrained, resolve_checkpoint


def _fake_checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}", encoding="utf-8")
    return path


def test_lookup_order_home_then_runs_then_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shipped_root = tmp_path / "shipped"
    shipped = _fake_checkpoint(shipped_root / "Pong" / "world_model")
    monkeypatch.setattr(paths, "PRETRAINED_ROOT", shipped_root)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIAMOND_ENV_HOME", str(tmp_path / "home"))
    home = tmp_path / "home" / "Pong" / "world_model"
    runs = Path("runs") / "Pong" / "world_model"
    assert checkpoint_candidates("Pong") == [home, runs, shipped]
    with caplog.at_level(logging.INFO, logger="diamond_env"):
        assert resolve_checkpoint("Pong", None) == shipped
        assert resolve_checkpoint("Pong", None) == shipped
    assert [r.getMessage() for r in caplog.records].count(
        f"DiamondDream-Pong: world model {shipped}"
    ) == 1  # logged once
    _fake_checkpoint(runs)
    assert resolve_checkpoint("Pong", None) == runs
    _fake_checkpoint(home)
    assert resolve_checkpoint("Pong", None) == home
    monkeypatch.delenv("DIAMOND_ENV_HOME")
    assert checkpoint_candidates("Pong") == [runs, shipped]
    # a game that does not ship keeps the error that names the command
    with pytest.raises(FileNotFoundError, match="diamond-env train-wm --game Qbert --run-dir"):
        resolve_checkpoint("Qbert", None)
    # an explicit checkpoint is never replaced by another
    with pytest.raises(FileNotFoundError, match="at nowhere"):
        resolve_checkpoint("Pong", "nowhere")


def test_pretrained_lists_what_ships(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "PRETRAINED_ROOT", tmp_path)
    assert pretrained() == {}
    _fake_checkpoint(tmp_path / "Pong" / "world_model")
    (tmp_path / "Pong" / "card.json").write_text('{"minutes": 60}', encoding="utf-8")
    found = diamond_env.pretrained()
    assert list(found) == ["Pong"] and found["Pong"].agent is None
    assert found["Pong"].card == {"minutes": 60}
    agent = tmp_path / "Pong" / "agent"
    agent.mkdir()
    (agent / "agent.json").write_text("{}", encoding="utf-8")
    assert pretrained()["Pong"].agent == agent
    shutil.rmtree(tmp_path / "Pong")
    assert pretrained() == {}
