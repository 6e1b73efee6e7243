"""Frozen configuration dataclasses for every component, and the three size presets.

The ``paper`` preset holds the numbers of DIAMOND (Alonso et al., 2024) for Atari 100k; ``tiny``
changes sizes and step counts only; ``cpu`` and ``small`` also turn on low-budget aids that the
paper preset leaves off (``predict_change``, ``quantize="round"``, ``change_weight``, the
sampler's ``min_change``, ``rew_end_event_fraction``, ``denoiser_reward_fraction``, and for the
reward/end model ``frame_difference``, ``change_grid`` and ``event_weight``; each measured on held-out
games: docs/presets.md).
Game-dependent values (the number of actions) are not part of a preset: models receive them as
constructor arguments and checkpoints store them beside the config.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

PresetName = Literal["tiny", "cpu", "small", "paper"]
PRESETS: tuple[str, ...] = ("tiny", "cpu", "small", "paper")

IMG_SIZE = 64
"""Side of the square RGB frames every model sees."""

NUM_CONTEXT = 4
"""L: the number of past frames and actions the world model conditions on."""


@dataclass(frozen=True)
class DenoiserConfig:
    """EDM denoiser with DIAMOND's action conditioning (docs/method.md §2.1)."""

    channels: tuple[int, ...] = (64, 64, 64, 64)
    """U-Net channels per level; one stride-2 downsampling between consecutive levels."""
    depths: tuple[int, ...] = (2, 2, 2, 2)
    """Residual blocks per level."""
    attn_depths: tuple[bool, ...] = (False, False, False, False)
    """Self-attention in the residual blocks of each level (the two middle blocks always have it)."""
    cond_channels: int = 256
    """Width of the conditioning vector (noise level + actions) that drives adaptive group norm."""
    action_emb_dim: int = 64
    """Embedding width of each of the ``num_context`` conditioning actions (concatenated)."""
    num_context: int = NUM_CONTEXT
    """Number of conditioning frames and actions."""
    img_channels: int = 3
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3
    """Std of the per-sample, per-channel constant shift added to noisy inputs in training."""
    train_log_sigma_loc: float = -0.4
    train_log_sigma_scale: float = 1.2
    train_sigma_min: float = 2e-3
    train_sigma_max: float = 20.0
    predict_change: bool = False
    """Low-budget aid, off in ``paper``: diffuse the change from the last context frame instead of
    the frame itself (``D = last + EDM(x - last)``), so the untrained network already repeats the
    last frame and training only has to learn what moves. DIAMOND diffuses the frame."""
    quantize: Literal["floor", "round"] = "floor"
    """How a denoised frame is put on the 256 levels of a uint8 frame, in the dream and in the
    autoregressive loss terms: ``"floor"`` is DIAMOND's code (``wrap_model_output``); it lowers
    every pixel by half a level on average, which a model that repeats most of the frame turns
    into a drift of up to one level per dreamt step on static pixels. ``"round"`` (low-budget
    aid, off in ``paper``) takes the nearest level."""
    change_weight: float = 0.0
    """Low-budget aid, 0 in ``paper``: pixels of the target that differ from the last context
    frame weigh ``1 + change_weight`` in the denoising loss (each sample's loss stays a weighted
    mean over its pixels). The ball and the paddle are a few of the 4,096 pixels of a Breakout
    frame; unweighted, a model that leaves them where they were loses almost nothing. Off in
    ``paper``; 5 in ``cpu`` and ``small`` (docs/presets.md): too large a weight makes the ball
    move but leave a trail."""
    context_noise: bool = False
    """Anti-drift aid, off in ``paper``: in training, the context frames are noised with their own
    level ``σ_c`` (drawn like the training σ, with offset noise) and the network is told
    ``ln(σ_c) / 4`` through a second Fourier embedding; in the dream they get the small fixed
    level ``sampler.context_noise``. A model trained on clean contexts meets its own slightly
    wrong frames only in the dream; trained this way it learns to correct them. DIAMOND's CS:GO
    configuration (``noise_previous_obs``, branch ``csgo``), not its Atari one. Adds a network
    input, so it is fixed for a model's life."""


@dataclass(frozen=True)
class SamplerConfig:
    """Karras et al. (2022) sampler settings (docs/method.md §2.1)."""

    num_steps: int = 3
    """Number of denoising steps per imagined frame."""
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    method: Literal["euler", "heun"] = "euler"
    start: Literal["unit", "sigma_max"] = "unit"
    """Initial sample: ``"unit"`` = N(0, I), DIAMOND's code and what its trained models expect
    (although the first level is ``sigma_max``); ``"sigma_max"`` = ``sigma_max`` N(0, I), the
    EDM paper's start."""
    s_churn: float = 0.0
    """Stochastic churn (0 = deterministic sampler)."""
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    min_change: int = 0
    """Low-budget aid, 0 in ``paper``: a dreamt pixel whose colour differs from the last frame's by
    fewer than ``min_change`` of the 255 levels in every channel keeps the last frame's colour.
    Atari frames change by whole palette steps, so this only removes the small errors a model
    adds to pixels that did not move, which otherwise pile up over a dream (colour drift)."""
    context_noise: float = 0.0
    """Noise level ``s_cond`` given to the context frames in the dream (0 = clean contexts, the
    only value for a denoiser without ``denoiser.context_noise``). DIAMOND's CS:GO dreams use
    0.005 (``config/world_model_env``, branch ``csgo``)."""


@dataclass(frozen=True)
class RewEndConfig:
    """Reward / termination model (docs/method.md §2.2)."""

    channels: tuple[int, ...] = (32, 32, 32, 32)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    attn_depths: tuple[bool, ...] = (False, False, False, False)
    cond_channels: int = 128
    """Width of the action embedding that drives adaptive group norm in the encoder."""
    lstm_dim: int = 512
    img_channels: int = 3
    frame_difference: bool = False
    """Low-budget aid, off in ``paper``: the encoder also sees ``next_obs - obs``, where a reward
    (a brick gone, the score) or a life loss (the lives counter) shows alone. DIAMOND's encoder sees
    the two frames only."""
    change_grid: int = 0
    """Low-budget aid, 0 (off) in ``paper``: the LSTM also reads where the frame changed, the
    absolute difference ``|next_obs - obs|`` averaged over colours and max-pooled to a
    ``change_grid`` x ``change_grid`` map (a divisor of the image size). A reward or a life loss
    is a small change at a telling place (a brick, the score, the lives counter) beside the
    ball's and paddle's changes everywhere; the encoder takes thousands of steps to find that
    cue, a linear read-out of the map finds it much sooner (docs/presets.md)."""
    event_weight: float = 1.0
    """Low-budget aid, 1.0 (off) in ``paper``: the weight of the rare classes (reward -1 and +1,
    end) in the cross-entropy, the common ones keeping weight 1. With a few events per thousand
    steps the unweighted loss is nearly minimal at the majority class, and a small model trained
    for minutes stays there; DIAMOND weighs every class alike. Predictions (the dream, the
    evaluations) take ``log event_weight`` off the rare classes' logits, which undoes the
    weighting (``RewEndModel.predict``)."""


@dataclass(frozen=True)
class ActorCriticConfig:
    """DIAMOND's actor-critic (docs/method.md §4)."""

    channels: tuple[int, ...] = (32, 32, 64, 64)
    lstm_dim: int = 512
    img_channels: int = 3


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and gradient-norm clipping (docs/method.md §2.3)."""

    lr: float = 1e-4
    eps: float = 1e-8
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    batch_size: int = 32


@dataclass(frozen=True)
class ImaginationConfig:
    """Actor-critic training in imagination (docs/method.md §4)."""

    batch_size: int = 32
    """Parallel dream trajectories."""
    horizon: int = 15
    gamma: float = 0.985
    lambda_: float = 0.95
    entropy_weight: float = 1e-3
    context_preload: int = 8192
    """Starting contexts drawn from the replay at once in the full loop (DIAMOND: 256 batches of
    32), served in order."""


@dataclass(frozen=True)
class LoopConfig:
    """DIAMOND's Algorithm 1 schedule (docs/method.md §5)."""

    real_steps: int = 100_000
    initial_steps_min: int = 5_000
    initial_steps_max: int = 10_000
    initial_min_minority_rewards: int = 10
    """Initial collection goes on until the reward signs other than the most frequent one sum to
    this many (DIAMOND: ``sum(sorted(counts)[:-1]) >= 10``)."""
    steps_per_epoch: int = 100
    """Real environment steps collected per epoch."""
    grad_steps_per_epoch: int = 400
    first_epoch_denoiser_steps: int = 10_000
    first_epoch_rew_end_steps: int = 10_000
    first_epoch_actor_critic_steps: int = 5_000
    extra_epochs: int = 50
    """Epochs trained after the real-step budget is spent, without collection."""
    eval_every_epochs: int = 10
    eval_episodes: int = 4
    final_eval_episodes: int = 100
    epsilon: float = 0.01
    recency_weights: tuple[float, ...] = (0.1, 0.1, 0.1, 0.7)
    denoiser_seq_len: int = NUM_CONTEXT + 2
    """Frames per denoiser segment: 4 context + 1 target + 1 autoregressive target (DIAMOND's
    ``num_autoregressive_steps: 1``; ``NUM_CONTEXT + 1`` trains single-step only)."""
    rew_end_seq_len: int = 15 + NUM_CONTEXT
    rew_end_event_fraction: float = 0.0
    """Low-budget aid, off in ``paper``: the share of reward/end windows drawn around a step with a
    reward or an end (a uniform such step instead of a uniform step); DIAMOND draws none this way."""
    denoiser_reward_fraction: float = 0.0
    """Low-budget aid, off in ``paper``, 0.3 in ``cpu`` and ``small``: the share of denoiser
    windows drawn in the lead-up to a reward, their last frame among the ``denoiser_reward_lead``
    frames up to the one that shows it. In random Breakout play the ball rarely goes up, and a
    small model dreams every upward ball falling, so no brick ever breaks in its dream; 0.3
    balances the two directions (docs/presets.md)."""
    denoiser_reward_lead: int = 16
    """Frames before a reward that :attr:`denoiser_reward_fraction` draws from (16 = the
    imagination horizon + 1)."""
    denoiser_bounce_fraction: float = 0.0
    """Low-budget aid for Breakout, off in every preset: the share of denoiser windows whose
    targets show the ball sent back up by the paddle (:func:`diamond_env.evaluation.ball.bounce_steps`).
    A few windows in a hundred show it even in play that returns the ball, and a small model
    dreams the ball vanishing at the paddle instead (docs/studies/benchmarks-log.md, "the paddle
    probe"); an agent in such a dream cannot learn to return it."""


@dataclass(frozen=True)
class Config:
    """Everything a run needs; ``preset`` names where the numbers came from."""

    preset: str = "paper"
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    rew_end: RewEndConfig = field(default_factory=RewEndConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    denoiser_optim: OptimConfig = field(default_factory=OptimConfig)
    rew_end_optim: OptimConfig = field(default_factory=lambda: OptimConfig(max_grad_norm=100.0))
    actor_critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(weight_decay=0.0, max_grad_norm=100.0)
    )
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        return _from_dict(cls, data, "config")


def _from_dict(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected a subset of {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name) if _has_defaults(cls) else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _has_defaults(cls: Any) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _tiny() -> Config:
    return Config(
        preset="tiny",
        denoiser=DenoiserConfig(
            channels=(16, 16, 16, 16),
            depths=(1, 1, 1, 1),
            attn_depths=(False, False, False, False),
            cond_channels=32,
            action_emb_dim=8,
        ),
        rew_end=RewEndConfig(
            channels=(8, 8, 8, 8),
            depths=(1, 1, 1, 1),
            attn_depths=(False, False, False, False),
            cond_channels=16,
            lstm_dim=32,
        ),
        actor_critic=ActorCriticConfig(channels=(8, 8, 16, 16), lstm_dim=32),
        denoiser_optim=OptimConfig(batch_size=8, warmup_steps=10, lr=1e-3),
        rew_end_optim=OptimConfig(batch_size=8, warmup_steps=10, lr=1e-3, max_grad_norm=100.0),
        actor_critic_optim=OptimConfig(
            batch_size=8, warmup_steps=10, lr=1e-3, weight_decay=0.0, max_grad_norm=100.0
        ),
        imagination=ImaginationConfig(batch_size=8, horizon=5, context_preload=64),
        loop=LoopConfig(
            real_steps=1_000,
            initial_steps_min=200,
            initial_steps_max=400,
            initial_min_minority_rewards=1,
            steps_per_epoch=100,
            grad_steps_per_epoch=5,
            first_epoch_denoiser_steps=20,
            first_epoch_rew_end_steps=20,
            first_epoch_actor_critic_steps=10,
            extra_epochs=1,
            eval_every_epochs=5,
            eval_episodes=1,
            final_eval_episodes=2,
            rew_end_seq_len=5 + NUM_CONTEXT,
        ),
    )


def _small() -> Config:
    """Half the paper's widths, with the ``cpu`` preset's low-budget aids (diffusing the change
    from the last frame, pixels that move weighted 6, rounding, ``min_change``; reward/end
    windows around events, the change map, frame differences and weighted events; denoiser
    windows before rewards); the paper's learning rates (the ``cpu`` preset's 1e-3 was chosen
    for its smaller networks only)."""
    return Config(
        preset="small",
        denoiser=DenoiserConfig(
            channels=(32, 32, 32, 32), predict_change=True, quantize="round", change_weight=5.0
        ),
        sampler=SamplerConfig(min_change=6),
        rew_end=RewEndConfig(
            channels=(16, 16, 16, 16),
            lstm_dim=256,
            frame_difference=True,
            change_grid=16,
            event_weight=10.0,
        ),
        actor_critic=ActorCriticConfig(channels=(16, 16, 32, 32), lstm_dim=256),
        loop=LoopConfig(
            real_steps=20_000,
            initial_steps_min=2_000,
            initial_steps_max=5_000,
            grad_steps_per_epoch=100,
            first_epoch_denoiser_steps=2_000,
            first_epoch_rew_end_steps=2_000,
            first_epoch_actor_critic_steps=1_000,
            extra_epochs=10,
            eval_every_epochs=20,
            final_eval_episodes=20,
            rew_end_event_fraction=0.5,
            denoiser_reward_fraction=0.3,
        ),
    )


def _cpu() -> Config:
    """Sized for a 2-core CPU in minutes to hours (``make demo``): the tiny networks, widened where
    it is cheap, with the paper's imagination horizon, learning rates 1e-3 after a 20-step
    warm-up, DIAMOND's 4 + 1 + 1 denoiser loss, and every low-budget aid of docs/presets.md (why
    each one, and what it was measured to buy)."""
    return Config(
        preset="cpu",
        denoiser=DenoiserConfig(
            channels=(32, 32, 32, 32),
            depths=(1, 1, 1, 1),
            attn_depths=(False, False, False, False),
            cond_channels=64,
            action_emb_dim=16,
            predict_change=True,
            quantize="round",
            change_weight=5.0,
        ),
        sampler=SamplerConfig(min_change=6),
        rew_end=RewEndConfig(
            channels=(8, 8, 8, 8),
            depths=(1, 1, 1, 1),
            attn_depths=(False, False, False, False),
            cond_channels=16,
            lstm_dim=128,
            frame_difference=True,
            change_grid=16,
            event_weight=10.0,
        ),
        actor_critic=ActorCriticConfig(channels=(16, 16, 32, 32), lstm_dim=128),
        denoiser_optim=OptimConfig(batch_size=16, lr=1e-3, warmup_steps=20),
        rew_end_optim=OptimConfig(batch_size=16, lr=1e-3, warmup_steps=20, max_grad_norm=100.0),
        actor_critic_optim=OptimConfig(
            batch_size=16, lr=3e-4, weight_decay=0.0, max_grad_norm=100.0
        ),
        imagination=ImaginationConfig(batch_size=16, horizon=15, context_preload=1024),
        loop=LoopConfig(
            real_steps=10_000,
            initial_steps_min=2_000,
            initial_steps_max=5_000,
            grad_steps_per_epoch=20,
            first_epoch_denoiser_steps=1_000,
            first_epoch_rew_end_steps=1_000,
            first_epoch_actor_critic_steps=100,
            extra_epochs=10,
            eval_every_epochs=20,
            final_eval_episodes=10,
            rew_end_event_fraction=0.5,
            denoiser_reward_fraction=0.3,
        ),
    )


def get_preset(name: str) -> Config:
    """Return the named preset (``tiny``, ``cpu``, ``small`` or ``paper``)."""
    if name == "paper":
        return Config(preset="paper")
    if name == "small":
        return _small()
    if name == "tiny":
        return _tiny()
    if name == "cpu":
        return _cpu()
    raise ValueError(f"unknown preset {name!r}; expected one of {list(PRESETS)}")


def apply_overrides(config: Config, overrides: str) -> Config:
    """``config`` with fields replaced, from ``"section.field=value ..."`` (whitespace-separated).

    Values are JSON (``1e-3``, ``true``, ``[32, 32, 32, 32]``; a bare word is a string). The
    result is checked as a whole: an unknown section or field, or a value of another type than
    the field's default, raises ``ValueError`` naming it. ``preset`` keeps its name; what was
    overridden is recorded by the caller (``options.json``) and in the checkpoint's config.
    """
    data = config.to_dict()
    for item in overrides.split():
        key, sep, text = item.partition("=")
        path = key.split(".")
        if not sep or len(path) != 2 or not all(path):
            raise ValueError(f"override {item!r}: expected section.field=value")
        section, name = path
        if section not in data or not isinstance(data[section], dict):
            sections = sorted(k for k, v in data.items() if isinstance(v, dict))
            raise ValueError(f"override {item!r}: unknown section {section!r}; one of {sections}")
        if name not in data[section]:
            raise ValueError(
                f"override {item!r}: {section} has no field {name!r}; one of "
                f"{sorted(data[section])}"
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        old = data[section][name]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if type(value) is not type(old):
            raise ValueError(
                f"override {item!r}: expected a {type(old).__name__} like {old!r}, "
                f"got {type(value).__name__}"
            )
        data[section][name] = value
    return Config.from_dict(data)
