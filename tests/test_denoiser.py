"""EDM denoiser: preconditioning maths, wiring, loss, sizes and a short learning check."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diamond_env.config import get_preset
from diamond_env.models.blocks import SelfAttention2d, count_flops, count_params, num_groups
from diamond_env.models.denoiser import Denoiser, edm_scalings

NUM_ACTIONS = 4


def _tiny(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(get_preset("tiny").denoiser, NUM_ACTIONS)


def _batch(b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand((b, 4, 3, 64, 64), generator=g) * 2 - 1
    act = torch.randint(0, NUM_ACTIONS, (b, 4), generator=g)
    target = torch.rand((b, 3, 64, 64), generator=g) * 2 - 1
    return obs, act, target


def test_edm_scalings_match_hand_formulas() -> None:
    sigmas = [2e-3, 0.1, 0.5, 1.0, 5.0, 20.0]
    sc = edm_scalings(torch.tensor(sigmas, dtype=torch.float64), 0.5, 0.3)
    for i, sigma in enumerate(sigmas):
        s = math.sqrt(sigma**2 + 0.09)
        assert sc.c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + 0.25), rel=1e-12)
        assert sc.c_skip[i].item() == pytest.approx(0.25 / (s**2 + 0.25), rel=1e-12)
        assert sc.c_out[i].item() == pytest.approx(s * 0.5 / math.sqrt(s**2 + 0.25), rel=1e-12)
        assert sc.c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-12)
    # c_skip = sigma_data² c_in², c_out = s sigma_data c_in
    s = (torch.tensor(sigmas, dtype=torch.float64) ** 2 + 0.09).sqrt()
    torch.testing.assert_close(sc.c_skip, 0.25 * sc.c_in**2)
    torch.testing.assert_close(sc.c_out, s * 0.5 * sc.c_in)


def test_edm_scalings_limits() -> None:
    tiny_sigma = torch.tensor([1e-8], dtype=torch.float64)
    plain = edm_scalings(tiny_sigma, 0.5, 0.0)  # no offset noise: the usual EDM limits
    assert plain.c_skip.item() == pytest.approx(1.0, abs=1e-12)
    assert plain.c_out.item() == pytest.approx(0.0, abs=1e-7)
    # with offset noise the effective level never drops below sigma_off = 0.3
    offset = edm_scalings(tiny_sigma, 0.5, 0.3)
    assert offset.c_skip.item() == pytest.approx(0.25 / 0.34, rel=1e-9)
    assert offset.c_out.item() == pytest.approx(0.15 / math.sqrt(0.34), rel=1e-9)
    big = edm_scalings(torch.tensor([1e6], dtype=torch.float64), 0.5, 0.3)
    assert big.c_skip.item() == pytest.approx(0.0, abs=1e-12)
    assert big.c_out.item() == pytest.approx(0.5, rel=1e-9)


def test_denoise_is_c_skip_x_plus_c_out_f() -> None:
    model = _tiny()
    obs, act, _ = _batch()
    x = torch.randn(4, 3, 64, 64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0])
    sc = model.scalings(sigma)
    # the output conv's weight starts at zero (its bias keeps PyTorch's default, as in DIAMOND);
    # with the bias zeroed too, F = 0 and D = c_skip x
    with torch.no_grad():
        model.conv_out.bias.zero_()
    torch.testing.assert_close(
        model.denoise(x, sigma, obs, act), sc.c_skip[:, None, None, None] * x
    )
    with torch.no_grad():
        model.conv_out.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    expected = sc.c_skip[:, None, None, None] * x + sc.c_out[:, None, None, None] * torch.tensor(
        [0.1, -0.2, 0.3]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x, sigma, obs, act), expected)


def test_paper_architecture_sizes() -> None:
    cfg = get_preset("paper").denoiser
    model = Denoiser(cfg, NUM_ACTIONS)
    assert model.conv_in.in_channels == 15
    assert model.cond_proj[0].in_features == 256 and model.act_emb.embedding_dim == 64
    assert num_groups(64) == 2 and num_groups(16) == 1
    params = count_params(model)
    print(f"paper denoiser parameters: {params}")
    assert abs(params - 4.4e6) / 4.4e6 < 0.02
    resblock = model.unet.down[0][0]
    assert torch.count_nonzero(resblock.conv2.weight) == 0
    assert torch.count_nonzero(model.conv_out.weight) == 0


def test_paper_flops_per_frame() -> None:
    model = Denoiser(get_preset("paper").denoiser, NUM_ACTIONS)
    b = 2
    inputs = (
        torch.zeros(b, 3, 64, 64),
        torch.ones(b),
        torch.zeros(b, 4, 3, 64, 64),
        torch.zeros(b, 4, dtype=torch.int64),
    )
    flops = count_flops(model, inputs) / b  # a multiply-add counts as 2 FLOPs
    print(f"paper denoiser GFLOP per frame: {flops / 1e9:.3f}")
    assert abs(flops - 6.1e9) / 6.1e9 < 0.02
    conv_in = 2 * 15 * 64 * 9 * 64 * 64  # one conv by hand: 2 x in x out x k² x pixels
    assert count_flops(model.conv_in, (torch.zeros(b, 15, 64, 64),)) == b * conv_in


def test_self_attention_matches_hand_computation() -> None:
    torch.manual_seed(0)
    attn = SelfAttention2d(16)  # 2 heads of 8 channels
    torch.nn.init.normal_(attn.out.weight)
    x = torch.randn(2, 16, 4, 4)
    qkv = attn.qkv(attn.norm(x)).view(2, 3, 2, 8, 16)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (B, heads, head_dim, HW)
    weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(8), dim=-1)  # (B, heads, HW, HW)
    y = (v @ weights.transpose(-1, -2)).reshape(2, 16, 4, 4)
    # DIAMOND's residual is around the normalised input (src/models/blocks.py:64,72)
    torch.testing.assert_close(attn(x), attn.norm(x) + attn.out(y), rtol=1e-5, atol=1e-5)


def test_loss_matches_hand_computation_at_init() -> None:
    model = _tiny()
    with torch.no_grad():
        model.conv_out.bias.zero_()  # F = 0 at init
    obs, act, target = _batch()
    loss = model.compute_loss(obs, act, target, generator=torch.Generator().manual_seed(3))
    # replay the draws in the documented order: sigma, offset, eps
    g = torch.Generator().manual_seed(3)
    sigma = (-0.4 + 1.2 * torch.randn(4, generator=g)).exp().clamp(2e-3, 20.0)
    offset = 0.3 * torch.randn((4, 3, 1, 1), generator=g)
    eps = torch.randn((4, 3, 64, 64), generator=g)
    x = target + offset + sigma.view(4, 1, 1, 1) * eps
    s2 = sigma**2 + 0.09
    c_skip = (0.25 / (s2 + 0.25)).view(4, 1, 1, 1)
    c_out = (s2.sqrt() * 0.5 / (s2 + 0.25).sqrt()).view(4, 1, 1, 1)
    goal = (target - c_skip * x) / c_out  # F = 0 at init
    torch.testing.assert_close(loss, goal.pow(2).mean(), rtol=1e-5, atol=1e-6)


def test_masked_samples_do_not_count() -> None:
    model = _tiny()
    obs, act, target = _batch()
    mask = torch.tensor([True, False, True, False])
    other = target.clone()
    other[1] = 1.0
    other[3] = -1.0

    def loss(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return model.compute_loss(obs, act, t, m, generator=torch.Generator().manual_seed(1))

    torch.testing.assert_close(loss(target, mask), loss(other, mask))
    assert not torch.allclose(loss(target, torch.ones(4, dtype=torch.bool)), loss(other, mask))
    none = loss(target, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0
    none.backward()  # still part of the graph


def test_bad_inputs_raise() -> None:
    model = _tiny()
    obs, act, target = _batch()
    with pytest.raises(ValueError, match="obs_ctx"):
        model.compute_loss(obs[:, :3], act, target)
    with pytest.raises(TypeError, match="act_ctx"):
        model.compute_loss(obs, act.int(), target)
    with pytest.raises(ValueError, match="mask"):
        model.compute_loss(obs, act, target, torch.ones(4))
    bad = dataclasses.replace(get_preset("tiny").denoiser, action_emb_dim=4)
    with pytest.raises(ValueError, match="cond_channels"):
        Denoiser(bad, NUM_ACTIONS)
    with pytest.raises(ValueError, match="num_actions"):
        Denoiser(get_preset("tiny").denoiser, 0)


def test_loss_falls_on_a_fixed_batch() -> None:
    model = _tiny(seed=1)
    b = 4
    # synthetic frames: a bright square whose position follows the action
    obs = torch.full((b, 4, 3, 64, 64), -1.0)
    act = torch.arange(b * 4).view(b, 4) % NUM_ACTIONS
    target = torch.full((b, 3, 64, 64), -1.0)
    for i in range(b):
        for t in range(4):
            obs[i, t, :, 8 * t : 8 * t + 12, 10 * i : 10 * i + 12] = 1.0
        target[i, :, 32:44, 10 * i + 4 * act[i, -1] : 10 * i + 4 * act[i, -1] + 12] = 1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def eval_loss() -> float:
        with torch.no_grad():
            return sum(
                model.compute_loss(obs, act, target, generator=torch.Generator().manual_seed(s))
                for s in range(3)
            ).item()

    before = eval_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        model.compute_loss(obs, act, target, generator=g).backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)
