"""Collection of real play into an :class:`EpisodeDataset`.

A :class:`Collector` owns a real vector env and the games in progress, so the training loop can
collect 100 steps, train, and collect 100 more of the *same* games. Games are written to the
dataset as parts: at a game's end, every ``flush_every`` steps and at the end of each call, so an
interrupted collection loses at most the unflushed steps and never leaves a half-written file that
is read back (the dataset's writes are atomic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from diamond_env.atari import (
    ATARI_SETTINGS,
    RealAtariVectorEnv,
    action_meanings,
    canonical_game,
    make_atari_env,
)
from diamond_env.config import IMG_SIZE
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.episode import Episode
from diamond_env.real_env import EnvSpec, PixelVectorEnv


class Policy(Protocol):
    """Anything that maps a batch of uint8 frames ``(N, 64, 64, 3)`` to int64 actions ``(N,)``."""

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...

    def reset(self, mask: np.ndarray) -> None:
        """Forget the memory of the envs where ``mask`` (bool ``(N,)``) is True."""
        ...


class RandomPolicy:
    """Uniformly random actions from a seeded generator."""

    def __init__(self, num_actions: int, seed: int | None = None) -> None:
        if num_actions < 1:
            raise ValueError(f"num_actions: expected >= 1, got {num_actions}")
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, self.num_actions, size=len(obs), dtype=np.int64)

    def reset(self, mask: np.ndarray) -> None:
        return None


@dataclass
class _Buffer:
    """The unflushed tail of one env's game: frames ``obs`` hold one more entry than actions."""

    obs: list[np.ndarray]
    act: list[int] = field(default_factory=list)
    rew: list[float] = field(default_factory=list)
    term: list[bool] = field(default_factory=list)
    trunc: list[bool] = field(default_factory=list)
    life_loss: list[bool] = field(default_factory=list)
    episode_id: int | None = None

    def to_episode(self) -> Episode:
        return Episode(
            obs=np.stack(self.obs),
            act=np.asarray(self.act, dtype=np.int64),
            rew=np.asarray(self.rew, dtype=np.float32),
            term=np.asarray(self.term, dtype=bool),
            trunc=np.asarray(self.trunc, dtype=bool),
            life_loss=np.asarray(self.life_loss, dtype=bool),
        )


@dataclass
class CollectStats:
    """What one :meth:`Collector.collect` call did."""

    steps: int = 0
    games_finished: int = 0
    game_returns: list[float] = field(default_factory=list)
    reward_counts: dict[int, int] = field(default_factory=lambda: {-1: 0, 0: 0, 1: 0})
    seconds: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


class Collector:
    """Plays a :class:`RealAtariVectorEnv` with a policy and appends what it sees to a dataset."""

    def __init__(
        self,
        env: RealAtariVectorEnv | PixelVectorEnv,
        dataset: EpisodeDataset,
        *,
        seed: int | None = None,
        flush_every: int = 1000,
    ) -> None:
        if dataset.game != env.game:
            raise ValueError(f"dataset holds {dataset.game!r} but the env plays {env.game!r}")
        if flush_every < 1:
            raise ValueError(f"flush_every: expected >= 1, got {flush_every}")
        self.env = env
        self.dataset = dataset
        self.flush_every = flush_every
        self.rng = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        self._obs = obs
        self._buffers = [_Buffer(obs=[obs[i]]) for i in range(env.num_envs)]
        self._returns = np.zeros(env.num_envs, dtype=np.float64)
        self._new_episode = np.ones(env.num_envs, dtype=bool)

    def collect(
        self,
        policy: Policy,
        *,
        steps: int | None = None,
        episodes: int | None = None,
        epsilon: float = 0.0,
        progress: bool = True,
    ) -> CollectStats:
        """Play until ``steps`` env steps (summed over envs) or ``episodes`` finished games.

        With probability ``epsilon`` an env takes a uniformly random action instead of the
        policy's. The policy's memory is reset where the learner's episode restarted (a game
        over, or a life loss when the env is a training env).
        """
        if (steps is None) == (episodes is None):
            raise ValueError("collect: give exactly one of steps= or episodes=")
        if steps is not None and steps <= 0:
            raise ValueError(f"steps: expected a positive int, got {steps}")
        if episodes is not None and episodes <= 0:
            raise ValueError(f"episodes: expected a positive int, got {episodes}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: expected a value in [0, 1], got {epsilon}")
        stats = CollectStats()
        total = steps if steps is not None else episodes
        unit = "step" if steps is not None else "game"
        start = time.perf_counter()
        with tqdm(total=total, unit=unit, disable=not progress, desc="collect") as bar:
            while (
                (stats.steps < steps)
                if steps is not None
                else (stats.games_finished < (episodes or 0))
            ):
                done_games = self._step(policy, epsilon, stats)
                bar.update(self.env.num_envs if steps is not None else done_games)
                if done_games:
                    bar.set_postfix(
                        games=stats.games_finished,
                        last_return=stats.game_returns[-1],
                        refresh=False,
                    )
        self.flush()
        stats.seconds = time.perf_counter() - start
        return stats

    def _step(self, policy: Policy, epsilon: float, stats: CollectStats) -> int:
        n = self.env.num_envs
        policy.reset(self._new_episode)
        actions = np.asarray(policy(self._obs), dtype=np.int64)
        n_act = int(self.env.single_action_space.n)  # type: ignore[attr-defined]
        explore = self.rng.random(n) < epsilon
        actions = np.where(explore, self.rng.integers(0, n_act, size=n), actions)
        obs, rew, term, trunc, info = self.env.step(actions)
        finished = 0
        for i in range(n):
            buf = self._buffers[i]
            next_frame = info["final_obs"][i] if info["game_over"][i] else obs[i]
            buf.act.append(int(actions[i]))
            buf.rew.append(float(rew[i]))
            buf.term.append(bool(term[i] and info["game_over"][i]))
            buf.trunc.append(bool(trunc[i]))
            buf.life_loss.append(bool(info["life_loss"][i]))
            buf.obs.append(next_frame)
            self._returns[i] += rew[i]
            stats.reward_counts[int(np.sign(rew[i]))] += 1
            if info["game_over"][i]:
                self._write(i)
                self._buffers[i] = _Buffer(obs=[obs[i]])
                stats.game_returns.append(float(self._returns[i]))
                self._returns[i] = 0.0
                finished += 1
            elif len(buf.act) >= self.flush_every:
                self._write(i)
        stats.steps += n
        stats.games_finished += finished
        self._new_episode = term | trunc
        self._obs = obs
        return finished

    def _write(self, i: int) -> None:
        """Append env i's unflushed steps to the dataset and keep its last frame as the next start."""
        buf = self._buffers[i]
        if not buf.act:
            return
        episode_id = self.dataset.append(buf.to_episode(), episode_id=buf.episode_id)
        self._buffers[i] = _Buffer(obs=[buf.obs[-1]], episode_id=episode_id)

    def flush(self) -> None:
        """Write every game in progress to the dataset (the games go on)."""
        for i in range(self.env.num_envs):
            self._write(i)


def pixel_env_settings(spec: EnvSpec) -> dict[str, Any]:
    """The settings stored in a dataset of a non-ALE env: the env and our preprocessing."""
    return {"env": spec.to_dict(), "size": IMG_SIZE, "interpolation": "area"}


def open_game_dataset(root: Path, game: str) -> EpisodeDataset:
    """Open (or start) the dataset of real ``game`` play in ``root`` with docs/method.md §1 settings, as
    its one writer (the lock is taken before the index is read).

    Raises:
        ValueError: ``root`` holds a dataset of another game or other env settings.
        DatasetLockedError: another process is writing to it.
    """
    meanings = action_meanings(game)
    return EpisodeDataset.open_or_create(
        root,
        game=canonical_game(game),
        settings=ATARI_SETTINGS,
        num_actions=len(meanings),
        action_meanings=meanings,
        lock=True,
    )


def collect_until(
    root: Path,
    game: str,
    steps: int,
    *,
    policy: Policy | None = None,
    epsilon: float = 0.0,
    num_envs: int = 1,
    seed: int = 0,
    progress: bool = True,
    env_spec: EnvSpec | None = None,
) -> tuple[EpisodeDataset, CollectStats | None]:
    """Top the dataset in ``root`` up to ``steps`` steps of real play (None: already there).

    ``env_spec``: play that Gymnasium env instead of the ALE game (``game`` is then its id; the
    spec is stored in the dataset's settings).

    ``policy`` plays (random play without one), taking a uniformly random action instead with
    probability ``epsilon`` in each env and step. A rerun after an interruption collects only
    what is missing, from fresh games seeded with ``seed + steps already held`` so it does not
    replay the games it holds; what is collected is appended to what the dataset holds.
    """
    if steps <= 0:
        raise ValueError(f"steps: expected a positive int, got {steps}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon: expected a value in [0, 1], got {epsilon}")
    if env_spec is not None:
        env: Any = PixelVectorEnv(env_spec, num_envs, train=True)
        try:
            dataset = EpisodeDataset.open_or_create(
                root,
                game=env_spec.id,
                settings=pixel_env_settings(env_spec),
                num_actions=int(env.single_action_space.n),
                action_meanings=env.get_action_meanings(),
                lock=True,
            )
        except BaseException:
            env.close()
            raise
    else:
        dataset = open_game_dataset(root, game)
    missing = steps - dataset.num_steps
    if missing <= 0:
        if env_spec is not None:
            env.close()
        return dataset, None
    seed = seed + dataset.num_steps
    if env_spec is None:
        env = make_atari_env(dataset.game, num_envs, train=True)
    try:
        collector = Collector(env, dataset, seed=seed)
        player = policy if policy is not None else RandomPolicy(dataset.num_actions, seed=seed)
        stats = collector.collect(player, steps=missing, epsilon=epsilon, progress=progress)
    finally:
        env.close()
    return dataset, stats


def collect_random_until(
    root: Path,
    game: str,
    steps: int,
    *,
    num_envs: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> tuple[EpisodeDataset, CollectStats | None]:
    """:func:`collect_until` with the random policy."""
    return collect_until(root, game, steps, num_envs=num_envs, seed=seed, progress=progress)
