"""ActorCritic: size, shapes, recurrent state, burn-in, acting, and the saved artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diamond_env.config import ActorCriticConfig, get_preset
from diamond_env.models.actor_critic import CONFIG_FILE, WEIGHTS_FILE, ActorCritic

NUM_ACTIONS = 4


def _tiny_model(seed: int = 0) -> ActorCritic:
    """Tiny preset with randomised heads (the real ones start at zero, which hides bugs)."""
    torch.manual_seed(seed)
    model = ActorCritic(get_preset("tiny").actor_critic, NUM_ACTIONS)
    with torch.no_grad():
        for head in (model.policy_head, model.value_head):
            head.weight.normal_(0.0, 0.5)
            head.bias.normal_(0.0, 0.5)
    return model


def _frames(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_paper_parameter_count() -> None:
    model = ActorCritic(ActorCriticConfig(), NUM_ACTIONS)
    # Encoder: stem conv 3*32*9+32 = 896; blocks (GN 2C + conv3x3 [+ 1x1 skip]):
    #   32->32: 64 + 9248; 32->32: 64 + 9248; 32->64: 64 + 18496 + 2112; 64->64: 128 + 36928.
    encoder = 896 + 2 * (64 + 9248) + (64 + 18496 + 2112) + (128 + 36928)
    # LSTMCell(64*4*4 = 1024 -> 512): 4*512*(1024 + 512) weights + 2*4*512 biases.
    lstm = 4 * 512 * (1024 + 512) + 2 * 4 * 512
    heads = (512 * NUM_ACTIONS + NUM_ACTIONS) + (512 + 1)
    total = sum(p.numel() for p in model.parameters())
    assert encoder == 77_248 and lstm == 3_149_824
    assert total == encoder + lstm + heads == 3_229_637
    assert abs(total - 3.2e6) / 3.2e6 < 0.03


def test_forward_shapes_and_zero_initialised_heads() -> None:
    model = ActorCritic(get_preset("tiny").actor_critic, NUM_ACTIONS)
    logits, value, (h, c) = model(_frames(5), None)
    assert logits.shape == (5, NUM_ACTIONS) and value.shape == (5,)
    assert h.shape == c.shape == (5, 32)
    assert torch.all(logits == 0) and torch.all(value == 0)
    assert h.abs().sum() > 0  # the LSTM did run


def test_forward_rejects_bad_inputs() -> None:
    model = _tiny_model()
    with pytest.raises(ValueError, match="obs"):
        model(torch.zeros(2, 64, 64, 3))
    with pytest.raises(TypeError, match="obs"):
        model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="state"):
        model(_frames(2), model.initial_state(3))
    with pytest.raises(ValueError, match="num_actions"):
        ActorCritic(ActorCriticConfig(), 0)


def test_burn_in_equals_stepping_forward() -> None:
    model = _tiny_model()
    obs = _frames(3, 4)
    state = model.initial_state(3)
    for t in range(4):
        _, _, state = model(obs[:, t], state)
    burnt = model.burn_in(obs)
    torch.testing.assert_close(burnt[0], state[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(burnt[1], state[1], rtol=1e-5, atol=1e-6)
    # Starting from a given state continues from it.
    start = model.burn_in(obs[:, :2])
    torch.testing.assert_close(model.burn_in(obs[:, 2:], start)[0], state[0], rtol=1e-5, atol=1e-6)


def test_burn_in_mask_skips_padding_frames() -> None:
    model = _tiny_model()
    obs = _frames(2, 4)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    burnt = model.burn_in(obs, mask=mask)
    padded_row = model.burn_in(obs[:1, 2:])  # row 0: only its last two frames are real
    full_row = model.burn_in(obs[1:])
    torch.testing.assert_close(burnt[0][:1], padded_row[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(burnt[1][1:], full_row[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(burnt[0][0], model.burn_in(obs[:1])[0][0])


def test_reset_state_zeroes_only_masked_rows() -> None:
    model = _tiny_model()
    state = model.burn_in(_frames(3, 2))
    h, c = ActorCritic.reset_state(state, torch.tensor([False, True, False]))
    assert torch.all(h[1] == 0) and torch.all(c[1] == 0)
    torch.testing.assert_close(h[[0, 2]], state[0][[0, 2]])
    torch.testing.assert_close(c[[0, 2]], state[1][[0, 2]])
    assert state[0][1].abs().sum() > 0  # input untouched
    with pytest.raises(ValueError, match="mask"):
        ActorCritic.reset_state(state, torch.tensor([1, 0, 0]))


def test_act_uint8_and_float_agree_and_deterministic_is_argmax() -> None:
    model = _tiny_model()
    uint8_obs = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8)
    float_obs = uint8_obs.permute(0, 3, 1, 2).float() / 127.5 - 1
    logits, _, expected_state = model(float_obs)
    a_uint8, s_uint8 = model.act(uint8_obs, deterministic=True)
    a_float, _ = model.act(float_obs, deterministic=True)
    a_numpy, _ = model.act(uint8_obs.numpy(), deterministic=True)
    assert a_uint8.dtype == torch.int64 and a_uint8.shape == (6,)
    assert torch.equal(a_uint8, logits.argmax(-1))
    assert torch.equal(a_uint8, a_float) and torch.equal(a_uint8, a_numpy)
    torch.testing.assert_close(s_uint8[0], expected_state[0])
    assert not s_uint8[0].requires_grad


def test_act_samples_from_the_policy() -> None:
    model = _tiny_model()
    with torch.no_grad():
        model.policy_head.weight.zero_()
        model.policy_head.bias.copy_(torch.tensor([0.0, 0.0, 20.0, 0.0]))
    actions, _ = model.act(_frames(64), generator=torch.Generator().manual_seed(0))
    assert torch.all(actions == 2)


def test_act_epsilon_one_is_uniform_and_seeded() -> None:
    model = _tiny_model()
    obs = torch.zeros(1000, 64, 64, 3, dtype=torch.uint8)
    with torch.no_grad():  # a policy that always picks action 0 on its own
        model.policy_head.weight.zero_()
        model.policy_head.bias.copy_(torch.tensor([30.0, 0.0, 0.0, 0.0]))
    first, _ = model.act(obs, epsilon=1.0, generator=torch.Generator().manual_seed(7))
    again, _ = model.act(obs, epsilon=1.0, generator=torch.Generator().manual_seed(7))
    other, _ = model.act(obs, epsilon=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    counts = torch.bincount(first, minlength=NUM_ACTIONS)
    assert torch.all((counts - 250).abs() < 55), counts  # 4 standard deviations
    greedy, _ = model.act(obs, epsilon=0.1, generator=torch.Generator().manual_seed(7))
    share_random = (greedy != 0).float().mean().item()
    assert 0.04 < share_random < 0.11  # ≈ ε · 3/4
    with pytest.raises(ValueError, match="epsilon"):
        model.act(obs[:1], epsilon=1.5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _tiny_model()
    model.save(tmp_path / "ac")
    loaded = ActorCritic.load(tmp_path / "ac", device="cpu")
    assert loaded.config == model.config and loaded.num_actions == NUM_ACTIONS
    obs = _frames(2, 3)
    state = model.burn_in(obs[:, :2])
    for a, b in zip(model(obs[:, 2], state), loaded(obs[:, 2], state), strict=True):
        if isinstance(a, tuple):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        else:
            assert torch.equal(a, b)
    meta = json.loads((tmp_path / "ac" / CONFIG_FILE).read_text())
    assert meta["num_actions"] == NUM_ACTIONS and meta["config"]["channels"] == [8, 8, 16, 16]
    assert sorted(p.name for p in (tmp_path / "ac").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        ActorCritic.load(tmp_path / "nowhere")
    _tiny_model().save(tmp_path)
    weights, config = tmp_path / WEIGHTS_FILE, tmp_path / CONFIG_FILE
    good_weights, good_config = weights.read_bytes(), config.read_text()

    weights.write_bytes(good_weights[:100])  # truncated
    with pytest.raises(ValueError, match=WEIGHTS_FILE):
        ActorCritic.load(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        ActorCritic.load(tmp_path)
    weights.write_bytes(good_weights)

    meta = json.loads(good_config)
    meta["num_actions"] = NUM_ACTIONS + 1  # config no longer matches the weights
    config.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}.*policy_head"):
        ActorCritic.load(tmp_path)
    config.write_text("{not json")
    with pytest.raises(ValueError, match=CONFIG_FILE):
        ActorCritic.load(tmp_path)
    meta["num_actions"], meta["config"]["extra"] = NUM_ACTIONS, 1
    config.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=CONFIG_FILE):
        ActorCritic.load(tmp_path)

    # the weights carry a digest that loading checks, and requires
    config.write_text(good_config)
    altered = bytearray(good_weights)
    altered[-1] ^= 0x01  # one bit of the last weight: same keys, same shapes
    weights.write_bytes(bytes(altered))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: sha256 .* altered or damaged"):
        ActorCritic.load(tmp_path)
    weights.write_bytes(good_weights)
    del meta["config"]["extra"], meta["sha256"]
    config.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no sha256.*train the agent again"):
        ActorCritic.load(tmp_path)
    config.write_text(good_config)
    ActorCritic.load(tmp_path)


def test_diamond_initialisation_and_optimiser_groups() -> None:
    """DIAMOND's init and AdamW set-up (src/utils.py:134-147 configure_opt, :175-179
    get_lr_sched, :184 init_lstm; src/models/blocks.py:97 orthogonal downsampling)."""
    import dataclasses

    from diamond_env.config import get_preset
    from diamond_env.models.rew_end import RewEndModel
    from diamond_env.training.optim import decay_groups, make_optimizer

    torch.manual_seed(0)
    model = RewEndModel(get_preset("tiny").rew_end, 4)
    lstm = model.lstm
    n = lstm.hidden_size
    assert torch.equal(lstm.bias_ih_l0[n : 2 * n], torch.ones(n))  # forget gate
    assert not lstm.bias_ih_l0[:n].any() and not lstm.bias_hh_l0.any()
    w_hh = lstm.weight_hh_l0  # (4n, n): orthonormal columns
    torch.testing.assert_close(w_hh.T @ w_hh, torch.eye(n), atol=1e-5, rtol=0)
    down = model.encoder.downsamples[0].conv.weight.flatten(1)
    torch.testing.assert_close(down @ down.T, torch.eye(down.shape[0]), atol=1e-5, rtol=0)
    decay, no_decay = decay_groups(model)
    decayed = {id(p) for p in decay}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert "lstm.weight_ih_l0" in names and "head.0.weight" in names
    assert "encoder.conv_in.weight" in names
    assert not any(name.endswith("bias") for name in names)
    assert "act_emb.weight" not in names  # embeddings are not decayed
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    cfg = dataclasses.replace(get_preset("tiny").rew_end_optim, warmup_steps=4, lr=1.0)
    opt, sched = make_optimizer(model, cfg)
    rates = []
    for _ in range(6):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]  # the very first step has rate 0
    assert opt.param_groups[1]["weight_decay"] == 0.0
