"""The real-Atari constructor: settings of docs/method.md §1, checked step by step against a plain pipeline."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest

from diamond_env.atari import GAMES, canonical_game, make_atari_env


class PlainAtari:
    """Reference: raw ALE at frameskip 1, with docs/method.md §1 preprocessing written out by hand."""

    def __init__(self, game: str) -> None:
        self.env = gym.make(
            f"ALE/{game}-v5",
            frameskip=1,
            repeat_action_probability=0.0,
            full_action_space=False,
            max_num_frames_per_episode=108_000,
        )
        self.ale = self.env.unwrapped.ale

    def _frame(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cv2.resize(np.maximum(a, b), (64, 64), interpolation=cv2.INTER_AREA)

    def reset(self, seed: int) -> np.ndarray:
        self.env.reset(seed=seed)
        for _ in range(self.env.unwrapped.np_random.integers(1, 31)):
            _, _, term, trunc, _ = self.env.step(0)
            if term or trunc:
                self.env.reset(seed=seed)
        self.lives = self.ale.lives()
        return self._frame(self.ale.getScreenRGB(), np.zeros((210, 160, 3), np.uint8))

    def step(self, action: int) -> tuple[np.ndarray | None, float, bool, bool, bool]:
        total, screens = 0.0, []
        term = trunc = False
        for _ in range(4):
            _, rew, term, trunc, info = self.env.step(action)
            total += rew
            if term or trunc:
                break
            screens.append(self.ale.getScreenRGB())
        lost = info["lives"] < self.lives and not term
        self.lives = info["lives"]
        frame = self._frame(screens[-1], screens[-2]) if len(screens) == 4 else None
        return frame, total, term, trunc, lost


def test_frames_rewards_and_ends_match_plain_pipeline() -> None:
    env = make_atari_env("Breakout", 1, train=True)
    ref = PlainAtari("Breakout")
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs[0], ref.reset(seed=3))
    rng = np.random.default_rng(0)
    life_losses = 0
    for t in range(400):
        a = int(rng.integers(0, 4))
        obs, rew, term, trunc, info = env.step(np.array([a]))
        frame, ref_rew, ref_term, ref_trunc, ref_lost = ref.step(a)
        assert rew[0] == ref_rew, t
        assert info["life_loss"][0] == ref_lost, t
        assert term[0] == (ref_term or ref_lost), t
        assert info["game_over"][0] == (ref_term or ref_trunc), t
        if info["game_over"][0]:
            break
        np.testing.assert_array_equal(obs[0], frame, err_msg=f"step {t}")
        if ref_lost:
            # The learner sees a termination but the emulator plays on: the obs continues the game.
            np.testing.assert_array_equal(info["final_obs"][0], obs[0])
            life_losses += 1
    assert life_losses >= 1


def test_spaces_dtypes_and_raw_rewards() -> None:
    env = make_atari_env("Breakout", 2, seed=0)
    assert env.single_observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.single_action_space == gym.spaces.Discrete(4)
    assert env.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, rew, term, trunc, info = env.step(np.array([1, 1]))
    assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
    assert rew.dtype == np.float32 and term.dtype == bool and trunc.dtype == bool
    assert obs in env.observation_space


def test_seeded_reset_repeats_and_seeds_differ_per_env() -> None:
    a = make_atari_env("Pong", 2)
    b = make_atari_env("Pong", 2)
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    np.testing.assert_array_equal(oa, ob)
    for _ in range(20):
        acts = np.array([2, 3])
        np.testing.assert_array_equal(a.step(acts)[0], b.step(acts)[0])


def test_eval_env_plays_full_games() -> None:
    env = make_atari_env("Breakout", 1, train=False, seed=1)
    rng = np.random.default_rng(1)
    lost, ended = 0, False
    for _ in range(3000):
        _, _, term, trunc, info = env.step(rng.integers(0, 4, size=1))
        lost += int(info["life_loss"][0])
        if term[0] or trunc[0]:
            assert info["game_over"][0], "a test env ends only with the game"
            ended = True
            break
    assert ended and lost >= 1


@pytest.mark.parametrize("name", ["breakout", "ms_pacman", "MSPACMAN", "UpNDown"])
def test_game_names_are_normalised(name: str) -> None:
    assert canonical_game(name) in GAMES


def test_unknown_game_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Breakout"):
        make_atari_env("Breakoutt")


@pytest.mark.parametrize(
    "actions, err",
    [(np.array([0, 1]), ValueError), (np.array([4]), ValueError), (np.array([0.5]), TypeError)],
)
def test_bad_actions_are_refused(actions: np.ndarray, err: type[Exception]) -> None:
    env = make_atari_env("Breakout", 1, seed=0)
    with pytest.raises(err, match="actions"):
        env.step(actions)
    env.step(np.array([0]))  # still usable


def test_all_atari100k_games_build() -> None:
    for game in GAMES:
        env = make_atari_env(game, 1, seed=0)
        obs, *_ = env.step(np.zeros(1, dtype=np.int64))
        assert obs.shape == (1, 64, 64, 3)
        env.close()
