"""Keyboard play: key mapping, the session logic, and the pygame window run headless."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from diamond_env.atari import make_atari_env
from diamond_env.cli.play import DreamGame, PlaySession, action_from_keys, play
from diamond_env.config import get_preset
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.world_model.model import WorldModel

pytest.importorskip("pygame")

BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]
FULL = [
    "NOOP",
    "FIRE",
    "UP",
    "RIGHT",
    "LEFT",
    "DOWN",
    "UPRIGHT",
    "UPLEFT",
    "DOWNRIGHT",
    "DOWNLEFT",
    "UPFIRE",
    "RIGHTFIRE",
    "LEFTFIRE",
    "DOWNFIRE",
    "UPRIGHTFIRE",
    "UPLEFTFIRE",
    "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
]


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No window, no sound card; one torch thread (the two test cores are shared)."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("held", "meanings", "expected"),
    [
        (set(), BREAKOUT, "NOOP"),
        ({"space"}, BREAKOUT, "FIRE"),
        ({"right"}, BREAKOUT, "RIGHT"),
        ({"right", "space"}, BREAKOUT, "RIGHT"),  # no RIGHTFIRE in Breakout: movement kept
        ({"left", "right"}, BREAKOUT, "NOOP"),  # opposite arrows cancel
        ({"up"}, BREAKOUT, "NOOP"),  # no UP in Breakout
        ({"up", "right", "space"}, FULL, "UPRIGHTFIRE"),
        ({"down", "left"}, FULL, "DOWNLEFT"),
        ({"up", "down", "space"}, FULL, "FIRE"),
        ({"up", "m", "q"}, FULL, "UP"),  # non-button keys are ignored
    ],
)
def test_action_from_keys(held: set[str], meanings: list[str], expected: str) -> None:
    assert meanings[action_from_keys(held, meanings)] == expected


class CounterGame:
    """Frames filled with the step count; the episode ends after ``length`` steps; FIRE pays 1."""

    game, kind = "Counter", "test"
    action_meanings = BREAKOUT

    def __init__(self, length: int = 3) -> None:
        self.length, self.t, self.horizon = length, 0, 15

    def reset(self) -> np.ndarray:
        self.t = 0
        return np.zeros((64, 64, 3), np.uint8)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        self.t += 1
        return np.full((64, 64, 3), self.t, np.uint8), float(action == 1), self.t >= self.length


class ConstantPolicy:
    def __init__(self, action: int) -> None:
        self.action, self.resets = action, 0

    def reset(self, mask: np.ndarray) -> None:
        self.resets += 1

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.full(len(obs), self.action, dtype=np.int64)


def test_session_plays_records_pauses_and_steps(tmp_path: Path) -> None:
    session = PlaySession(CounterGame(), record=tmp_path)
    for held in ({"space"}, set(), {"right"}):
        assert session.tick(held)
    assert session.returns == [1.0] and session.steps == 3 and session.t == 0  # restarted
    ep = np.load(session.recorded[0])
    np.testing.assert_array_equal(ep["act"], [1, 0, 2])
    np.testing.assert_array_equal(ep["rew"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(ep["end"], [False, False, True])
    np.testing.assert_array_equal(ep["obs"][:, 0, 0, 0], [0, 1, 2, 3])
    assert not ep["agent"].any() and (tmp_path / "episode_000.gif").is_file()
    session.command("pause")
    assert not session.tick({"space"}) and session.steps == 3
    session.command("step")
    assert session.tick({"space"}) and not session.tick({"space"}) and session.steps == 4
    session.command("pause")
    assert session.tick(set()) and session.steps == 5 and session.ret == 1.0
    session.command("reset")  # a cut episode is recorded, but its return is not a finished game
    assert session.returns == [1.0] and len(session.recorded) == 2 and session.t == 0
    np.testing.assert_array_equal(np.load(session.recorded[1])["act"], [1, 0])
    session.command("quit")
    assert session.quit and not session.tick(set())


def test_session_horizon_ladder_and_agent_control() -> None:
    game = CounterGame(length=100)
    session = PlaySession(game)
    for command, horizon in (("horizon+", 20), ("horizon-", 15), ("horizon-", 10)):
        session.command(command)
        assert game.horizon == horizon
    game.horizon = 7  # off the ladder: to the neighbouring rungs
    session.command("horizon+")
    assert game.horizon == 10
    game.horizon = 5
    session.command("horizon-")
    assert game.horizon == 5
    session.command("control")  # no agent: stays human
    assert session.human
    policy = ConstantPolicy(3)
    session = PlaySession(CounterGame(length=100), policy=policy)
    assert session.human and policy.resets == 1
    session.tick({"space"})
    session.command("control")
    session.tick({"space"})
    assert session.episode.act == [1, 3] and session.episode.agent == [False, True]


def test_dream_game_horizon_reaches_the_simulator(tiny_checkpoint: Path) -> None:
    game = DreamGame(WorldModel.load(tiny_checkpoint), horizon=5, seed=0)
    session = PlaySession(game)
    session.command("horizon+")
    assert game.sim.horizon == 10


def _agent(root: Path) -> Path:
    torch.manual_seed(0)
    ActorCritic(get_preset("tiny").actor_critic, 4).save(root)
    (root / "agent.json").write_text(json.dumps({"kind": "actor_critic", "game": "Breakout"}))
    return root


def _episodes(directory: Path) -> list[dict[str, np.ndarray]]:
    return [dict(np.load(p)) for p in sorted(directory.glob("episode_*.npz"))]


def test_play_the_dream_headless(tiny_checkpoint: Path, tmp_path: Path) -> None:
    script = [
        (0, "down", "right"),
        (2, "up", "right"),
        (3, "down", "p"),
        (5, "down", "."),
        (6, "down", "p"),
    ]
    result = play(
        tiny_checkpoint, fps=0, max_frames=8, horizon=5, seed=0, record=tmp_path, script=script
    )
    # frames 0-2 step, 3-4 paused, 5 single step, 6-7 step again
    assert (result.frames, result.steps) == (8, 6)
    episodes = _episodes(tmp_path)
    assert [str(p.name) for p in result.recorded] == [
        f"episode_{k:03d}.npz" for k in range(len(episodes))
    ]
    acts = np.concatenate([ep["act"] for ep in episodes])
    np.testing.assert_array_equal(acts, [2, 2, 0, 0, 0, 0])  # RIGHT held for frames 0 and 1
    bank_last = WorldModel.load(tiny_checkpoint).contexts.obs[:, -1].numpy()
    for ep in episodes:
        assert len(ep["obs"]) == len(ep["act"]) + 1 and ep["obs"].dtype == np.uint8
        assert (bank_last == ep["obs"][0]).all(axis=(1, 2, 3)).any()  # starts on a real context
        assert ep["end"][:-1].sum() == 0
    assert len(result.returns) == sum(bool(ep["end"][-1]) for ep in episodes)


def test_play_the_real_game_with_an_agent(tmp_path: Path) -> None:
    agent = _agent(tmp_path / "agent")
    script = [(3, "down", "m"), (3, "down", "space"), (5, "down", "escape")]
    result = play(
        None,
        real=True,
        game="Breakout",
        agent=agent,
        fps=0,
        max_frames=50,
        record=tmp_path / "rec",
        script=script,
    )
    assert (result.frames, result.steps, result.returns) == (5, 5, [])  # Esc before frame 5 draws
    (ep,) = _episodes(tmp_path / "rec")
    np.testing.assert_array_equal(ep["agent"], [True, True, True, False, False])
    np.testing.assert_array_equal(ep["act"][3:], [1, 1])  # FIRE held by the human
    env = make_atari_env("Breakout", 1, train=False)
    first, _ = env.reset(seed=0)
    env.close()
    np.testing.assert_array_equal(ep["obs"][0], first[0])


def test_play_refuses_bad_arguments(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint: expected a world-model checkpoint"):
        play(None)
    with pytest.raises(ValueError, match="script: expected"):
        play(tiny_checkpoint, script=[(0, "press", "m")])
    with pytest.raises(ValueError, match="scale, fps, max_frames"):
        play(tiny_checkpoint, max_frames=0)
