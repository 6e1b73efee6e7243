"""λ-returns against hand computations, and the signs of the actor-critic loss gradients."""

from __future__ import annotations

import math

import pytest
import torch

from diamond_env.training.returns import actor_critic_loss, lambda_returns

GAMMA, LAMBDA = 0.9, 0.5
REWARDS = [1.0, 0.0, -1.0, 1.0, 0.0]
VALUES = [0.5, 1.0, 2.0, -1.0, 0.4, 0.8]  # V(obs_0) .. V(obs_5)


def _flags(b: int, t: int, *where: tuple[int, int]) -> torch.Tensor:
    flags = torch.zeros(b, t, dtype=torch.bool)
    for i, j in where:
        flags[i, j] = True
    return flags


def test_lambda_returns_hand_example_with_termination_and_truncation() -> None:
    # Row 0: termination at t=1, truncation at t=3 with V(final obs) = 2.0. Row 1: no ends.
    rewards = torch.tensor([REWARDS, REWARDS])
    values = torch.tensor([VALUES, VALUES])
    term = _flags(2, 5, (0, 1))
    trunc = _flags(2, 5, (0, 3))
    final_values = torch.zeros(2, 5)
    final_values[0, 3] = 2.0
    final_values[1, 3] = 100.0  # not truncated in row 1: must be ignored
    got = lambda_returns(rewards, values, term, trunc, GAMMA, LAMBDA, final_values=final_values)
    # Row 0, backwards (γ = 0.9, λ = 0.5):
    # G4 = 0 + 0.9 * V5                           = 0.9 * 0.8                  = 0.72
    # G3 = 1 + 0.9 * Vfinal (truncation)          = 1 + 0.9 * 2.0              = 2.8
    # G2 = -1 + 0.9 * (0.5 * V3 + 0.5 * G3)       = -1 + 0.9 * (-0.5 + 1.4)    = -0.19
    # G1 = 0 (termination: no bootstrap)                                        = 0.0
    # G0 = 1 + 0.9 * (0.5 * V1 + 0.5 * G1)        = 1 + 0.9 * (0.5 + 0)        = 1.45
    # Row 1:
    # G4 = 0.72
    # G3 = 1 + 0.9 * (0.5 * 0.4 + 0.5 * 0.72)     = 1 + 0.9 * 0.56             = 1.504
    # G2 = -1 + 0.9 * (0.5 * -1.0 + 0.5 * 1.504)  = -1 + 0.9 * 0.252           = -0.7732
    # G1 = 0 + 0.9 * (0.5 * 2.0 + 0.5 * -0.7732)  = 0.9 * 0.6134               = 0.55206
    # G0 = 1 + 0.9 * (0.5 * 1.0 + 0.5 * 0.55206)  = 1 + 0.9 * 0.77603          = 1.698427
    expected = torch.tensor(
        [[1.45, 0.0, -0.19, 2.8, 0.72], [1.698427, 0.55206, -0.7732, 1.504, 0.72]]
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_values_across_a_boundary_are_never_read() -> None:
    # After an end at t, V(obs_{t+1}) belongs to the next episode: NaN there must not leak.
    values = torch.tensor([VALUES])
    values[0, 2] = float("nan")  # obs_2 starts a new episode (termination at t=1)
    values[0, 4] = float("nan")  # obs_4 starts a new episode (truncation at t=3)
    final_values = torch.full((1, 5), float("nan"))
    final_values[0, 3] = 2.0
    got = lambda_returns(
        torch.tensor([REWARDS]),
        values,
        _flags(1, 5, (0, 1)),
        _flags(1, 5, (0, 3)),
        GAMMA,
        1.0,  # λ = 1 would still read V_{t+1} with weight 0; NaN·0 would be NaN
        final_values=final_values,
    )
    assert torch.isfinite(got).all()
    assert got[0, 1].item() == 0.0
    assert got[0, 3].item() == pytest.approx(2.8)


def test_termination_wins_over_truncation() -> None:
    both = _flags(1, 2, (0, 0))
    got = lambda_returns(
        torch.tensor([[1.0, 1.0]]),
        torch.tensor([[5.0, 5.0, 5.0]]),
        both,
        both,
        0.9,
        0.5,
        final_values=torch.tensor([[7.0, 7.0]]),
    )
    assert got[0, 0].item() == pytest.approx(1.0)


def test_lambda_zero_is_one_step_td() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(-1, 2, (3, 6), generator=gen).float()
    values = torch.randn(3, 7, generator=gen)
    final_values = torch.randn(3, 6, generator=gen)
    term = torch.rand(3, 6, generator=gen) < 0.2
    trunc = torch.rand(3, 6, generator=gen) < 0.2
    got = lambda_returns(rewards, values, term, trunc, 0.97, 0.0, final_values=final_values)
    next_value = torch.where(trunc, final_values, values[:, 1:])
    expected = rewards + 0.97 * (~term) * next_value
    torch.testing.assert_close(got, expected)


def test_lambda_one_without_ends_is_discounted_monte_carlo_plus_bootstrap() -> None:
    gen = torch.Generator().manual_seed(1)
    b, t_len, gamma = 2, 5, 0.95
    rewards = torch.randint(-1, 2, (b, t_len), generator=gen).float()
    values = torch.randn(b, t_len + 1, generator=gen)
    none = torch.zeros(b, t_len, dtype=torch.bool)
    got = lambda_returns(rewards, values, none, none, gamma, 1.0)
    for t in range(t_len):
        mc = sum(gamma**k * rewards[:, t + k] for k in range(t_len - t))
        expected = mc + gamma ** (t_len - t) * values[:, t_len]
        torch.testing.assert_close(got[:, t], expected)


def test_matches_weighted_sum_of_n_step_returns() -> None:
    # Without ends, G^λ_t = (1-λ) Σ_{n<N} λ^{n-1} G^(n)_t + λ^{N-1} G^(N)_t, N = T - t.
    gen = torch.Generator().manual_seed(2)
    t_len, gamma, lam = 6, 0.985, 0.95
    rewards = torch.randint(-1, 2, (1, t_len), generator=gen).float()
    values = torch.randn(1, t_len + 1, generator=gen)
    none = torch.zeros(1, t_len, dtype=torch.bool)
    got = lambda_returns(rewards, values, none, none, gamma, lam)

    def n_step(t: int, n: int) -> float:
        discounted = sum(gamma**k * rewards[0, t + k].item() for k in range(n))
        return discounted + gamma**n * values[0, t + n].item()

    for t in range(t_len):
        horizon = t_len - t
        expected = (1 - lam) * sum(lam ** (n - 1) * n_step(t, n) for n in range(1, horizon))
        expected += lam ** (horizon - 1) * n_step(t, horizon)
        assert got[0, t].item() == pytest.approx(expected, abs=1e-5)


def test_rewards_are_sign_clipped_unless_disabled() -> None:
    none = torch.zeros(1, 2, dtype=torch.bool)
    rewards, values = torch.tensor([[5.0, -3.0]]), torch.zeros(1, 3)
    clipped = lambda_returns(rewards, values, none, none, 0.5, 1.0)
    raw = lambda_returns(rewards, values, none, none, 0.5, 1.0, sign_clip=False)
    torch.testing.assert_close(clipped, torch.tensor([[1.0 - 0.5, -1.0]]))
    torch.testing.assert_close(raw, torch.tensor([[5.0 - 1.5, -3.0]]))


def test_lambda_returns_validates_inputs() -> None:
    rewards, values = torch.zeros(2, 3), torch.zeros(2, 4)
    none = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="final_values"):
        lambda_returns(rewards, values, none, _flags(2, 3, (1, 1)), 0.9, 0.9)
    with pytest.raises(ValueError, match="values"):
        lambda_returns(rewards, torch.zeros(2, 3), none, none, 0.9, 0.9)
    with pytest.raises(ValueError, match="terminations"):
        lambda_returns(rewards, values, none.float(), none, 0.9, 0.9)
    with pytest.raises(ValueError, match="lambda_"):
        lambda_returns(rewards, values, none, none, 0.9, 1.5)


def test_loss_value_by_hand() -> None:
    # Uniform policy over 4 actions: log π(a) = -ln 4, entropy = ln 4. V = 0.5, G = 1.5.
    logits = torch.zeros(1, 2, 4)
    values = torch.full((1, 2), 0.5)
    returns = torch.full((1, 2), 1.5)
    actions = torch.tensor([[0, 3]])
    loss, metrics = actor_critic_loss(logits, values, actions, returns, None, 0.1)
    expected = math.log(4) * 1.0 + 1.0**2 - 0.1 * math.log(4)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["entropy"].item() == pytest.approx(math.log(4), rel=1e-6)
    assert metrics["advantage"].item() == pytest.approx(1.0)
    assert not metrics["loss"].requires_grad


def _sgd_step(advantage: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.zeros(1, 1, 3, requires_grad=True)
    values = torch.zeros(1, 1, requires_grad=True)
    returns = torch.full((1, 1), advantage)
    loss, _ = actor_critic_loss(logits, values, torch.tensor([[1]]), returns, None, 0.0)
    loss.backward()
    # The value loss alone drives V: d/dV (G - V)^2 = -2 (G - V); the advantage is detached.
    assert values.grad is not None and values.grad.item() == pytest.approx(-2.0 * advantage)
    with torch.no_grad():
        new_logits = logits - 0.1 * logits.grad  # type: ignore[operator]
        new_values = values - 0.1 * values.grad  # type: ignore[operator]
    return new_logits.log_softmax(-1)[0, 0], new_values[0, 0]


def test_gradient_signs() -> None:
    uniform = math.log(1 / 3)
    up, value_up = _sgd_step(+1.0)
    down, value_down = _sgd_step(-1.0)
    assert up[1].item() > uniform > down[1].item()  # positive advantage raises log π(a)
    assert up[0].item() < uniform and down[0].item() > uniform  # the others move the other way
    assert value_up.item() > 0.0 > value_down.item()  # V moves toward G
    # Larger advantages move the log-prob further.
    assert _sgd_step(2.0)[0][1].item() > up[1].item()


def test_entropy_bonus_flattens_the_policy() -> None:
    logits = torch.tensor([[[2.0, 0.0, -1.0]]], requires_grad=True)
    values = torch.zeros(1, 1)
    loss, metrics = actor_critic_loss(logits, values, torch.tensor([[0]]), values, None, 1.0)
    loss.backward()
    new = (logits - 0.1 * logits.grad).detach()  # type: ignore[operator]
    new_entropy = -(new.softmax(-1) * new.log_softmax(-1)).sum()
    assert new_entropy.item() > metrics["entropy"].item()


def test_mask_excludes_steps_even_with_nan() -> None:
    logits = torch.zeros(1, 3, 2)
    logits[0, 2] = float("nan")
    values = torch.tensor([[0.0, 1.0, float("nan")]])
    returns = torch.tensor([[1.0, 1.0, float("nan")]])
    actions = torch.tensor([[0, 1, -1]])  # padding may hold an invalid action id
    mask = torch.tensor([[True, True, False]])
    loss, metrics = actor_critic_loss(logits, values, actions, returns, mask, 0.0)
    # Step 0: advantage 1, -log π = ln 2, value error 1; step 1: advantage 0, value error 0.
    assert loss.item() == pytest.approx((math.log(2) + 1.0) / 2, rel=1e-6)
    assert metrics["value_loss"].item() == pytest.approx(0.5)


def test_loss_validates_inputs() -> None:
    logits, values = torch.zeros(2, 3, 4), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="actions"):
        actor_critic_loss(logits, values, torch.zeros(2, 3), values, None, 0.0)
    with pytest.raises(ValueError, match="logits"):
        actor_critic_loss(torch.zeros(2, 4), values, torch.zeros(2, 3).long(), values, None, 0.0)
    with pytest.raises(ValueError, match="mask"):
        actor_critic_loss(logits, values, torch.zeros(2, 3).long(), values, values, 0.0)
