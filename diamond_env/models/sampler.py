"""Karras et al. (2022) samplers as pure functions of a ``denoise(x, sigma) -> D`` callable.

``x`` and ``D`` are float ``(B, 3, H, W)``; ``sigma`` is float ``(B,)`` (every sample shares the
current noise level). The callable closes over whatever it conditions on (past frames, actions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from diamond_env.config import SamplerConfig
from diamond_env.frames import quantize

if TYPE_CHECKING:
    from diamond_env.models.denoiser import Denoiser

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoise(x (B, C, H, W), sigma (B,)) -> D (B, C, H, W)``: the denoised estimate."""


def draw_normal(
    shape: tuple[int, ...], device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Standard normal float32 tensor on ``device``, drawn from ``generator`` when given.

    The draw happens on the generator's own device (then moves), so a CPU generator gives the
    same numbers whatever device the result lives on.
    """
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def karras_sigmas(
    num_steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise levels ``(num_steps + 1,)`` float32: ``num_steps`` levels from ``sigma_max`` down to
    ``sigma_min`` evenly spaced in ``sigma ** (1 / rho)``, then a final 0 (computed in float32 as
    DIAMOND's ``build_sigmas`` does, so the levels are the same floats)."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an int >= 1, got {num_steps!r}")
    if not 0.0 < sigma_min <= sigma_max:
        raise ValueError(
            f"sigma_min, sigma_max: expected 0 < sigma_min <= sigma_max, got {sigma_min}, "
            f"{sigma_max}"
        )
    if rho <= 0:
        raise ValueError(f"rho: expected > 0, got {rho}")
    ramp = torch.linspace(0, 1, num_steps, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


SAMPLER_STARTS = ("unit", "sigma_max")


def _check_config(cfg: SamplerConfig) -> None:
    if cfg.method not in ("euler", "heun"):
        raise ValueError(f"sampler.method: expected 'euler' or 'heun', got {cfg.method!r}")
    if cfg.start not in SAMPLER_STARTS:
        raise ValueError(
            f"sampler.start: expected one of {list(SAMPLER_STARTS)}, got {cfg.start!r}"
        )
    if not isinstance(cfg.min_change, int) or not 0 <= cfg.min_change <= 255:
        raise ValueError(f"sampler.min_change: expected an int in [0, 255], got {cfg.min_change!r}")
    if cfg.s_churn < 0:
        raise ValueError(f"sampler.s_churn: expected >= 0, got {cfg.s_churn}")
    if not 0.0 <= cfg.context_noise <= 1.0:
        raise ValueError(f"sampler.context_noise: expected in [0, 1], got {cfg.context_noise!r}")


def sample(
    denoise: DenoiseFn,
    noise: torch.Tensor,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    origin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from the first Karras level down to sigma = 0.

    ``noise`` is standard normal (B, C, H, W); callers draw it to control randomness. The start is
    ``noise`` itself (``cfg.start == "unit"``, DIAMOND's sampler and what its trained models
    expect, although the first level is ``sigma_max``) or ``sigma_max * noise`` (``"sigma_max"``,
    the EDM paper's start). Euler steps (``cfg.method == "euler"``) or Heun's second-order
    correction (Euler on the last step to 0). With ``cfg.s_churn > 0`` noise is re-injected
    (drawn from ``generator``) at levels in ``[s_tmin, s_tmax]``, and, as in DIAMOND's code,
    ``denoise`` is then still evaluated at the level ``sigma`` before the churn. The arithmetic
    follows DIAMOND's ``DiffusionSampler.sample`` step for step (float32 levels). Returns float
    (B, C, H, W) clamped to [-1, 1] and rounded to the 256 levels of a uint8 frame (the last
    Euler step lands on the denoiser's quantised output up to rounding error). ``origin``
    (B, C, H, W), when given, is added to the start: the centre of a denoiser that diffuses the
    change from it (:meth:`Denoiser.origin`).
    """
    _check_config(cfg)
    sigmas = karras_sigmas(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, noise.device)
    gamma_max = min(cfg.s_churn / cfg.num_steps, math.sqrt(2.0) - 1.0)
    batch = noise.shape[0]
    x = noise if cfg.start == "unit" else cfg.sigma_max * noise
    if origin is not None:
        x = x + origin
    for i in range(cfg.num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = gamma_max if cfg.s_tmin <= float(sigma) <= cfg.s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0.0:
            extra = draw_normal(tuple(x.shape), x.device, generator).to(x.dtype)
            x = x + extra * cfg.s_noise * (sigma_hat**2 - sigma**2) ** 0.5
        slope = (x - denoise(x, sigma.expand(batch))) / sigma_hat
        dt = sigma_next - sigma_hat
        if cfg.method == "euler" or float(sigma_next) == 0.0:
            x = x + slope * dt
        else:
            x_next = x + slope * dt
            slope_next = (x_next - denoise(x_next, sigma_next.expand(batch))) / sigma_next
            x = x + (slope + slope_next) / 2 * dt
    return quantize(x)


def next_frame(
    denoiser: Denoiser,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    denoise_fn: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """The whole dreamt frame: the sampler's steps from ``noise`` around ``denoiser.origin(obs)``
    with each denoised estimate put on the 256 levels (``denoiser.quantize``), then the pixels
    that moved by fewer than ``cfg.min_change`` levels in every channel set back to the last
    context frame.

    ``obs`` (B, L, 3, H, W) float in [-1, 1] and ``act`` (B, L) condition the denoiser; ``noise``
    (B, 3, H, W) is standard normal. With ``cfg.context_noise`` > 0 the context frames are seen
    with that much noise, drawn once from ``generator`` and shared by the steps. ``denoise_fn``
    stands in for ``denoiser.denoise`` (same signature and result; e.g. a CUDA-graph replay of
    it). Returns float (B, 3, H, W) on the 256 levels.
    """
    run = denoiser.denoise if denoise_fn is None else denoise_fn
    context_eps = None
    if cfg.context_noise > 0.0:
        context_eps = draw_normal(tuple(obs.shape), obs.device, generator).to(obs.dtype)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if context_eps is None:
            return denoiser.quantize(run(x, sigma, obs, act))
        return denoiser.quantize(run(x, sigma, obs, act, cfg.context_noise, context_eps))

    frame = sample(denoise, noise, cfg, generator, origin=denoiser.origin(obs))
    if cfg.min_change > 0:
        last = obs[:, -1]
        levels = (frame - last).abs().mul(127.5).round().amax(dim=1, keepdim=True)
        frame = torch.where(levels < cfg.min_change, last, frame)
    return frame
