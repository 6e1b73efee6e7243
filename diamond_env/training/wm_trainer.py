"""Training steps of the world model's two networks, and what a checkpoint needs from the data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from diamond_env.config import Config
from diamond_env.data.episode import FlatData
from diamond_env.data.segments import SegmentSampler, life_index, to_torch
from diamond_env.evaluation.ball import BALL_GAME, bounce_steps
from diamond_env.training.distributed import Distributed
from diamond_env.training.optim import make_optimizer, optimizer_step
from diamond_env.world_model.model import ContextBank, WorldModel


@dataclass(frozen=True)
class Split:
    """Episode indices (into a dataset's chronological episode list) for training and testing."""

    train: list[int]
    test: list[int]


def split_episodes(num_episodes: int, test_fraction: float) -> Split:
    """Hold out the last ``test_fraction`` of the episodes (at least one when there are two)."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes: expected >= 1, got {num_episodes}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in [0, 1), got {test_fraction}")
    num_test = int(round(num_episodes * test_fraction))
    if test_fraction > 0 and num_episodes >= 2:
        num_test = max(1, num_test)
    num_test = min(num_test, num_episodes - 1)
    cut = num_episodes - num_test
    return Split(train=list(range(cut)), test=list(range(cut, num_episodes)))


def build_context_bank(
    data: FlatData, num_contexts: int, num_context: int, rng: np.random.Generator
) -> ContextBank:
    """Draw ``num_contexts`` real windows of ``num_context`` frames (and the actions taken at them).

    Windows lie fully inside one life (no padding, no life loss inside), chosen uniformly over
    valid positions.
    """
    starts = []
    lives = life_index(data)
    frame_starts, step_starts = lives.frame_starts, lives.step_starts
    for e in range(lives.num_lives):
        n_valid = int(lives.lengths[e]) - num_context + 1  # windows whose actions all exist
        if n_valid > 0:
            starts.append(np.stack([np.full(n_valid, e), np.arange(n_valid)], axis=1))
    if not starts:
        raise ValueError(
            f"no life has the {num_context} steps a starting context needs "
            f"(life lengths {lives.lengths.tolist()[:20]})"
        )
    candidates = np.concatenate(starts)
    pick = rng.choice(len(candidates), size=min(num_contexts, len(candidates)), replace=False)
    offsets = np.arange(num_context)
    obs_idx = frame_starts[candidates[pick, 0]][:, None] + candidates[pick, 1][:, None] + offsets
    act_idx = step_starts[candidates[pick, 0]][:, None] + candidates[pick, 1][:, None] + offsets
    return ContextBank(
        obs=torch.from_numpy(np.ascontiguousarray(data.obs[obs_idx])),
        act=torch.from_numpy(np.ascontiguousarray(data.act[act_idx])),
    )


def make_samplers(
    config: Config, data: FlatData, seed: int, rank: int = 0, game: str | None = None
) -> tuple[SegmentSampler, SegmentSampler]:
    """The denoiser's and the reward/end model's segment samplers (seeds ``seed + 1``, ``+ 2``;
    on data-parallel rank ``r > 0``, ``(seed + 1, r)`` and ``(seed + 2, r)``) for ``data`` of
    ``game`` (checked against the Breakout-only ``loop.denoiser_bounce_fraction``)."""
    loop = config.loop
    if loop.denoiser_bounce_fraction > 0 and game != BALL_GAME:
        raise ValueError(
            f"loop.denoiser_bounce_fraction: the ball's bounces are found in {BALL_GAME} frames "
            f"only, got data of {game}"
        )

    def seed_of(base: int) -> int | tuple[int, int]:
        return base if rank == 0 else (base, rank)

    den = SegmentSampler(
        data,
        loop.denoiser_seq_len,
        pad_after_end=False,
        recency_weights=loop.recency_weights,
        seed=seed_of(seed + 1),
        event_fraction=loop.denoiser_reward_fraction,
        reward_lead=loop.denoiser_reward_lead,
        focus=bounce_steps if loop.denoiser_bounce_fraction > 0 else None,
        focus_fraction=loop.denoiser_bounce_fraction,
    )
    re = SegmentSampler(
        data,
        loop.rew_end_seq_len,
        pad_after_end=True,
        recency_weights=loop.recency_weights,
        seed=seed_of(seed + 2),
        event_fraction=loop.rew_end_event_fraction,
    )
    return den, re


class WorldModelTrainer:
    """One gradient step at a time for the denoiser and the reward/end model (docs/method.md §2.3).

    ``dist``: the data-parallel run this process belongs to (None: a plain run). Each rank then
    trains on ``batch_per_rank`` segments (default: the preset's batch divided by the number of
    processes) and the gradients are summed over the ranks before clipping (see
    :mod:`diamond_env.training.distributed`); the metrics returned are the global batch's.
    """

    def __init__(
        self,
        world_model: WorldModel,
        config: Config,
        device: torch.device,
        *,
        dist: Distributed | None = None,
        batch_per_rank: int | None = None,
    ) -> None:
        self.world_model = world_model
        self.config = config
        self.device = device
        self.dist = dist if dist is not None else Distributed(device=device)
        self.den_opt, self.den_sched = make_optimizer(world_model.denoiser, config.denoiser_optim)
        self.re_opt, self.re_sched = make_optimizer(world_model.rew_end, config.rew_end_optim)
        self.den_batch, self.re_batch = (
            (batch_per_rank, batch_per_rank)
            if batch_per_rank
            else (
                self.dist.per_rank(config.denoiser_optim.batch_size, "denoiser_optim.batch_size"),
                self.dist.per_rank(config.rew_end_optim.batch_size, "rew_end_optim.batch_size"),
            )
        )
        self.grad_steps = 0
        self.bytes_reduced = {"denoiser": 0, "rew_end": 0}
        """Bytes of gradient all-reduced per step for each network (0 in a plain run)."""

    def _reduce(self, name: str) -> Callable[[nn.Module], object] | None:
        if not self.dist.enabled:
            return None

        def reduce(module: nn.Module) -> None:
            self.bytes_reduced[name] = self.dist.sum_gradients_(module)

        return reduce

    def denoiser_step(self, sampler: SegmentSampler) -> dict[str, float]:
        """One step on a batch of segments of 4 context frames + 1 target + the autoregressive
        targets (DIAMOND: one), see :meth:`Denoiser.compute_sequence_loss`."""
        cfg = self.config.denoiser_optim
        seg = to_torch(sampler.sample(self.den_batch), self.device)
        den = self.world_model.denoiser
        den.train()
        counts = None
        if self.dist.enabled:  # each term divides by its count of real targets over all ranks
            counts = self.dist.sum_(seg.mask[:, den.config.num_context :].sum(0).float())
        loss = den.compute_sequence_loss(seg.obs, seg.act, seg.mask, counts=counts)
        grad = optimizer_step(
            loss, den, self.den_opt, self.den_sched, cfg.max_grad_norm, self._reduce("denoiser")
        )
        metrics = self.dist.reduce_scalars({"denoiser/loss": loss})  # the global batch's
        metrics["denoiser/grad_norm"] = grad
        return metrics

    def rew_end_step(self, sampler: SegmentSampler) -> dict[str, float]:
        """One step on a batch of reward/end segments (padding masked)."""
        cfg = self.config.rew_end_optim
        seg = to_torch(sampler.sample(self.re_batch), self.device)
        model = self.world_model.rew_end
        model.train()
        count = self.dist.sum_(seg.step_mask.sum().float()) if self.dist.enabled else None
        loss, parts = model.compute_loss(
            seg.obs[:, :-1], seg.act, seg.obs[:, 1:], seg.rew, seg.end, seg.step_mask, count
        )
        grad = optimizer_step(
            loss, model, self.re_opt, self.re_sched, cfg.max_grad_norm, self._reduce("rew_end")
        )
        values = {f"rew_end/{k}": torch.tensor(v) for k, v in parts.items()}
        values["rew_end/loss"] = loss
        out = self.dist.reduce_scalars(values)  # each rank's share of the global figures
        out["rew_end/grad_norm"] = grad
        return out

    def train_step(
        self, den_sampler: SegmentSampler, re_sampler: SegmentSampler
    ) -> dict[str, float]:
        """A step of each network; counts one ``grad_steps``."""
        metrics = self.denoiser_step(den_sampler)
        metrics.update(self.rew_end_step(re_sampler))
        self.grad_steps += 1
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser and scheduler states, and the step counter (for resuming)."""
        return {
            "grad_steps": self.grad_steps,
            "denoiser": self.world_model.denoiser.state_dict(),
            "rew_end": self.world_model.rew_end.state_dict(),
            "den_opt": self.den_opt.state_dict(),
            "den_sched": self.den_sched.state_dict(),
            "re_opt": self.re_opt.state_dict(),
            "re_sched": self.re_sched.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.world_model.denoiser.load_state_dict(state["denoiser"])
        self.world_model.rew_end.load_state_dict(state["rew_end"])
        self.den_opt.load_state_dict(state["den_opt"])
        self.den_sched.load_state_dict(state["den_sched"])
        self.re_opt.load_state_dict(state["re_opt"])
        self.re_sched.load_state_dict(state["re_sched"])
        self.grad_steps = int(state["grad_steps"])
