"""Counted FLOPs of the three networks, of the units of work the benchmark times, and the
projection of a full training run from measured throughputs.

Counts come from PyTorch's ``FlopCounterMode`` over one call at batch 1 on the ``meta`` device
(nothing is computed; the attention and LSTM kernels decompose into counted matrix products). A
multiply-add counts as 2 FLOPs; only convolutions, matrix products and attention are counted
(norms, activations, interpolation and the Euler updates of the sampler are not).

Units of work:

- a dream frame: ``passes`` denoiser forwards (3 Euler steps in every preset) + 1 reward/end step;
- a training sample: ≈ 3 x its forward FLOPs (forward + backward); a denoiser sample is one pass
  per target frame (2: the target and DIAMOND's autoregressive step), a reward/end sample one
  segment of ``rew_end_seq_len - 1`` transitions;
- an actor-critic update: ``B x H`` dream frames, the agent's forward and backward on each, and
  the burn-ins of the two LSTMs at the start and at the truncation restart (see
  :func:`imagination_update_flops`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from diamond_env.config import IMG_SIZE, Config, LoopConfig, SamplerConfig
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.models.blocks import count_flops
from diamond_env.models.denoiser import Denoiser
from diamond_env.models.rew_end import RewEndModel

TRAIN_FACTOR = 3
"""FLOPs of a training step per forward FLOP (forward + backward ≈ 1 + 2)."""


@dataclass(frozen=True)
class ModelFlops:
    """FLOPs of one call of each network for one sample (batch 1).

    Attributes:
        denoiser_forward: one denoiser pass on one frame (4 context frames + the noisy one).
        rew_end_step: the reward/end model on one transition (encoder, one LSTM step, head).
        rew_end_segment: the reward/end model on a training segment of ``rew_end_seq_len - 1``
            transitions.
        actor_critic_step: the actor-critic on one frame (encoder, LSTM cell, heads).
    """

    denoiser_forward: int
    rew_end_step: int
    rew_end_segment: int
    actor_critic_step: int


def count_model_flops(config: Config, num_actions: int) -> ModelFlops:
    """Count :class:`ModelFlops` for ``config``'s three networks and a game of ``num_actions``
    actions (the count hardly depends on it: embeddings are lookups). Takes well under a second
    even for the paper preset; no weights are initialised (the models are built on ``meta``)."""
    if isinstance(num_actions, bool) or not isinstance(num_actions, int) or num_actions < 1:
        raise ValueError(f"num_actions: expected an int >= 1, got {num_actions!r}")
    with torch.device("meta"):
        denoiser = Denoiser(config.denoiser, num_actions)
        rew_end = RewEndModel(config.rew_end, num_actions)
        actor_critic = ActorCritic(config.actor_critic, num_actions)
    ctx = config.denoiser.num_context
    frame = torch.zeros(1, config.denoiser.img_channels, IMG_SIZE, IMG_SIZE, device="meta")
    den = count_flops(
        denoiser,
        (
            frame,
            torch.ones(1, device="meta"),
            frame[:, None].expand(1, ctx, -1, -1, -1),
            torch.zeros(1, ctx, dtype=torch.int64, device="meta"),
        ),
    )
    return ModelFlops(
        denoiser_forward=den,
        rew_end_step=_rew_end_flops(rew_end, 1),
        rew_end_segment=_rew_end_flops(rew_end, config.loop.rew_end_seq_len - 1),
        actor_critic_step=count_flops(actor_critic, (frame, None)),
    )


def _rew_end_flops(model: nn.Module, steps: int) -> int:
    obs = torch.zeros(1, steps, 3, IMG_SIZE, IMG_SIZE, device="meta")
    act = torch.zeros(1, steps, dtype=torch.int64, device="meta")
    return count_flops(model, (obs, act, obs))


def denoiser_passes(sampler: SamplerConfig) -> int:
    """Denoiser forwards per imagined frame: ``num_steps`` (Euler) or ``2 num_steps - 1`` (Heun,
    whose last step to sigma = 0 is a plain Euler step)."""
    return sampler.num_steps if sampler.method == "euler" else 2 * sampler.num_steps - 1


def dream_frame_flops(flops: ModelFlops, passes: int) -> int:
    """FLOPs of one imagined frame: ``passes`` denoiser forwards + one reward/end step."""
    return passes * flops.denoiser_forward + flops.rew_end_step


def denoiser_sample_flops(flops: ModelFlops, targets: int = 1) -> int:
    """FLOPs of one denoiser training sample of ``targets`` target frames (DIAMOND: 2, the target
    and one autoregressive step): 3 x a forward per target."""
    return TRAIN_FACTOR * flops.denoiser_forward * targets


def rew_end_sample_flops(flops: ModelFlops) -> int:
    """FLOPs of one reward/end training sample (one segment): 3 x its forward."""
    return TRAIN_FACTOR * flops.rew_end_segment


def imagination_update_flops(flops: ModelFlops, config: Config, passes: int) -> int:
    """FLOPs of one actor-critic update of ``config.imagination`` (batch B, horizon H), with
    ``L = num_context`` and no termination inside the horizon::

        B * [ H * (dream_frame + 3 * ac)       # dream steps; agent forward + backward
              + 2 * (L - 1) * (rew_end + ac)   # LSTM burn-ins: start and restart at truncation
              + 2 * ac ]                       # value of the truncated frame, bootstrap value
    """
    imag, burn = config.imagination, config.denoiser.num_context - 1
    ac, re = flops.actor_critic_step, flops.rew_end_step
    per_env = (
        imag.horizon * (dream_frame_flops(flops, passes) + TRAIN_FACTOR * ac)
        + 2 * burn * (re + ac)
        + 2 * ac
    )
    return imag.batch_size * per_env


@dataclass(frozen=True)
class LoopCounts:
    """How much work a full run of a :class:`LoopConfig` schedule does (docs/method.md §5).

    Attributes:
        epochs: ``ceil((real_steps - initial_steps_min) / steps_per_epoch) + extra_epochs``.
        denoiser_steps, rew_end_steps: ``first_epoch_* + (epochs - 1) * grad_steps_per_epoch``.
        actor_critic_steps: likewise with ``first_epoch_actor_critic_steps``.
        real_steps: real environment steps collected.
    """

    epochs: int
    denoiser_steps: int
    rew_end_steps: int
    actor_critic_steps: int
    real_steps: int


def loop_counts(loop: LoopConfig) -> LoopCounts:
    """Counts of ``loop`` assuming the initial collection stops at ``initial_steps_min`` (the
    least work; a game with rare rewards collects up to ``initial_steps_max`` and trains fewer
    epochs). Atari 100k (``LoopConfig()``): 1,000 epochs, 409,600 denoiser and reward/end steps,
    404,600 actor-critic updates."""
    epochs = math.ceil((loop.real_steps - loop.initial_steps_min) / loop.steps_per_epoch)
    epochs += loop.extra_epochs
    rest = (epochs - 1) * loop.grad_steps_per_epoch
    return LoopCounts(
        epochs=epochs,
        denoiser_steps=loop.first_epoch_denoiser_steps + rest,
        rew_end_steps=loop.first_epoch_rew_end_steps + rest,
        actor_critic_steps=loop.first_epoch_actor_critic_steps + rest,
        real_steps=loop.real_steps,
    )


def project_hours(
    counts: LoopCounts,
    *,
    denoiser_steps_per_s: float,
    rew_end_steps_per_s: float,
    actor_critic_steps_per_s: float,
    collection_steps_per_s: float | None = None,
) -> dict[str, float]:
    """Hours of a full run from measured throughputs (evaluation games not included)::

        hours = ( denoiser_steps / denoiser_steps_per_s
                + rew_end_steps / rew_end_steps_per_s
                + actor_critic_steps / actor_critic_steps_per_s
                + real_steps / collection_steps_per_s ) / 3600

    Each term is also returned (``denoiser``, ``rew_end``, ``actor_critic``, ``collection``; the
    last is 0 when ``collection_steps_per_s`` is None) beside ``total``. Throughputs are gradient
    steps (updates) per second at the batch sizes of the preset that was measured.
    """
    rates = {
        "denoiser": (counts.denoiser_steps, denoiser_steps_per_s),
        "rew_end": (counts.rew_end_steps, rew_end_steps_per_s),
        "actor_critic": (counts.actor_critic_steps, actor_critic_steps_per_s),
        "collection": (counts.real_steps, collection_steps_per_s),
    }
    hours: dict[str, float] = {}
    for name, (work, rate) in rates.items():
        if rate is None:
            hours[name] = 0.0
            continue
        if not (isinstance(rate, (int, float)) and rate > 0 and math.isfinite(rate)):
            raise ValueError(f"{name}: expected a finite rate > 0 (per second), got {rate!r}")
        hours[name] = work / rate / 3600.0
    hours["total"] = sum(hours.values())
    return hours
