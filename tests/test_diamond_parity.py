"""Our networks against DIAMOND's own code (github eloialonso/diamond @5bcd159).

``tests/data/diamond_agent.safetensors`` is a reduced-size DIAMOND agent state dict and
``tests/data/diamond_io.safetensors`` DIAMOND's outputs on fixed inputs, both written by
``tests/make_diamond_fixtures.py`` running DIAMOND's code (see its docstring to regenerate them,
or ``--paper-check`` to run the same comparison at paper size). Where the expected values come
from in DIAMOND's code:

* denoiser ``F`` and ``D``: ``src/models/diffusion/denoiser.py`` (``compute_model_output``,
  ``denoise``, with the floor quantisation of ``wrap_model_output``);
* samplers: ``src/models/diffusion/diffusion_sampler.py`` (``sample``; unit-noise start, churn);
* reward/end logits and LSTM state: ``src/models/rew_end_model.py`` (``predict_rew_end``);
* actor-critic: ``src/models/actor_critic.py`` (``predict_act_value``, ``forward`` for the loss,
  ``compute_lambda_returns``);
* denoiser loss: ``Denoiser.forward`` with ``num_autoregressive_steps = 1`` (6-frame segments);
* reward/end loss: ``RewEndModel.forward``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diamond_env.config import SamplerConfig
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.models.denoiser import Denoiser, quantize_floor
from diamond_env.models.rew_end import RewEndModel
from diamond_env.models.sampler import sample
from diamond_env.training.returns import actor_critic_loss, lambda_returns
from diamond_env.world_model.diamond_format import convert, load_into

DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-5


def build(state: dict[str, torch.Tensor]) -> tuple[Denoiser, RewEndModel, ActorCritic]:
    """Our three networks holding a converted DIAMOND state dict."""
    ckpt = convert(state)
    den = Denoiser(ckpt.denoiser_config, ckpt.num_actions)
    load_into(den, ckpt.denoiser, "denoiser")
    rew_end = RewEndModel(ckpt.rew_end_config, ckpt.num_actions)
    load_into(rew_end, ckpt.rew_end, "rew_end")
    ac = ActorCritic(ckpt.actor_critic_config, ckpt.num_actions)
    load_into(ac, ckpt.actor_critic, "actor_critic")
    return den.eval(), rew_end.eval(), ac.eval()


def to_float(frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The stored uint8 frames in [-1, 1], mapped as DIAMOND maps them; padding is 0.0."""
    out = frames.float().div(255).mul(2).sub(1)
    if mask is not None:
        out[~mask] = 0.0
    return out


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.double() - b.double()).abs().max())


def outside_floor_bin(denoised: torch.Tensor, levels: torch.Tensor) -> float:
    """How far (in [-1, 1] units) our denoised frame lies outside the bins ``[L, L + 1)`` that
    DIAMOND's floored uint8 ``levels`` stand for: 0 when flooring ours gives DIAMOND's levels. A
    value that float error puts a hair across a level boundary floors one level away on some
    CPUs; this measure counts that hair, not the level."""
    assert denoised.shape == levels.shape, (denoised.shape, levels.shape)
    ours = denoised.double().clamp(-1, 1).add(1).div(2).mul(255)
    theirs = levels.double()
    below, above = (theirs - ours).clamp(min=0), (ours - theirs - 1).clamp(min=0)
    above = torch.where(theirs == 255, ours - 255, above)  # the top bin is the single value 255
    return float(torch.maximum(below, above).max()) / 127.5


@torch.no_grad()
def _network_diffs(
    nets: tuple[Denoiser, RewEndModel, ActorCritic], io: dict[str, torch.Tensor]
) -> dict[str, float]:
    den, rew_end, ac = nets
    diffs: dict[str, float] = {}
    obs, act, x = to_float(io["den_obs"]), io["den_act"], io["den_x"]
    for k, s in enumerate(io["den_sigmas"].tolist()):
        sigma = torch.full((x.shape[0],), s)
        sc = den.scalings(sigma)
        f = den.network(sc.c_in[:, None, None, None] * x, sc.c_noise, obs, act)
        diffs[f"den_F_{k}"] = _max_diff(f, io[f"den_F_{k}"])
        diffs[f"den_D_{k}"] = outside_floor_bin(den.denoise(x, sigma, obs, act), io[f"den_D_{k}"])

    def denoise(xx: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return quantize_floor(den.denoise(xx, sigma, obs, act))

    samplers = {
        "euler": SamplerConfig(),
        "heun": SamplerConfig(method="heun"),
        "churn": SamplerConfig(s_churn=1.0),
    }
    for name, cfg in samplers.items():
        gen = torch.Generator().manual_seed(11)
        noise = torch.randn(x.shape, generator=gen)
        diffs["sample_noise"] = _max_diff(noise, io["sample_noise"])
        diffs[f"sample_{name}"] = _max_diff(sample(denoise, noise, cfg, gen), io[f"sample_{name}"])

    seq, seq_act = to_float(io["re_obs"]), io["re_act"]
    _, _, (h, c) = rew_end(seq[:, :3], seq_act[:, :3], seq[:, 1:4])
    diffs["re_burn_h"], diffs["re_burn_c"] = (
        _max_diff(h, io["re_burn_h"]),
        _max_diff(c, io["re_burn_c"]),
    )
    lr, le, (h, c) = rew_end(seq[:, 3:7], seq_act[:, 3:7], seq[:, 4:8], (h, c))
    diffs["re_logits_rew"] = _max_diff(lr, io["re_logits_rew"])
    diffs["re_logits_end"] = _max_diff(le, io["re_logits_end"])
    diffs["re_h"], diffs["re_c"] = _max_diff(h, io["re_h"]), _max_diff(c, io["re_c"])

    state = None
    logits, values = [], []
    ac_obs = to_float(io["ac_obs"])
    for t in range(ac_obs.shape[1]):
        lg, v, state = ac(ac_obs[:, t], state)
        logits.append(lg)
        values.append(v)
    diffs["ac_logits"] = _max_diff(torch.stack(logits, 1), io["ac_logits"])
    diffs["ac_values"] = _max_diff(torch.stack(values, 1), io["ac_values"])
    return diffs


def _returns(io: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our λ-returns on DIAMOND's rollout: its ``val_bootstrap[t]`` is V of the frame step ``t``
    led to, which is our ``values[t + 1]`` (no end) and ``final_values[t]`` (truncation)."""
    vb = io["lr_val_bootstrap"]
    values = torch.cat([torch.zeros_like(vb[:, :1]), vb], dim=1)
    return lambda_returns(
        io["lr_rew"],
        values,
        io["lr_end"].bool(),
        io["lr_trunc"].bool(),
        0.985,
        0.95,
        final_values=vb,
    )


def _loss_diffs(
    nets: tuple[Denoiser, RewEndModel, ActorCritic], io: dict[str, torch.Tensor]
) -> dict[str, float]:
    den, rew_end, _ = nets
    diffs = {"lambda_returns": _max_diff(_returns(io), io["lambda_returns"])}
    loss, _ = actor_critic_loss(
        io["acl_logits"], io["acl_val"], io["acl_act"], _returns(io), entropy_weight=0.001
    )
    diffs["ac_loss"] = _max_diff(loss.detach(), io["ac_loss"])
    gen = torch.Generator().manual_seed(5)
    dl_obs = to_float(io["dl_obs"], io["dl_mask"])
    loss = den.compute_sequence_loss(dl_obs, io["dl_act"], io["dl_mask"], generator=gen)
    diffs["den_loss"] = _max_diff(loss.detach(), io["den_loss"])
    mask = io["rl_mask"]
    obs = to_float(io["rl_obs"], mask)
    next_obs = obs[:, 1:].clone()
    next_obs[0, 4] = to_float(
        io["rl_final"]
    )  # the real frame after the end, where DIAMOND has padding
    with torch.no_grad():
        loss, _ = rew_end.compute_loss(
            obs[:, :-1],
            io["rl_act"][:, :-1],
            next_obs,
            io["rl_rew"][:, :-1],
            io["rl_end"][:, :-1].bool(),
            mask[:, :-1],
        )
    diffs["rew_end_loss"] = _max_diff(loss, io["rew_end_loss"])
    return diffs


def compare(state: dict[str, torch.Tensor], io: dict[str, torch.Tensor]) -> dict[str, float]:
    """Largest absolute difference of every output, ours against DIAMOND's."""
    nets = build(state)
    return {**_network_diffs(nets, io), **_loss_diffs(nets, io)}


@pytest.fixture(scope="module")
def diffs() -> dict[str, float]:
    state = load_file(str(DATA / "diamond_agent.safetensors"))
    io = load_file(str(DATA / "diamond_io.safetensors"))
    return compare(state, io)


@pytest.mark.parametrize(
    "group",
    [
        "den_F",
        "den_D",
        "sample_euler",
        "sample_heun",
        "sample_churn",
        "re_",
        "ac_logits",
        "ac_values",
        "lambda_returns",
        "ac_loss",
        "den_loss",
        "rew_end_loss",
    ],
)
def test_matches_diamond(diffs: dict[str, float], group: str) -> None:
    selected = {k: v for k, v in diffs.items() if k.startswith(group)}
    assert selected, f"no output named {group}*"
    assert max(selected.values()) <= TOLERANCE, selected


def test_fixture_exercises_every_weight() -> None:
    """DIAMOND zero-initialises some layers; the fixture gave them values, so a wrong mapping
    of any tensor would show in the outputs."""
    state = load_file(str(DATA / "diamond_agent.safetensors"))
    zero = [k for k, v in state.items() if v.is_floating_point() and not v.any()]
    assert not zero
