"""Collection from the real game into a dataset, including a SIGKILL mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diamond_env.atari import ATARI_SETTINGS, make_atari_env
from diamond_env.cli.main import main
from diamond_env.data import EpisodeDataset
from diamond_env.data.collect import Collector, RandomPolicy


def _dataset(root: Path, game: str = "Breakout") -> EpisodeDataset:
    env = make_atari_env(game)
    return EpisodeDataset.open_or_create(
        root,
        game=env.game,
        settings=ATARI_SETTINGS,
        num_actions=int(env.single_action_space.n),
        action_meanings=env.get_action_meanings(),
    )


def test_collect_steps_and_reload_identically(tmp_path: Path) -> None:
    env = make_atari_env("Breakout", 2)
    ds = _dataset(tmp_path / "d")
    collector = Collector(env, ds, seed=0, flush_every=50)
    stats = collector.collect(RandomPolicy(4, seed=0), steps=300, progress=False)
    assert stats.steps == 300 and ds.num_steps == 300
    again = EpisodeDataset.open(tmp_path / "d")
    a, b = ds.load_all(), again.load_all()
    for name in ("obs", "act", "rew", "term", "trunc", "life_loss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert sum(again.reward_counts.values()) == 300
    # Every finished episode is one real game: it ends with a game over, and life losses inside.
    for e in range(again.num_episodes):
        ep = again.load_episode(e)
        assert ep.obs.shape == (ep.num_steps + 1, 64, 64, 3)
        if again.is_finished(e):
            assert ep.term[-1] or ep.trunc[-1]
            assert ep.life_loss.sum() >= 1


def test_collect_continues_games_across_calls(tmp_path: Path) -> None:
    env = make_atari_env("Breakout", 1)
    ds = _dataset(tmp_path / "d")
    collector = Collector(env, ds, seed=1)
    collector.collect(RandomPolicy(4, seed=1), steps=40, progress=False)
    collector.collect(RandomPolicy(4, seed=2), steps=40, progress=False)
    assert ds.num_steps == 80
    assert ds.num_episodes == 1, "a game in progress continues as the same episode"
    ep = ds.load_episode(0)
    assert ep.num_steps == 80 and not ds.is_finished(0)


def test_collect_episodes_and_epsilon(tmp_path: Path) -> None:
    class Fire:
        def __call__(self, obs: np.ndarray) -> np.ndarray:
            return np.ones(len(obs), dtype=np.int64)

        def reset(self, mask: np.ndarray) -> None:
            pass

    env = make_atari_env("Breakout", 1)
    ds = _dataset(tmp_path / "d")
    stats = Collector(env, ds, seed=0).collect(Fire(), episodes=1, epsilon=0.5, progress=False)
    assert stats.games_finished == 1
    act = ds.load_all().act
    assert 0.55 < (act == 1).mean() < 0.95  # half random (a quarter of those FIRE too)


def test_bad_collect_arguments(tmp_path: Path) -> None:
    env = make_atari_env("Breakout", 1)
    collector = Collector(env, _dataset(tmp_path / "d"), seed=0)
    with pytest.raises(ValueError, match="steps"):
        collector.collect(RandomPolicy(4), steps=0)
    with pytest.raises(ValueError, match="epsilon"):
        collector.collect(RandomPolicy(4), steps=5, epsilon=2.0)
    with pytest.raises(ValueError, match="exactly one"):
        collector.collect(RandomPolicy(4))


def test_cli_refuses_another_games_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "d")
    assert main(["collect", "--game", "Pong", "--steps", "20", "--out", out, "--quiet"]) == 0
    assert main(["collect", "--game", "Breakout", "--steps", "40", "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Pong" in err and "Breakout" in err
    assert main(["collect", "--game", "Breakoutt", "--steps", "40", "--out", out]) == 2


def test_sigkill_mid_collection_leaves_consistent_dataset(tmp_path: Path) -> None:
    out = tmp_path / "d"
    cmd = [
        sys.executable,
        "-m",
        "diamond_env",
        "collect",
        "--game",
        "Breakout",
        "--steps",
        "200000",
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = out / "dataset.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if index.exists() and EpisodeDataset.open(out).num_steps > 0:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ds = EpisodeDataset.open(out)
    held = ds.num_steps
    assert 0 < held < 200000
    flat = ds.load_all()  # every part passes its checksum
    assert len(flat.act) == held
    target = held + 150
    assert (
        main(
            ["collect", "--game", "Breakout", "--steps", str(target), "--out", str(out), "--quiet"]
        )
        == 0
    )
    assert EpisodeDataset.open(out).num_steps >= target


def _fire_agent(root: Path, game: str = "Breakout", num_actions: int = 4) -> Path:
    """An actor-critic agent directory whose policy presses FIRE (action 1) whatever it sees."""
    import json

    import torch

    from diamond_env.config import ActorCriticConfig
    from diamond_env.models.actor_critic import ActorCritic

    ac = ActorCritic(ActorCriticConfig(channels=(8, 8, 16, 16), lstm_dim=32), num_actions)
    with torch.no_grad():
        ac.policy_head.weight.zero_()
        ac.policy_head.bias.fill_(-50.0)
        ac.policy_head.bias[1] = 50.0
    ac.save(root / "actor_critic")
    (root / "agent.json").write_text(json.dumps({"kind": "actor_critic", "game": game}))
    return root


def test_collect_with_an_agent_appends_its_play_mixed_with_random_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "d"
    assert (
        main(["collect", "--game", "Breakout", "--steps", "100", "--out", str(out), "--quiet"]) == 0
    )
    before = EpisodeDataset.open(out).load_all()
    agent = _fire_agent(tmp_path / "agent")
    assert (
        main(
            [
                "collect",
                "--game",
                "Breakout",
                "--steps",
                "600",
                "--out",
                str(out),
                "--agent",
                str(agent),
                "--epsilon",
                "0.25",
                "--quiet",
            ]
        )
        == 0
    )
    after = EpisodeDataset.open(out).load_all()
    assert after.num_steps == 600
    np.testing.assert_array_equal(after.act[:100], before.act)  # the random play is kept
    agent_acts = after.act[100:]
    fire = float((agent_acts == 1).mean())
    # FIRE from the agent on 75 % of the steps, plus a quarter of the random 25 %.
    assert 0.75 < fire < 0.88, fire
    assert set(np.unique(agent_acts)) == {0, 1, 2, 3}  # every action still appears
    assert (
        main(
            [
                "collect",
                "--game",
                "Breakout",
                "--steps",
                "700",
                "--out",
                str(out),
                "--agent",
                str(agent),
                "--epsilon",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert (EpisodeDataset.open(out).load_all().act[600:] == 1).all()


def test_collect_refuses_an_agent_of_another_game_or_action_count(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "d"
    for agent, words in (
        (_fire_agent(tmp_path / "pong", game="Pong"), "trained on 'Pong'"),
        (_fire_agent(tmp_path / "six", num_actions=6), "6 actions, but Breakout has 4"),
    ):
        code = main(
            [
                "collect",
                "--game",
                "Breakout",
                "--steps",
                "50",
                "--out",
                str(out),
                "--agent",
                str(agent),
                "--quiet",
            ]
        )
        assert code == 2
        assert words in capsys.readouterr().err
    assert not out.exists()  # refused before the dataset was created
    with pytest.raises(SystemExit):
        main(
            [
                "collect",
                "--game",
                "Breakout",
                "--steps",
                "50",
                "--out",
                str(out),
                "--epsilon",
                "1.5",
            ]
        )
