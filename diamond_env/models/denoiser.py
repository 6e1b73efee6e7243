"""EDM denoiser of the next frame, conditioned on past frames and actions (docs/method.md §2.1).

Frames are float ``(..., 3, H, W)`` in [-1, 1]; actions are int64 indices of the game's minimal
action set. Noise levels ``sigma`` are float ``(B,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diamond_env.config import DenoiserConfig
from diamond_env.frames import quantize
from diamond_env.models.blocks import (
    FourierFeatures,
    UNet,
    check_levels,
    check_width,
    conv3x3,
    group_norm,
    zero_init,
)
from diamond_env.models.sampler import draw_normal
from diamond_env.run.safe_io import MAX_CONTEXT, MAX_WIDTH


@dataclass(frozen=True)
class EdmScalings:
    """EDM preconditioning coefficients, each float ``(B,)``."""

    c_in: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_noise: torch.Tensor


def edm_scalings(sigma: torch.Tensor, sigma_data: float, sigma_offset: float) -> EdmScalings:
    """Preconditioning for noise level ``sigma`` (B,), offset noise folded into ``s``.

    With ``s = sqrt(sigma² + sigma_offset²)``: ``c_in = 1/sqrt(s² + σd²)``,
    ``c_skip = σd²/(s² + σd²)``, ``c_out = s sqrt(c_skip)`` (= ``s σd / sqrt(s² + σd²)``),
    ``c_noise = ln(s) / 4``. The operations follow DIAMOND's order
    (``src/models/diffusion/denoiser.py``), so converted models reproduce its numbers bit for bit.
    """
    s = (sigma.pow(2) + sigma_offset**2).sqrt()
    total = s.pow(2) + sigma_data**2
    c_skip = sigma_data**2 / total
    return EdmScalings(
        c_in=1 / total.sqrt(),
        c_skip=c_skip,
        c_out=s * c_skip.sqrt(),
        c_noise=s.log() / 4,
    )


def quantize_floor(frames: torch.Tensor) -> torch.Tensor:
    """DIAMOND's quantisation of a denoised frame: clamp to [-1, 1], map to [0, 255], *floor* to an
    integer level, map back (``src/models/diffusion/denoiser.py``, ``wrap_model_output``)."""
    levels = frames.clamp(-1, 1).add(1).div(2).mul(255).floor()
    return levels.div(255).mul(2).sub(1)


QUANTIZERS = {"floor": quantize_floor, "round": quantize}
"""``config.quantize`` -> how a denoised frame goes to the 256 levels (``"round"``: the nearest
level, as the sampler's own output; no half-level bias downwards)."""


def _image(t: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) for broadcasting against frames."""
    return t[:, None, None, None]


class Denoiser(nn.Module):
    """Preconditioned U-Net ``D(x; σ, past frames, past actions)`` and its training loss."""

    def __init__(self, config: DenoiserConfig, num_actions: int) -> None:
        super().__init__()
        if not isinstance(num_actions, int) or num_actions < 1:
            raise ValueError(f"num_actions: expected a positive int, got {num_actions!r}")
        check_levels("DenoiserConfig", config.channels, config.depths, config.attn_depths)
        check_width("DenoiserConfig.cond_channels", config.cond_channels)
        check_width("DenoiserConfig.action_emb_dim", config.action_emb_dim)
        check_width("DenoiserConfig.num_context", config.num_context, MAX_CONTEXT)
        check_width("DenoiserConfig.img_channels", config.img_channels, MAX_CONTEXT)
        check_width("num_actions", num_actions, MAX_WIDTH)
        if config.num_context * config.action_emb_dim != config.cond_channels:
            raise ValueError(
                "DenoiserConfig: num_context * action_emb_dim must equal cond_channels (the action "
                f"embeddings are added to the noise features), got {config.num_context} * "
                f"{config.action_emb_dim} != {config.cond_channels}"
            )
        if config.quantize not in QUANTIZERS:
            raise ValueError(
                f"DenoiserConfig.quantize: expected one of {sorted(QUANTIZERS)}, got "
                f"{config.quantize!r}"
            )
        if not config.change_weight >= 0.0:
            raise ValueError(
                f"DenoiserConfig.change_weight: expected >= 0, got {config.change_weight!r}"
            )
        self.config = config
        self.num_actions = num_actions
        c0, cond = config.channels[0], config.cond_channels
        self.noise_emb = FourierFeatures(cond)
        # Only with context noise, so that other models keep DIAMOND's parameters and RNG order.
        self.noise_cond_emb = FourierFeatures(cond) if config.context_noise else None
        self.act_emb = nn.Embedding(num_actions, config.action_emb_dim)
        self.cond_proj = nn.Sequential(nn.Linear(cond, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.conv_in = conv3x3((config.num_context + 1) * config.img_channels, c0)
        self.unet = UNet(cond, config.channels, config.depths, config.attn_depths)
        self.norm_out = group_norm(c0)
        self.conv_out = zero_init(conv3x3(c0, config.img_channels), bias=False)

    def scalings(self, sigma: torch.Tensor) -> EdmScalings:
        """:func:`edm_scalings` with this model's ``sigma_data`` and offset-noise std."""
        return edm_scalings(sigma, self.config.sigma_data, self.config.sigma_offset_noise)

    def _check_context(self, obs_ctx: torch.Tensor, act_ctx: torch.Tensor, x: torch.Tensor) -> None:
        cfg = self.config
        expected = (x.shape[0], cfg.num_context, cfg.img_channels, *x.shape[-2:])
        if tuple(obs_ctx.shape) != expected:
            raise ValueError(f"obs_ctx: expected shape {expected}, got {tuple(obs_ctx.shape)}")
        if tuple(act_ctx.shape) != expected[:2]:
            raise ValueError(f"act_ctx: expected shape {expected[:2]}, got {tuple(act_ctx.shape)}")
        if act_ctx.dtype != torch.int64:
            raise TypeError(f"act_ctx: expected dtype torch.int64, got {act_ctx.dtype}")

    def network(
        self,
        x_in: torch.Tensor,
        c_noise: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        c_noise_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw network ``F``: scaled noisy frame ``x_in`` (B, 3, H, W), ``c_noise`` (B,),
        context frames (B, L, 3, H, W) in [-1, 1], actions (B, L) int64 -> (B, 3, H, W).
        ``c_noise_cond`` (B,): ``ln(σ_c) / 4`` of the context frames' noise, read only with
        ``config.context_noise`` (None = clean contexts, embedded as 0 like DIAMOND's CS:GO code)."""
        cond = self.noise_emb(c_noise) + self.act_emb(act_ctx).flatten(1)
        if self.noise_cond_emb is not None:
            if c_noise_cond is None:
                c_noise_cond = torch.zeros_like(c_noise)
            cond = cond + self.noise_cond_emb(c_noise_cond)
        cond = self.cond_proj(cond)
        ctx = obs_ctx.flatten(1, 2) / self.config.sigma_data
        h = self.conv_in(torch.cat([ctx, x_in], dim=1))
        h = self.unet(h, cond)
        return self.conv_out(F.silu(self.norm_out(h)))

    def denoise(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        context_sigma: float = 0.0,
        context_eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoised estimate ``D = c_skip x + c_out F`` of the next frame (B, 3, H, W).

        ``x`` (B, 3, H, W) noisy frame, ``sigma`` (B,) or scalar noise level, ``obs_ctx``
        (B, L, 3, H, W) float in [-1, 1], ``act_ctx`` (B, L) int64 (``act_ctx[:, -1]`` is the
        action taken at the last context frame). No clamping or quantisation here. With
        ``config.context_noise`` and ``context_sigma`` > 0, the network sees the context frames
        plus ``context_sigma * context_eps`` (``context_eps`` standard normal, shaped like
        ``obs_ctx``) and is told that level; the change is still taken from the clean last frame.
        """
        self._check_context(obs_ctx, act_ctx, x)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        sc = self.scalings(sigma)
        origin = self.origin(obs_ctx)
        if origin is not None:
            x = x - origin
        c_noise_cond = None
        if context_sigma > 0.0:
            if self.noise_cond_emb is None:
                raise ValueError(
                    "context_sigma > 0 needs a denoiser trained with denoiser.context_noise"
                )
            if context_eps is None or context_eps.shape != obs_ctx.shape:
                raise ValueError(f"context_eps: expected a tensor of shape {tuple(obs_ctx.shape)}")
            obs_ctx = obs_ctx + context_sigma * context_eps
            c_noise_cond = x.new_full((x.shape[0],), math.log(context_sigma) / 4)
        out = self.network(_image(sc.c_in) * x, sc.c_noise, obs_ctx, act_ctx, c_noise_cond)
        denoised = _image(sc.c_skip) * x + _image(sc.c_out) * out
        return denoised if origin is None else denoised + origin

    def quantize(self, frames: torch.Tensor) -> torch.Tensor:
        """Put a denoised frame on the 256 levels (``config.quantize``: DIAMOND floors)."""
        return QUANTIZERS[self.config.quantize](frames)

    def origin(self, obs_ctx: torch.Tensor) -> torch.Tensor | None:
        """What the diffusion is centred on: the last context frame (B, 3, H, W) with
        ``config.predict_change``, else None (the frame itself is diffused, as in DIAMOND).
        Samplers start at ``origin + noise``."""
        return obs_ctx[:, -1] if self.config.predict_change else None

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
    ) -> torch.Tensor:
        """Same as :meth:`denoise`."""
        return self.denoise(x, sigma, obs_ctx, act_ctx)

    def sample_training_sigma(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training noise levels (B,): ``ln σ ~ N(loc, scale²)`` clipped to [min, max]."""
        cfg = self.config
        z = draw_normal((batch_size,), device, generator)
        sigma = (cfg.train_log_sigma_loc + cfg.train_log_sigma_scale * z).exp()
        return sigma.clamp(cfg.train_sigma_min, cfg.train_sigma_max)

    def _loss_term(
        self,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator | None,
        count: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One EDM loss term and the quantised one-shot denoised frame (no gradient); with
        ``mask``, the mean over the unmasked samples, or the sum divided by ``count``."""
        self._check_context(obs_ctx, act_ctx, target)
        b, c = target.shape[:2]
        sigma = self.sample_training_sigma(b, target.device, generator)
        offset = self.config.sigma_offset_noise * draw_normal(
            (b, c, 1, 1), target.device, generator
        )
        eps = draw_normal(tuple(target.shape), target.device, generator)
        origin = self.origin(obs_ctx)
        clean = target if origin is None else target - origin
        x = clean + offset + eps * _image(sigma)
        sc = self.scalings(sigma)
        net_ctx, c_noise_cond = obs_ctx, None
        if self.noise_cond_emb is not None:  # drawn after σ, offset and ε: their streams stay
            sigma_c = self.sample_training_sigma(b, target.device, generator)
            offset_c = self.config.sigma_offset_noise * draw_normal(
                (b, obs_ctx.shape[1], c, 1, 1), target.device, generator
            )
            eps_c = draw_normal(tuple(obs_ctx.shape), target.device, generator)
            net_ctx = obs_ctx + offset_c + eps_c * sigma_c[:, None, None, None, None]
            c_noise_cond = sigma_c.log() / 4
        out = self.network(_image(sc.c_in) * x, sc.c_noise, net_ctx, act_ctx, c_noise_cond)
        goal = (clean - _image(sc.c_skip) * x) / _image(sc.c_out)
        squared = (out - goal).pow(2)
        if self.config.change_weight > 0.0:
            changed = (target - obs_ctx[:, -1]).abs().amax(dim=1, keepdim=True) > 1e-3
            weight = 1.0 + self.config.change_weight * changed.to(squared.dtype)
            weight = weight.expand_as(squared).flatten(1)
            per_sample = (squared.flatten(1) * weight).sum(dim=1) / weight.sum(dim=1)
        else:
            per_sample = squared.flatten(1).mean(dim=1)
        with torch.no_grad():
            denoised = _image(sc.c_skip) * x + _image(sc.c_out) * out
            denoised = self.quantize(denoised if origin is None else denoised + origin)
        if mask is None:
            return per_sample.mean(), denoised
        if tuple(mask.shape) != (b,) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask: expected a bool tensor of shape ({b},), got {mask.dtype} "
                f"{tuple(mask.shape)}"
            )
        weights = mask.to(per_sample.dtype)
        total = weights.sum() if count is None else count.to(weights)
        return (per_sample * weights).sum() / total.clamp(min=1.0), denoised

    def compute_loss(
        self,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """EDM loss: MSE between ``F`` and ``(x0 - c_skip x) / c_out`` (a scalar tensor).

        ``obs_ctx`` (B, L, 3, H, W) and ``target`` (B, 3, H, W) float in [-1, 1]; ``act_ctx``
        (B, L) int64; ``mask`` (B,) bool, False excludes a sample (a padded target). The noisy
        input is ``x = x0 + offset + σ ε`` with a per-sample, per-channel offset ~ N(0, σ_off²);
        σ, the offset and ε are drawn in that order. Returns 0 (still differentiable) when every
        sample is masked.
        """
        return self._loss_term(obs_ctx, act_ctx, target, mask, generator)[0]

    def compute_sequence_loss(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DIAMOND's training loss on segments of ``L + 1 + K`` frames: the mean of ``K + 1``
        terms of :meth:`compute_loss`.

        Term ``i`` predicts frame ``L + i`` from frames ``i .. L + i - 1`` and their actions; from
        the second term on, the last context frame is the previous term's quantised one-shot
        prediction (clamped, floored to 8 bits, no gradient) rather than the real frame, which
        teaches the model to carry on from its own outputs (DIAMOND ``num_autoregressive_steps``,
        ``src/models/diffusion/denoiser.py``). ``obs`` (B, S, 3, H, W) float in [-1, 1]; ``act``
        (B, S') int64 with ``S' >= S - 1`` (action ``j`` taken at frame ``j``); ``mask`` (B, S)
        bool, False for padded frames (a term whose target is padded does not count for that
        sample). ``counts`` (K + 1,): the number of unmasked targets each term divides by
        (default: this batch's; data-parallel training passes the counts over all ranks).
        """
        num_context = self.config.num_context
        num_terms = obs.shape[1] - num_context
        if obs.ndim != 5 or num_terms < 1:
            raise ValueError(
                f"obs: expected (B, S, C, H, W) with S > {num_context}, got {tuple(obs.shape)}"
            )
        if tuple(mask.shape) != tuple(obs.shape[:2]) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask: expected bool of shape {tuple(obs.shape[:2])}, got {mask.dtype} "
                f"{tuple(mask.shape)}"
            )
        frames = obs.clone()
        total = obs.new_zeros(())
        for i in range(num_terms):
            target_index = num_context + i
            term, denoised = self._loss_term(
                frames[:, i:target_index],
                act[:, i:target_index],
                frames[:, target_index],
                mask[:, target_index],
                generator,
                None if counts is None else counts[i],
            )
            total = total + term
            frames[:, target_index] = denoised
        return total / num_terms
