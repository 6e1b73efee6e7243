"""The one constructor of the real Atari environment (docs/method.md §1).

Every real env the project uses (collection, evaluation, tests) comes from :func:`make_atari_env`,
so an agent sees the same frames in the real game as in the dream: no sticky actions, the minimal
action set, frame-skip 4 with a max over the last two frames, 1-30 random no-ops at reset, and
64x64 RGB uint8 channel-last observations resized with area interpolation.

Implementation choice: gymnasium's ``AtariPreprocessing`` over ``ALE/<Game>-v5`` with
``frameskip=1``, batched by :class:`RealAtariVectorEnv`. ale-py's C++ ``AtariVectorEnv`` is faster
at many envs, but draws 0-29 no-ops instead of 1-30 and resets the emulator on episodic life
loss (docs/studies/benchmarks-log.md, "Real-environment collection"); real steps are never the bottleneck of this project
(the world model is), so fidelity wins.
"""

from __future__ import annotations

from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import AtariPreprocessing

from diamond_env.config import IMG_SIZE

gym.register_envs(ale_py)

GAMES: tuple[str, ...] = (
    "Alien",
    "Amidar",
    "Assault",
    "Asterix",
    "BankHeist",
    "BattleZone",
    "Boxing",
    "Breakout",
    "ChopperCommand",
    "CrazyClimber",
    "DemonAttack",
    "Freeway",
    "Frostbite",
    "Gopher",
    "Hero",
    "Jamesbond",
    "Kangaroo",
    "Krull",
    "KungFuMaster",
    "MsPacman",
    "Pong",
    "PrivateEye",
    "Qbert",
    "RoadRunner",
    "Seaquest",
    "UpNDown",
)
"""The 26 games of the Atari 100k benchmark."""

MAX_FRAMES_PER_EPISODE = 108_000
"""Emulator frames before an episode is truncated (27,000 agent steps at frame-skip 4)."""

NOOP_MAX = 30
FRAME_SKIP = 4

ATARI_SETTINGS: dict[str, Any] = {
    "repeat_action_probability": 0.0,
    "full_action_space": False,
    "frame_skip": FRAME_SKIP,
    "max_pool_last_two_frames": True,
    "noop_max": NOOP_MAX,
    "noop_min": 1,
    "size": IMG_SIZE,
    "interpolation": "area",
    "max_num_frames_per_episode": MAX_FRAMES_PER_EPISODE,
}
"""The settings of docs/method.md §1, stored in every dataset and checkpoint."""


def _ale_names() -> dict[str, str]:
    """Map a normalised game name ("mspacman") to its ALE v5 name ("MsPacman")."""
    names = {}
    for env_id in gym.registry:
        if env_id.startswith("ALE/") and env_id.endswith("-v5"):
            name = env_id[len("ALE/") : -len("-v5")]
            names[name.lower()] = name
    return names


def canonical_game(game: str) -> str:
    """Return the ALE spelling of ``game`` ("breakout", "ms_pacman", "MsPacman" -> "MsPacman").

    Raises:
        ValueError: the game is unknown; the message lists the valid names.
    """
    if not isinstance(game, str):
        raise TypeError(f"game: expected a str such as 'Breakout', got {type(game).__name__}")
    names = _ale_names()
    key = game.replace("_", "").replace("-", "").lower()
    if key not in names:
        raise ValueError(
            f"unknown game {game!r}; the Atari 100k games are {list(GAMES)}; "
            f"any ALE game also works: {sorted(names.values())}"
        )
    return names[key]


def action_meanings(game: str) -> list[str]:
    """The minimal action set of ``game``, named as ALE names it."""
    env = gym.make(f"ALE/{canonical_game(game)}-v5", full_action_space=False)
    try:
        return list(env.unwrapped.get_action_meanings())  # type: ignore[attr-defined]
    finally:
        env.close()


def make_single_atari_env(game: str, render_mode: str | None = None) -> gym.Env:
    """One real game with the settings of docs/method.md §1 (a plain ``gym.Env``, full games, no autoreset
    logic of its own): for libraries that build their own vector env, such as SB3's
    ``DummyVecEnv``. Observations uint8 ``(64, 64, 3)``."""
    game = canonical_game(game)
    base = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,
        repeat_action_probability=0.0,
        full_action_space=False,
        max_num_frames_per_episode=MAX_FRAMES_PER_EPISODE,
        render_mode=render_mode,
    )
    return AtariPreprocessing(
        base,
        noop_max=NOOP_MAX,
        frame_skip=FRAME_SKIP,
        screen_size=IMG_SIZE,
        terminal_on_life_loss=False,
        grayscale_obs=False,
    )


class RealAtariVectorEnv(gym.vector.VectorEnv):
    """N real Atari games with the settings of docs/method.md §1 and same-step autoreset.

    Observations are uint8 ``(N, 64, 64, 3)``; rewards are raw (unclipped) float32.

    With ``train=True`` a lost life is reported as a termination (the learner's signal) while the
    emulator plays on: the env is *not* reset, the next observation continues the game and
    ``info["final_obs"]`` holds that same frame. A real game over or the 108k-frame cap resets the
    env inside the same ``step`` call. ``info`` always carries ``lives``, ``life_loss`` (a life was
    lost this step) and ``game_over`` (the emulator ended the game: a reset happened).
    """

    def __init__(
        self,
        game: str,
        num_envs: int = 1,
        *,
        train: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs: expected an int >= 1, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.game = canonical_game(game)
        self.train = train
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.envs = [make_single_atari_env(self.game, render_mode) for _ in range(num_envs)]
        self.metadata = {
            "autoreset_mode": AutoresetMode.SAME_STEP,
            "render_modes": ["rgb_array"],
            "render_fps": 15,
        }
        self.single_observation_space = gym.spaces.Box(0, 255, (IMG_SIZE, IMG_SIZE, 3), np.uint8)
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._obs = np.zeros((num_envs, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)

    def get_action_meanings(self) -> list[str]:
        return list(self.envs[0].unwrapped.get_action_meanings())  # type: ignore[attr-defined]

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; an int seed gives env i the seed ``seed + i``."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"seed: expected {self.num_envs} seeds, got {len(seed)}")
            seeds = list(seed)
        if seed is not None:
            self.action_space.seed(seeds[0])
        for i, env in enumerate(self.envs):
            obs, info = env.reset(seed=seeds[i])
            self._obs[i] = obs
            self._lives[i] = info["lives"]
        info = {"lives": self._lives.copy()}
        return self._obs.copy(), info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = self._check_actions(actions)
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float32)
        terms = np.zeros(n, dtype=bool)
        truncs = np.zeros(n, dtype=bool)
        life_loss = np.zeros(n, dtype=bool)
        game_over = np.zeros(n, dtype=bool)
        final_obs = np.full(n, None, dtype=object)
        for i, env in enumerate(self.envs):
            obs, rew, term, trunc, info = env.step(int(actions[i]))
            rewards[i] = rew
            lives = int(info["lives"])
            life_loss[i] = lives < self._lives[i] and not term
            self._lives[i] = lives
            game_over[i] = term or trunc
            terms[i] = term or (self.train and life_loss[i])
            truncs[i] = trunc and not term
            if terms[i] or truncs[i]:
                final_obs[i] = obs
            if game_over[i]:
                obs, reset_info = env.reset()
                self._lives[i] = reset_info["lives"]
            self._obs[i] = obs
        infos: dict[str, Any] = {
            "lives": self._lives.copy(),
            "life_loss": life_loss,
            "game_over": game_over,
        }
        done = terms | truncs
        if done.any():
            infos["final_obs"] = final_obs
            infos["_final_obs"] = done
            infos["final_info"] = {"life_loss": life_loss.copy(), "_life_loss": done.copy()}
            infos["_final_info"] = done.copy()
        return self._obs.copy(), rewards, terms, truncs, infos

    def _check_actions(self, actions: Any) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.shape != (self.num_envs,):
            raise ValueError(f"actions: expected shape ({self.num_envs},), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"actions: expected an integer dtype, got {arr.dtype}")
        n = int(self.single_action_space.n)  # type: ignore[attr-defined]
        if arr.min() < 0 or arr.max() >= n:
            raise ValueError(f"actions: expected values in [0, {n - 1}], got {arr.tolist()}")
        return arr

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Full-resolution (210, 160, 3) screens of every env, when ``render_mode='rgb_array'``."""
        if self.render_mode is None:
            return None
        return tuple(env.render() for env in self.envs)  # type: ignore[misc]

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def make_atari_env(
    game: str,
    num_envs: int = 1,
    *,
    train: bool = True,
    seed: int | None = None,
    render_mode: str | None = None,
) -> RealAtariVectorEnv:
    """Build ``num_envs`` real games of ``game`` with the settings of docs/method.md §1.

    Args:
        game: an ALE game name ("Breakout", "ms_pacman", ...).
        num_envs: games played in lock-step.
        train: report life loss as a termination (training collection); ``False`` plays full
            games (evaluation).
        seed: when given, the env is reset with it once so that its RNGs are seeded
            (env i gets ``seed + i``); call ``reset(seed=...)`` yourself to start over.
        render_mode: ``None`` or ``"rgb_array"`` (full-resolution screens).
    """
    env = RealAtariVectorEnv(game, num_envs, train=train, render_mode=render_mode)
    if seed is not None:
        env.reset(seed=seed)
    return env
