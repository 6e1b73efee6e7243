"""Karras schedule and samplers, checked on analytic denoisers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diamond_env.config import SamplerConfig
from diamond_env.frames import quantize
from diamond_env.models.sampler import karras_sigmas, sample

MU, S0 = 0.1, 0.3
"""Per-pixel Gaussian data N(MU, S0²) for the exact denoiser below."""


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Perfect denoiser of N(MU, S0²) data: E[x0 | x] = MU + S0² / (S0² + σ²) (x - MU)."""
    s = sigma.view(-1, 1, 1, 1)
    return MU + S0**2 / (S0**2 + s**2) * (x - MU)


def _noise(seed: int = 0) -> torch.Tensor:
    return torch.randn((4, 3, 16, 16), generator=torch.Generator().manual_seed(seed))


def test_karras_schedule_values() -> None:
    sigmas = karras_sigmas(3, 2e-3, 5.0, 7.0)
    assert sigmas.shape == (4,)
    assert sigmas[0].item() == pytest.approx(5.0, rel=1e-6)
    assert sigmas[2].item() == pytest.approx(2e-3, rel=1e-5)
    assert sigmas[3].item() == 0.0
    middle = (0.5 * (5.0 ** (1 / 7) + 2e-3 ** (1 / 7))) ** 7
    assert sigmas[1].item() == pytest.approx(middle, rel=1e-6)
    assert middle == pytest.approx(0.2831, abs=1e-4)
    assert torch.all(sigmas[1:] < sigmas[:-1])
    torch.testing.assert_close(karras_sigmas(1, 2e-3, 5.0, 7.0), torch.tensor([5.0, 0.0]))


def test_karras_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_steps"):
        karras_sigmas(0, 2e-3, 5.0, 7.0)
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(3, 6.0, 5.0, 7.0)


@pytest.mark.parametrize(
    "cfg",
    [
        SamplerConfig(),
        SamplerConfig(num_steps=1),
        SamplerConfig(num_steps=4, method="heun"),
        SamplerConfig(num_steps=4, s_churn=2.0),
    ],
)
def test_delta_data_is_recovered_exactly(cfg: SamplerConfig) -> None:
    point = quantize(torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(5)) * 2 - 1)

    def delta(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return point.expand_as(x)

    out = sample(delta, _noise(), cfg, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, point.expand_as(out), rtol=0, atol=1e-6)


def test_one_euler_step_returns_the_first_denoised_estimate() -> None:
    noise = _noise()
    out = sample(gaussian_denoiser, noise, SamplerConfig(num_steps=1, start="sigma_max"))
    expected = gaussian_denoiser(5.0 * noise, torch.full((4,), 5.0))
    torch.testing.assert_close(out, quantize(expected))


def test_default_start_is_unit_noise_as_in_diamond() -> None:
    # DIAMOND's sampler starts from x = randn although its first level is sigma_max = 5
    # (src/models/diffusion/diffusion_sampler.py:36): the first denoiser call sees x = noise.
    noise = _noise()
    seen: list[torch.Tensor] = []

    def spy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return gaussian_denoiser(x, sigma)

    out = sample(spy, noise, SamplerConfig(num_steps=1))
    torch.testing.assert_close(seen[0], noise)
    torch.testing.assert_close(out, quantize(gaussian_denoiser(noise, torch.full((4,), 5.0))))
    sample(spy, noise, SamplerConfig(num_steps=1, start="sigma_max"))
    torch.testing.assert_close(seen[-1], 5.0 * noise)
    with pytest.raises(ValueError, match="sampler.start"):
        sample(spy, noise, SamplerConfig(start="edm"))  # type: ignore[arg-type]


def test_euler_steps_follow_the_hand_update() -> None:
    noise = _noise()
    sig = [5.0, (0.5 * (5.0 ** (1 / 7) + 2e-3 ** (1 / 7))) ** 7, 2e-3, 0.0]
    x = 5.0 * noise
    for s, s_next in zip(sig[:-1], sig[1:], strict=True):
        d = gaussian_denoiser(x, torch.full((4,), s))
        x = d + (s_next / s) * (x - d)  # Euler: x + (s_next - s) (x - d) / s
    out = sample(gaussian_denoiser, noise, SamplerConfig(start="sigma_max"))
    torch.testing.assert_close(out, quantize(x))


def test_gaussian_data_converges_to_the_exact_ode_solution() -> None:
    noise = _noise()
    # the probability-flow ODE maps sigma_max * n to MU + S0 sigma_max / sqrt(S0² + sigma_max²) n
    exact = (MU + S0 * 5.0 / math.sqrt(S0**2 + 25.0) * noise).clamp(-1, 1)

    def error(method: str, steps: int) -> float:
        cfg = SamplerConfig(num_steps=steps, method=method, start="sigma_max")  # type: ignore[arg-type]
        out = sample(gaussian_denoiser, noise, cfg)
        return (out - exact).abs().max().item()

    assert error("heun", 50) < 0.02
    assert error("heun", 50) < error("heun", 10) < error("heun", 3)
    assert error("heun", 50) < error("euler", 50)


def test_denoiser_calls_and_noise_levels() -> None:
    seen: list[torch.Tensor] = []

    def spy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append(sigma.clone())
        return gaussian_denoiser(x, sigma)

    sample(spy, _noise(), SamplerConfig())
    assert len(seen) == 3 and all(s.shape == (4,) for s in seen)
    expected = karras_sigmas(3, 2e-3, 5.0, 7.0)[:-1]
    torch.testing.assert_close(torch.stack([s[0] for s in seen]), expected)
    seen.clear()
    sample(spy, _noise(), SamplerConfig(num_steps=3, method="heun"))
    assert len(seen) == 5  # two calls per step, one on the last step to sigma = 0


def test_churn_uses_the_generator_and_default_is_deterministic() -> None:
    noise = _noise()
    churn = SamplerConfig(num_steps=4, s_churn=1.0)

    def run(cfg: SamplerConfig, seed: int) -> torch.Tensor:
        return sample(gaussian_denoiser, noise, cfg, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(churn, 1), run(churn, 1))
    assert not torch.equal(run(churn, 1), run(churn, 2))
    torch.testing.assert_close(run(SamplerConfig(), 1), run(SamplerConfig(), 2))
    outside = dataclasses.replace(churn, s_tmin=10.0)  # no level inside [10, inf): no churn
    torch.testing.assert_close(
        run(outside, 1), run(dataclasses.replace(churn, num_steps=4, s_churn=0.0), 2)
    )


def test_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="method"):
        sample(gaussian_denoiser, _noise(), SamplerConfig(method="ddim"))  # type: ignore[arg-type]
