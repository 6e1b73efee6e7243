"""Sampling of fixed-length segments of real play for world-model training (SPEC §2.3).

A segment is a window of ``seq_len`` consecutive frames of one episode and the ``seq_len - 1``
transitions between them: ``act[:, i]`` is taken at frame ``obs[:, i]`` and leads to
``obs[:, i + 1]`` with reward ``rew[:, i]`` and end flag ``end[:, i]``. Frames of the window that
fall outside the episode are padding: zero pixels, ``mask`` False; padded transitions have action 0,
reward 0 and no end, and ``step_mask`` False.

Two modes, both choosing an episode (see below), then a transition ``t`` uniformly in it:

- ``pad_after_end=False`` (denoiser; ``seq_len = 5`` = 4 context frames + 1 target): ``t`` is the
  window's last transition, so the target frame ``obs[:, -1]`` (episode frame ``t + 1``) is always
  real and padding can only come before the episode start (at least one context frame is real).
- ``pad_after_end=True`` (reward/end model; ``seq_len = 19`` frames = 18 transitions): ``t`` sits at
  a uniform position in the window, which may start before the episode start and run past its end.

Episode choice: with fewer episodes than ``len(recency_weights)``, uniform over transitions
(episodes in proportion to their lengths). From then on the episodes, in chronological order, are
split into ``len(recency_weights)`` groups as equal as possible (``np.array_split``: earlier groups
take the remainder), group ``g`` gets weight ``recency_weights[g]``, spread equally over its episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diamond_env.data.episode import FlatData
from diamond_env.frames import to_model


@dataclass(frozen=True)
class Segment:
    """A batch of ``B`` windows of ``S`` frames (numpy).

    Attributes:
        obs: uint8 ``(B, S, H, W, 3)``; zero where ``mask`` is False.
        act: int64 ``(B, S - 1)``; 0 where padded.
        rew: float32 ``(B, S - 1)`` raw rewards; 0 where padded.
        end: bool ``(B, S - 1)`` termination target (``term``, or ``term | life_loss``).
        trunc: bool ``(B, S - 1)`` time-limit truncation.
        mask: bool ``(B, S)`` frame is real.
        episode: int64 ``(B,)`` episode index in the sampled :class:`FlatData` (not a dataset id).
        start: int64 ``(B,)`` episode frame index of the window's first frame (negative if padded).
    """

    obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    end: np.ndarray
    trunc: np.ndarray
    mask: np.ndarray
    episode: np.ndarray
    start: np.ndarray

    @property
    def step_mask(self) -> np.ndarray:
        """bool ``(B, S - 1)``: transition ``i`` is real (frames ``i`` and ``i + 1`` both are)."""
        return self.mask[:, :-1] & self.mask[:, 1:]


@dataclass(frozen=True)
class TorchSegment:
    """A :class:`Segment` as model tensors on one device.

    Attributes:
        obs: float32 ``(B, S, 3, H, W)`` in [-1, 1] (padded frames are -1).
        act: int64 ``(B, S - 1)``.
        rew: float32 ``(B, S - 1)`` raw rewards.
        end: bool ``(B, S - 1)``.
        trunc: bool ``(B, S - 1)``.
        mask: bool ``(B, S)`` frame is real.
        step_mask: bool ``(B, S - 1)`` transition is real.
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    mask: torch.Tensor
    step_mask: torch.Tensor


def to_torch(segment: Segment, device: torch.device | str = "cpu") -> TorchSegment:
    """Move a segment to ``device`` (frames travel as uint8) and convert frames with ``to_model``."""

    def move(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)

    return TorchSegment(
        obs=to_model(move(segment.obs)),
        act=move(segment.act),
        rew=move(segment.rew),
        end=move(segment.end),
        trunc=move(segment.trunc),
        mask=move(segment.mask),
        step_mask=move(segment.step_mask),
    )


def recency_episode_weights(lengths: np.ndarray, recency_weights: tuple[float, ...]) -> np.ndarray:
    """Probability of choosing each episode (float64 ``(E,)``, sums to 1), episodes chronological.

    Fewer than ``len(recency_weights)`` episodes: proportional to ``lengths`` (uniform over steps).
    Otherwise ``recency_weights[g]`` (normalised) spread equally over the episodes of group ``g``.
    """
    num = len(lengths)
    if num == 0:
        raise ValueError("lengths: expected at least one episode, got none")
    if num < len(recency_weights):
        return np.asarray(lengths, dtype=np.float64) / float(np.sum(lengths))
    group_weights = np.asarray(recency_weights, dtype=np.float64) / float(sum(recency_weights))
    probs = np.empty(num, dtype=np.float64)
    for weight, group in zip(
        group_weights, np.array_split(np.arange(num), len(group_weights)), strict=True
    ):
        probs[group] = weight / len(group)
    return probs


class SegmentSampler:
    """Seeded sampler of :class:`Segment` batches from a :class:`FlatData` (see module docstring)."""

    def __init__(
        self,
        data: FlatData,
        seq_len: int,
        *,
        pad_after_end: bool,
        recency_weights: tuple[float, ...] = (0.1, 0.1, 0.1, 0.7),
        life_loss_is_end: bool = True,
        seed: int | None = None,
    ) -> None:
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len: expected an int >= 2 (frames per window), got {seq_len!r}")
        weights = np.asarray(recency_weights, dtype=np.float64)
        if weights.ndim != 1 or len(weights) < 1 or not np.all(np.isfinite(weights)):
            raise ValueError(f"recency_weights: expected finite numbers, got {recency_weights!r}")
        if weights.min() < 0 or weights.sum() <= 0:
            raise ValueError(
                f"recency_weights: expected >= 0 with a positive sum, got {recency_weights!r}"
            )
        self.seq_len = seq_len
        self.pad_after_end = pad_after_end
        self.recency_weights = tuple(float(w) for w in recency_weights)
        self.life_loss_is_end = life_loss_is_end
        self.rng = np.random.default_rng(seed)
        self.update(data)

    def update(self, data: FlatData) -> None:
        """Sample from ``data`` from now on (e.g. after new collection); the RNG carries on."""
        if not isinstance(data, FlatData):
            raise TypeError(f"data: expected FlatData, got {type(data).__name__}")
        if data.num_episodes == 0:
            raise ValueError("data: expected at least one episode, got none")
        self.data = data
        self.episode_weights = recency_episode_weights(data.lengths, self.recency_weights)
        self._step_starts = data.step_starts
        self._frame_starts = data.frame_starts

    def sample(self, batch_size: int) -> Segment:
        """``batch_size`` windows; the same seed and calls give the same batches."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        data, seq = self.data, self.seq_len
        episode = self.rng.choice(data.num_episodes, size=batch_size, p=self.episode_weights)
        length = data.lengths[episode]
        t = self.rng.integers(0, length)  # a uniform transition of each chosen episode
        if self.pad_after_end:
            position = self.rng.integers(0, seq - 1, size=batch_size)
        else:
            position = np.full(batch_size, seq - 2)
        start = t - position
        frames = start[:, None] + np.arange(seq)  # (B, S) episode frame indices
        mask = (frames >= 0) & (frames <= length[:, None])
        frame_idx = self._frame_starts[episode, None] + np.clip(frames, 0, length[:, None])
        obs = data.obs[frame_idx]
        obs[~mask] = 0
        steps = frames[:, :-1]
        step_mask = mask[:, :-1] & mask[:, 1:]
        step_idx = self._step_starts[episode, None] + np.clip(steps, 0, length[:, None] - 1)

        def gather(values: np.ndarray) -> np.ndarray:
            out = values[step_idx]
            out[~step_mask] = 0
            return out

        end = gather(data.term)
        if self.life_loss_is_end:
            end |= gather(data.life_loss)
        return Segment(
            obs=obs,
            act=gather(data.act),
            rew=gather(data.rew),
            end=end,
            trunc=gather(data.trunc),
            mask=mask,
            episode=episode.astype(np.int64),
            start=start,
        )
