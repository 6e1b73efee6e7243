"""Reward / termination model: sizes, recurrence, masked cross-entropy and a short fit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fake_world_model import set_constant_head

from diamond_env.config import get_preset
from diamond_env.models.blocks import count_params
from diamond_env.models.rew_end import RewEndModel

NUM_ACTIONS = 4


def _tiny(seed: int = 0) -> RewEndModel:
    torch.manual_seed(seed)
    return RewEndModel(get_preset("tiny").rew_end, NUM_ACTIONS)


def _seq(b: int = 2, t: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand((b, t + 1, 3, 64, 64), generator=g) * 2 - 1
    act = torch.randint(0, NUM_ACTIONS, (b, t), generator=g)
    return frames[:, :-1], act, frames[:, 1:]


def test_paper_size() -> None:
    model = RewEndModel(get_preset("paper").rew_end, NUM_ACTIONS)
    params = count_params(model)
    print(f"paper reward/end parameters: {params}")
    assert abs(params - 5.9e6) / 5.9e6 < 0.02
    assert model.encoder.conv_in.in_channels == 6
    assert model.lstm.input_size == 32 * 8 * 8 and model.lstm.hidden_size == 512
    assert model.head[-1].out_features == 5


def test_shapes_and_state_carry() -> None:
    model = _tiny()
    obs, act, next_obs = _seq()
    rew, end, (h, c) = model(obs, act, next_obs)
    assert rew.shape == (2, 5, 3) and end.shape == (2, 5, 2)
    assert h.shape == (2, 32) and c.shape == (2, 32)
    # one call over the sequence == step by step with the state carried
    state = None
    for t in range(5):
        r, e, state = model(obs[:, t : t + 1], act[:, t : t + 1], next_obs[:, t : t + 1], state)
        torch.testing.assert_close(r[:, 0], rew[:, t], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(e[:, 0], end[:, t], rtol=1e-4, atol=1e-5)
    assert state is not None
    torch.testing.assert_close(state[0], h, rtol=1e-4, atol=1e-5)


def test_action_changes_the_prediction() -> None:
    model = _tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # leave the zero-initialised identity start
    obs, act, next_obs = _seq()
    rew_a, _, _ = model(obs, act, next_obs)
    rew_b, _, _ = model(obs, (act + 1) % NUM_ACTIONS, next_obs)
    assert not torch.allclose(rew_a, rew_b)


def test_loss_is_masked_cross_entropy_of_the_reward_sign() -> None:
    model = _tiny()
    obs, act, next_obs = _seq(b=1, t=4)
    # constant logits: rew classes p = (0.2, 0.3, 0.5), end p = (0.6, 0.4)
    set_constant_head(model, [0.2, 0.3, 0.5, 0.6, 0.4])
    rew = torch.tensor([[-3.0, 0.0, 0.5, 7.0]])  # sign classes 0, 1, 2, 2
    end = torch.tensor([[False, False, True, True]])
    mask = torch.tensor([[True, True, True, False]])
    loss, metrics = model.compute_loss(obs, act, next_obs, rew, end, mask)
    loss_rew = -(math.log(0.2) + math.log(0.3) + math.log(0.5)) / 3
    loss_end = -(math.log(0.6) + math.log(0.6) + math.log(0.4)) / 3
    assert metrics["loss_rew"] == pytest.approx(loss_rew, rel=1e-5)
    assert metrics["loss_end"] == pytest.approx(loss_end, rel=1e-5)
    assert loss.item() == pytest.approx(loss_rew + loss_end, rel=1e-5)
    assert metrics["acc_rew"] == pytest.approx(1 / 3)  # argmax is class 2 (+1)
    assert metrics["acc_end"] == pytest.approx(2 / 3)  # argmax is "continue"
    # what the masked step holds does not matter
    rew2, end2 = rew.clone(), end.clone()
    rew2[0, 3], end2[0, 3] = -1.0, False
    assert model.compute_loss(obs, act, next_obs, rew2, end2, mask)[0].item() == pytest.approx(
        loss.item(), rel=1e-6
    )


def test_bad_inputs_raise() -> None:
    model = _tiny()
    obs, act, next_obs = _seq()
    ok = torch.ones((2, 5), dtype=torch.bool)
    with pytest.raises(ValueError, match="next_obs"):
        model(obs, act, next_obs[:, :4])
    with pytest.raises(TypeError, match="act"):
        model(obs, act.int(), next_obs)
    with pytest.raises(ValueError, match="mask"):
        model.compute_loss(obs, act, next_obs, torch.zeros(2, 5), ok, ok.float())
    with pytest.raises(ValueError, match="rew"):
        model.compute_loss(obs, act, next_obs, torch.zeros(2, 5, dtype=torch.long), ok, ok)


def test_learns_reward_from_frames() -> None:
    model = _tiny(seed=2)
    obs, act, next_obs = _seq(b=4, t=4, seed=1)
    # reward sign = sign of the brightness change; the end follows action 3
    rew = (next_obs.mean(dim=(2, 3, 4)) - obs.mean(dim=(2, 3, 4))).sign()
    end = act == 3
    mask = torch.ones_like(end)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = model.compute_loss(obs, act, next_obs, rew, end, mask)[0].item()
    for _ in range(30):
        opt.zero_grad()
        loss, _ = model.compute_loss(obs, act, next_obs, rew, end, mask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())
    assert F.softmax(model(obs, act, next_obs)[1], -1).shape == (4, 4, 2)
