"""Sampling of fixed-length segments of real play for world-model training (docs/method.md §2.3), as
DIAMOND's ``BatchSampler`` and ``make_segment`` do (``src/data/batch_sampler.py``,
``src/data/utils.py``).

**An episode is a life.** Games are stored whole on disk, but DIAMOND stores a new episode at every
life loss (``src/envs/env.py``, ``src/coroutines/collector.py``), so here every sampler, mask,
recency group and starting context works on lives (:func:`life_index`): nothing after a life loss
is ever inside a segment, and the life-loss step is the last step of its life (end = True).

A segment is a window of ``seq_len`` consecutive frames of one life and the ``seq_len - 1``
transitions between them: ``act[:, i]`` is taken at frame ``obs[:, i]`` and leads to
``obs[:, i + 1]`` with reward ``rew[:, i]`` and end flag ``end[:, i]``. Window frames outside the
life are padding: ``mask`` False, zero pixels in the uint8 :class:`Segment` and **0.0** in the
model tensors of :class:`TorchSegment` (DIAMOND's padding value in [-1, 1]); padded transitions
have action 0, reward 0 and no end, and ``step_mask`` False.

A life of ``T`` steps has frames ``0..T`` (frame ``T`` is the one after its last action). Both
modes choose a life (see below), then ``t`` uniformly in ``[0, T)``:

- ``pad_after_end=False`` (denoiser, ``seq_len = 4 + 1 + 1``; starting contexts, ``seq_len = 4``):
  the window ends at ``stop = min(T, t + 1 + U[0, seq_len))`` (exclusive) and starts at
  ``stop - seq_len``; padding only before the life's start. As in DIAMOND, frames ``0..T-1``
  (those an action was taken at) are the only real frames, so frame ``T`` is never a target.
- ``pad_after_end=True`` (reward/end model, ``seq_len = 19``): the window starts at
  ``t - U[0, seq_len)`` and may run past the life's end; frame ``T`` is real (the next frame of
  the last step) and transition ``i`` is real when its step lies in ``[0, T)``.

Life choice: with fewer lives than ``len(recency_weights)``, uniform over transitions (lives in
proportion to their lengths). From then on the lives, in chronological order, are split into
``len(recency_weights)`` groups of ``n // k`` lives, the remainder going to the newest group (as
DIAMOND's sampler); group ``g`` gets weight ``recency_weights[g]``, spread equally over its lives.

``event_fraction`` (a low-budget aid, 0 in DIAMOND) replaces, for that share of the windows, the
life and ``t`` by a uniform step with a reward or an end (recency ignored), placed at a uniform
transition of the window (``pad_after_end=True``: ``start = t - U[0, seq_len - 1)``).

``reward_lead`` > 0 (denoiser windows only, ``pad_after_end=False``) draws those windows before a
reward instead: a uniform step ``s`` with a reward (ends do not count), and the window's last
frame uniform among the ``reward_lead`` frames up to ``s + 1``, the first frame that shows it
(``stop = min(T, max(1, s + 2 - U[0, reward_lead)))``). What leads to a reward (in Breakout, the
ball on its way up to the bricks) is rare in random play and is what an agent's dream needs.

``focus`` (denoiser windows only; a low-budget aid, None in DIAMOND) marks steps of the data (a
function of the :class:`FlatData`, bool per step, e.g. :func:`diamond_env.evaluation.ball.bounce_steps`)
around which the model should see its targets more often: a ``focus_fraction`` share of the
windows is drawn instead around a uniform marked step ``s``, their last frame among frames ``s``
to ``s + 2`` (``stop = min(T, s + 1 + U[0, 3))``; the denoiser's targets are a window's last
frames, so frames ``s - 1`` to ``s + 2`` are targets). It is drawn after the reward
windows, so it replaces some of them too. With no marked step in the data nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
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
        episode: int64 ``(B,)`` index of the life (see :func:`life_index`) the window lies in.
        start: int64 ``(B,)`` life frame index of the window's first frame (negative if padded).
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
        obs: float32 ``(B, S, 3, H, W)`` in [-1, 1] (padded frames are 0.0, as in DIAMOND).
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

    mask = move(segment.mask)
    obs = to_model(move(segment.obs))
    obs = torch.where(mask[:, :, None, None, None], obs, 0.0)
    return TorchSegment(
        obs=obs,
        act=move(segment.act),
        rew=move(segment.rew),
        end=move(segment.end),
        trunc=move(segment.trunc),
        mask=mask,
        step_mask=move(segment.step_mask),
    )


def recency_episode_weights(lengths: np.ndarray, recency_weights: tuple[float, ...]) -> np.ndarray:
    """Probability of choosing each episode (float64 ``(E,)``, sums to 1), episodes chronological.

    Fewer than ``k = len(recency_weights)`` episodes: proportional to ``lengths`` (uniform over
    steps). Otherwise groups of ``E // k`` episodes, the newest group also taking the ``E % k``
    remainder (DIAMOND, ``src/data/batch_sampler.py``); ``recency_weights[g]`` (normalised) is
    spread equally over the episodes of group ``g``.
    """
    num = len(lengths)
    if num == 0:
        raise ValueError("lengths: expected at least one episode, got none")
    k = len(recency_weights)
    if num < k:
        return np.asarray(lengths, dtype=np.float64) / float(np.sum(lengths))
    group_weights = np.asarray(recency_weights, dtype=np.float64) / float(sum(recency_weights))
    sizes = np.full(k, num // k)
    sizes[-1] += num % k
    probs = np.repeat(group_weights / sizes, sizes)
    return probs / probs.sum()


@dataclass(frozen=True)
class LifeIndex:
    """Where each life lies in a :class:`FlatData` (all int64 ``(N,)``, chronological).

    ``lengths[i]`` steps starting at step ``step_starts[i]`` and frame ``frame_starts[i]``; a life
    ends at a life loss, at the end of its game, or at the end of the stored part of a game.
    """

    lengths: np.ndarray
    step_starts: np.ndarray
    frame_starts: np.ndarray

    @property
    def num_lives(self) -> int:
        return len(self.lengths)


def life_index(data: FlatData, split_lives: bool = True) -> LifeIndex:
    """The lives of ``data`` (``split_lives=False``: one entry per stored episode)."""
    episode_of_step = np.repeat(np.arange(data.num_episodes, dtype=np.int64), data.lengths)
    is_start = np.zeros(data.num_steps, dtype=bool)
    is_start[data.step_starts] = True
    if split_lives:
        same_episode = episode_of_step[1:] == episode_of_step[:-1]
        is_start[1:] |= data.life_loss[:-1] & same_episode
    step_starts = np.flatnonzero(is_start).astype(np.int64)
    lengths = np.diff(np.append(step_starts, data.num_steps)).astype(np.int64)
    return LifeIndex(lengths, step_starts, step_starts + episode_of_step[step_starts])


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
        split_lives: bool = True,
        event_fraction: float = 0.0,
        reward_lead: int = 0,
        focus: Callable[[FlatData], np.ndarray] | None = None,
        focus_fraction: float = 0.0,
        seed: int | tuple[int, ...] | None = None,
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
        if not 0.0 <= event_fraction <= 1.0:
            raise ValueError(f"event_fraction: expected a share in [0, 1], got {event_fraction!r}")
        if not isinstance(reward_lead, int) or reward_lead < 0:
            raise ValueError(f"reward_lead: expected an int >= 0 (frames), got {reward_lead!r}")
        if reward_lead > 0 and pad_after_end:
            raise ValueError("reward_lead: only for denoiser windows (pad_after_end=False)")
        if not 0.0 <= focus_fraction <= 1.0:
            raise ValueError(f"focus_fraction: expected a share in [0, 1], got {focus_fraction!r}")
        if focus_fraction > 0 and (focus is None or pad_after_end):
            raise ValueError(
                "focus_fraction: needs focus, for denoiser windows (pad_after_end=False)"
            )
        self.focus = focus if focus_fraction > 0 else None
        self.focus_fraction = float(focus_fraction)
        self.seq_len = seq_len
        self.event_fraction = float(event_fraction)
        self.reward_lead = reward_lead
        self.pad_after_end = pad_after_end
        self.recency_weights = tuple(float(w) for w in recency_weights)
        self.life_loss_is_end = life_loss_is_end
        self.split_lives = split_lives
        self.rng = np.random.default_rng(seed)
        self.update(data)

    def update(self, data: FlatData) -> None:
        """Sample from ``data`` from now on (e.g. after new collection); the RNG carries on."""
        if not isinstance(data, FlatData):
            raise TypeError(f"data: expected FlatData, got {type(data).__name__}")
        if data.num_episodes == 0:
            raise ValueError("data: expected at least one episode, got none")
        self.data = data
        self.lives = life_index(data, self.split_lives)
        self.episode_weights = recency_episode_weights(self.lives.lengths, self.recency_weights)
        is_event = data.rew != 0
        if not self.reward_lead:
            if self.life_loss_is_end or self.split_lives:
                is_event = is_event | data.life_loss
            is_event = is_event | data.term
        steps = np.flatnonzero(is_event)
        life = np.searchsorted(self.lives.step_starts, steps, side="right") - 1
        self.event_lives = life.astype(np.int64)
        self.event_steps = (steps - self.lives.step_starts[life]).astype(np.int64)
        self.focus_lives = self.focus_steps = np.zeros(0, dtype=np.int64)
        if self.focus is not None:
            marked = np.asarray(self.focus(data), dtype=bool)
            if marked.shape != data.act.shape:
                raise ValueError(
                    f"focus: expected a bool per step {data.act.shape}, got shape {marked.shape}"
                )
            steps = np.flatnonzero(marked)
            life = np.searchsorted(self.lives.step_starts, steps, side="right") - 1
            self.focus_lives = life.astype(np.int64)
            self.focus_steps = (steps - self.lives.step_starts[life]).astype(np.int64)

    def sample(self, batch_size: int) -> Segment:
        """``batch_size`` windows; the same seed and calls give the same batches."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        seq, lives = self.seq_len, self.lives
        episode = self.rng.choice(lives.num_lives, size=batch_size, p=self.episode_weights)
        length = lives.lengths[episode]
        t = self.rng.integers(0, length)  # a uniform step of each chosen life
        offset = self.rng.integers(0, seq, size=batch_size)
        if self.event_fraction > 0 and len(self.event_lives) > 0:
            # a share of the windows around a uniform step with a reward or an end instead, that
            # step being one of the window's transitions
            chosen, life_of, step_of = self._around(
                self.event_fraction, self.event_lives, self.event_steps, batch_size
            )
            episode = np.where(chosen, life_of, episode)
            length = lives.lengths[episode]
            t = np.where(chosen, step_of, t)
            if self.reward_lead:
                # stop = t + 1 + offset below: the last frame s + 1 - U[0, reward_lead), >= 0
                back = self.rng.integers(0, self.reward_lead, size=batch_size)
                t = np.where(chosen, np.maximum(t + 1 - back, 0), t)
                offset = np.where(chosen, 0, offset)
            else:
                offset = np.where(chosen, self.rng.integers(0, seq - 1, size=batch_size), offset)
        if self.focus_fraction > 0 and len(self.focus_lives) > 0:
            # stop = t + 1 + offset below = s + 1 + U[0, 3): the last frame is s, s + 1 or s + 2
            chosen, life_of, step_of = self._around(
                self.focus_fraction, self.focus_lives, self.focus_steps, batch_size
            )
            episode = np.where(chosen, life_of, episode)
            length = lives.lengths[episode]
            t = np.where(chosen, step_of, t)
            offset = np.where(chosen, self.rng.integers(0, 3, size=batch_size), offset)
        if self.pad_after_end:
            start = t - offset
        else:
            start = np.minimum(length, t + 1 + offset) - seq
        return self.gather(episode.astype(np.int64), start.astype(np.int64))

    def _around(
        self, fraction: float, marked_lives: np.ndarray, marked_steps: np.ndarray, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which windows are drawn around a marked step (the event or focus share), and a uniform
        marked step (its life, its step in the life) for each window."""
        chosen = self.rng.random(batch_size) < fraction
        pick = self.rng.integers(0, len(marked_lives), size=batch_size)
        return chosen, marked_lives[pick], marked_steps[pick]

    def gather(self, episode: np.ndarray, start: np.ndarray) -> Segment:
        """The windows of lives ``episode`` starting at life frame ``start`` (int64 ``(B,)``, as
        :meth:`sample` drew them), read from the current data."""
        data, seq, lives = self.data, self.seq_len, self.lives
        length = lives.lengths[episode]
        # reward/end: the frame after the last action is real; denoiser: as in DIAMOND, only
        # the frames an action was taken at
        last_real = length if self.pad_after_end else length - 1
        frames = start[:, None] + np.arange(seq)  # (B, S) life frame indices
        mask = (frames >= 0) & (frames <= last_real[:, None])
        frame_idx = lives.frame_starts[episode, None] + np.clip(frames, 0, length[:, None])
        obs = data.obs[frame_idx]
        obs[~mask] = 0
        steps = frames[:, :-1]
        step_mask = (steps >= 0) & (steps < length[:, None]) & mask[:, :-1]
        step_idx = lives.step_starts[episode, None] + np.clip(steps, 0, length[:, None] - 1)

        def gather(values: np.ndarray) -> np.ndarray:
            out = values[step_idx]
            out[~step_mask] = 0
            return out

        end = gather(data.term)
        if self.life_loss_is_end or self.split_lives:
            end |= gather(data.life_loss)
        return Segment(
            obs=obs,
            act=gather(data.act),
            rew=gather(data.rew),
            end=end,
            trunc=gather(data.trunc),
            mask=mask,
            episode=episode,
            start=start,
        )
