"""Context-noise augmentation (DIAMOND's CS:GO anti-drift setting): training, dream, files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from diamond_env.config import apply_overrides, get_preset
from diamond_env.frames import to_model
from diamond_env.models.denoiser import Denoiser
from diamond_env.world_model.model import ContextBank, WorldModel

NUM_ACTIONS = 4
MEANINGS = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def _denoiser(context_noise: bool, seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(get_preset("tiny").denoiser, context_noise=context_noise)
    model = Denoiser(cfg, NUM_ACTIONS)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _batch(b: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    obs = torch.rand((b, 4, 3, 64, 64), generator=g) * 2 - 1
    act = torch.randint(0, NUM_ACTIONS, (b, 4), generator=g)
    return obs, act, torch.rand((b, 3, 64, 64), generator=g) * 2 - 1


def test_off_keeps_the_network_and_its_parameters() -> None:
    torch.manual_seed(0)
    plain = Denoiser(get_preset("tiny").denoiser, NUM_ACTIONS)
    assert plain.noise_cond_emb is None
    assert "noise_cond_emb.freqs" not in plain.state_dict()
    on = _denoiser(True)
    assert on.state_dict()["noise_cond_emb.freqs"].shape == (16,)  # cond_channels 32 / 2


def test_denoise_sees_noised_contexts_and_their_level() -> None:
    model = _denoiser(True)
    obs, act, x = _batch()
    sigma = torch.full((3,), 0.7)
    eps = torch.randn(obs.shape, generator=torch.Generator().manual_seed(2))
    got = model.denoise(x, sigma, obs, act, 0.05, eps)
    # By hand: the network on the noised contexts, told ln(0.05)/4; the skip on the clean x.
    sc = model.scalings(sigma)
    c_cond = torch.full((3,), math.log(0.05) / 4)
    out = model.network(sc.c_in[:, None, None, None] * x, sc.c_noise, obs + 0.05 * eps, act, c_cond)
    want = sc.c_skip[:, None, None, None] * x + sc.c_out[:, None, None, None] * out
    torch.testing.assert_close(got, want)
    # Clean contexts embed a level of 0 (ln σ_c / 4 = 0), as DIAMOND's CS:GO network does.
    clean = model.denoise(x, sigma, obs, act)
    zero = model.network(sc.c_in[:, None, None, None] * x, sc.c_noise, obs, act, torch.zeros(3))
    want = sc.c_skip[:, None, None, None] * x + sc.c_out[:, None, None, None] * zero
    torch.testing.assert_close(clean, want)
    assert not torch.allclose(got, clean)


def test_context_noise_needs_a_trained_model_and_a_draw() -> None:
    obs, act, x = _batch()
    sigma = torch.full((3,), 0.7)
    with pytest.raises(ValueError, match="denoiser.context_noise"):
        _denoiser(False).denoise(x, sigma, obs, act, 0.01, torch.zeros_like(obs))
    with pytest.raises(ValueError, match="context_eps"):
        _denoiser(True).denoise(x, sigma, obs, act, 0.01, None)


def test_training_noises_the_contexts_after_the_other_draws() -> None:
    obs, act, target = _batch()
    model = _denoiser(True)
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    network = model.network

    def spy(x_in, c_noise, ctx, a, c_cond=None):  # type: ignore[no-untyped-def]
        seen.append((ctx, c_cond))
        return network(x_in, c_noise, ctx, a, c_cond)

    model.network = spy  # type: ignore[method-assign]
    model.compute_loss(obs, act, target, generator=torch.Generator().manual_seed(5))
    ctx, c_cond = seen[0]
    # The draws: σ, offset, ε (as without context noise), then σ_c, the contexts' offset and ε_c.
    g = torch.Generator().manual_seed(5)
    model.sample_training_sigma(3, torch.device("cpu"), g)
    torch.randn((3, 3, 1, 1), generator=g)
    torch.randn((3, 3, 64, 64), generator=g)
    sigma_c = model.sample_training_sigma(3, torch.device("cpu"), g)
    offset = 0.3 * torch.randn((3, 4, 3, 1, 1), generator=g)
    eps = torch.randn((3, 4, 3, 64, 64), generator=g)
    torch.testing.assert_close(ctx, obs + offset + eps * sigma_c[:, None, None, None, None])
    assert c_cond is not None
    torch.testing.assert_close(c_cond, sigma_c.log() / 4)


def _world_model(tmp: Path | None = None) -> WorldModel:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    bank = ContextBank(
        obs=torch.randint(0, 256, (3, 4, 64, 64, 3), dtype=torch.uint8, generator=g),
        act=torch.randint(0, 4, (3, 4), generator=g),
    )
    cfg = apply_overrides(
        get_preset("tiny"), "denoiser.context_noise=true sampler.context_noise=0.01"
    )
    model = WorldModel(cfg, "Breakout", MEANINGS, bank)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_dream_step_draws_context_noise_after_the_uniforms(tmp_path: Path) -> None:
    model = _world_model()
    obs, act = to_model(model.contexts.obs[:2]), model.contexts.act[:2]
    state = model.burn_in(obs, act)
    a = model.step(obs, act, state, generator=torch.Generator().manual_seed(3))
    b = model.step(obs, act, state, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.next_obs, b.next_obs)  # repeats with the same generator
    clean = dataclasses.replace(model.sampler_config, context_noise=0.0)
    c = model.step(obs, act, state, generator=torch.Generator().manual_seed(3), sampler=clean)
    assert not torch.equal(a.next_obs, c.next_obs)
    # Saved and loaded, the model keeps its embedding and dreams the same frames.
    loaded = WorldModel.load(model.save(tmp_path / "wm"))
    assert loaded.config.denoiser.context_noise and loaded.sampler_config.context_noise == 0.01
    d = loaded.step(obs, act, state, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.next_obs, d.next_obs)


def test_sampler_context_noise_is_checked() -> None:
    model = _world_model()
    obs, act = to_model(model.contexts.obs[:2]), model.contexts.act[:2]
    bad = dataclasses.replace(model.sampler_config, context_noise=-0.1)
    with pytest.raises(ValueError, match="sampler.context_noise"):
        model.step(obs, act, None, generator=torch.Generator().manual_seed(0), sampler=bad)


def test_a_dream_level_needs_a_model_trained_for_it() -> None:
    cfg = apply_overrides(get_preset("tiny"), "sampler.context_noise=0.005")
    with pytest.raises(ValueError, match="denoiser.context_noise"):
        WorldModel(cfg, "Breakout", MEANINGS)
