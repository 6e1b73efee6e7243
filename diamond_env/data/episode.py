"""In-memory containers for real play: one chunk of a game (:class:`Episode`) and many games laid
out flat for fast sampling (:class:`FlatData`).

Frames are uint8 RGB, channel-last ``(H, W, 3)`` in [0, 255]. A chunk of ``T`` steps holds ``T + 1``
frames: ``obs[t]`` is the frame at which ``act[t]`` was taken and ``obs[t + 1]`` the frame it led to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STEP_FIELDS: tuple[str, ...] = ("act", "rew", "term", "trunc", "life_loss")
"""Per-step arrays of an :class:`Episode`, each of shape ``(T,)``."""

FIELD_DTYPES: dict[str, np.dtype] = {
    "obs": np.dtype(np.uint8),
    "act": np.dtype(np.int64),
    "rew": np.dtype(np.float32),
    "term": np.dtype(np.bool_),
    "trunc": np.dtype(np.bool_),
    "life_loss": np.dtype(np.bool_),
}


def _check_array(name: str, value: object, shape: tuple[int | None, ...]) -> np.ndarray:
    """Check type, dtype and shape (``None`` matches any size) of one field; return it."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    dtype = FIELD_DTYPES[name]
    if value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {value.dtype}")
    ok = value.ndim == len(shape) and all(
        s is None or s == v for s, v in zip(shape, value.shape, strict=False)
    )
    if not ok:
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(value.shape)}")
    return value


@dataclass(frozen=True)
class Episode:
    """A chunk of ``T >= 1`` consecutive steps of one game (a whole game or a part of one).

    Attributes:
        obs: uint8 ``(T + 1, H, W, 3)``; ``obs[T]`` is the frame after the last action.
        act: int64 ``(T,)`` action index taken at ``obs[t]``.
        rew: float32 ``(T,)`` raw (unclipped) reward of step ``t``.
        term: bool ``(T,)`` real game over after step ``t`` (only the last step may be True).
        trunc: bool ``(T,)`` time limit hit after step ``t`` (only the last step may be True).
        life_loss: bool ``(T,)`` a life was lost during step ``t`` (the game goes on).
    """

    obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    term: np.ndarray
    trunc: np.ndarray
    life_loss: np.ndarray

    def __post_init__(self) -> None:
        _check_array("act", self.act, (None,))
        steps = len(self.act)
        if steps < 1:
            raise ValueError(f"act: expected at least 1 step, got {steps}")
        _check_array("obs", self.obs, (steps + 1, None, None, 3))
        for name in STEP_FIELDS[1:]:
            _check_array(name, getattr(self, name), (steps,))
        for name in ("term", "trunc"):
            flags = getattr(self, name)
            if flags[:-1].any():
                where = int(np.flatnonzero(flags[:-1])[0])
                raise ValueError(
                    f"{name}: expected True only at the last step {steps - 1}, got True at {where}"
                )

    @property
    def num_steps(self) -> int:
        """``T``, the number of actions (transitions) in the chunk."""
        return len(self.act)

    @property
    def finished(self) -> bool:
        """Whether the chunk ends its game (termination or truncation at the last step)."""
        return bool(self.term[-1] or self.trunc[-1])

    def reward_counts(self) -> dict[int, int]:
        """Number of steps whose reward sign is -1, 0 and +1."""
        signs = np.sign(self.rew)
        return {s: int(np.count_nonzero(signs == s)) for s in (-1, 0, 1)}


@dataclass(frozen=True)
class FlatData:
    """Many episodes in RAM as contiguous arrays, for vectorised segment sampling.

    Episode ``e`` (``0 <= e < E``) has ``lengths[e]`` steps: its steps are
    ``act[step_starts[e] : step_starts[e] + lengths[e]]`` (same for ``rew``, ``term``, ``trunc``,
    ``life_loss``) and its frames, final frame included, are
    ``obs[frame_starts[e] : frame_starts[e] + lengths[e] + 1]``.

    Attributes:
        obs: uint8 ``(sum(lengths) + E, H, W, 3)``.
        act, rew, term, trunc, life_loss: ``(sum(lengths),)`` with the dtypes of :class:`Episode`.
        episode_ids: int64 ``(E,)`` the dataset's id of each episode (chronological order).
        lengths: int64 ``(E,)`` steps per episode, each >= 1.
        step_starts: int64 ``(E,)`` offset of each episode's first step.
        frame_starts: int64 ``(E,)`` offset of each episode's first frame (``step_starts + e``).
    """

    obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    term: np.ndarray
    trunc: np.ndarray
    life_loss: np.ndarray
    episode_ids: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        _check_array("act", self.act, (None,))
        steps = len(self.act)
        for name in STEP_FIELDS[1:]:
            _check_array(name, getattr(self, name), (steps,))
        for name in ("episode_ids", "lengths"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != np.int64 or value.ndim != 1:
                raise TypeError(f"{name}: expected a 1-d int64 numpy array, got {value!r:.80}")
        episodes = len(self.lengths)
        if len(self.episode_ids) != episodes:
            raise ValueError(
                f"episode_ids: expected {episodes} entries (one per length), got {len(self.episode_ids)}"
            )
        if episodes and self.lengths.min() < 1:
            raise ValueError(f"lengths: expected every episode >= 1 step, got {self.lengths.min()}")
        if int(self.lengths.sum()) != steps:
            raise ValueError(
                f"lengths: expected a sum of {steps} steps, got {int(self.lengths.sum())}"
            )
        _check_array("obs", self.obs, (steps + episodes, None, None, 3))

    @property
    def num_episodes(self) -> int:
        return len(self.lengths)

    @property
    def num_steps(self) -> int:
        return len(self.act)

    @property
    def step_starts(self) -> np.ndarray:
        """int64 ``(E,)`` offset of each episode's first step in the step arrays."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def frame_starts(self) -> np.ndarray:
        """int64 ``(E,)`` offset of each episode's first frame in ``obs``."""
        return self.step_starts + np.arange(self.num_episodes, dtype=np.int64)

    def episode(self, e: int) -> Episode:
        """Episode ``e`` (an index in ``0..E-1``, not a dataset id) as views of the flat arrays."""
        if not 0 <= e < self.num_episodes:
            raise IndexError(f"e: expected an index in [0, {self.num_episodes}), got {e}")
        s, f, n = int(self.step_starts[e]), int(self.frame_starts[e]), int(self.lengths[e])
        steps = {name: getattr(self, name)[s : s + n] for name in STEP_FIELDS}
        return Episode(obs=self.obs[f : f + n + 1], **steps)

    @classmethod
    def from_episodes(
        cls, episodes: Sequence[Episode], episode_ids: Sequence[int] | None = None
    ) -> FlatData:
        """Lay out whole episodes (copied) one after the other; ids default to ``0..E-1``."""
        if not episodes:
            raise ValueError("episodes: expected at least one episode, got none")
        ids = range(len(episodes)) if episode_ids is None else episode_ids
        if len(ids) != len(episodes):
            raise ValueError(f"episode_ids: expected {len(episodes)} ids, got {len(ids)}")
        steps = {n: np.concatenate([getattr(ep, n) for ep in episodes]) for n in STEP_FIELDS}
        return cls(
            obs=np.concatenate([ep.obs for ep in episodes]),
            episode_ids=np.asarray(ids, dtype=np.int64),
            lengths=np.asarray([ep.num_steps for ep in episodes], dtype=np.int64),
            **steps,
        )
