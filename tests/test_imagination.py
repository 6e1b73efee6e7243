"""Actor-critic training in imagination: the rollout's timeline (restarts, truncation bootstrap),
learning the rewarded action on a fake world model, exact resume, and a real tiny world model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from fake_world_model import FakeWorldModel

from diamond_env.config import ActorCriticConfig, ImaginationConfig, get_preset
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.training.imagination import ImaginationTrainer
from diamond_env.world_model.model import WorldModel

TINY_AC = ActorCriticConfig(channels=(8, 8, 16, 16), lstm_dim=32)


def _config(batch: int = 4, horizon: int = 6, lr: float = 1e-3):  # type: ignore[no-untyped-def]
    config = get_preset("tiny")
    return dataclasses.replace(
        config,
        imagination=ImaginationConfig(batch_size=batch, horizon=horizon),
        actor_critic_optim=dataclasses.replace(config.actor_critic_optim, lr=lr),
    )


def test_rollout_timeline_with_terminations_and_truncation() -> None:
    """The fake ends every episode after 4 steps; with horizon 6 each env terminates at step 3,
    restarts (burn-in on the new context) and is truncated 6 steps after its restart: never in
    this rollout, so the bootstrap is V(obs_T)."""
    torch.manual_seed(0)
    wm = FakeWorldModel(terminate_after=4)
    trainer = ImaginationTrainer(ActorCritic(TINY_AC, 4), wm, _config(batch=3, horizon=6))
    ro = trainer.rollout()
    assert ro.logits.shape == (3, 6, 4) and ro.values.shape == (3, 6)
    assert ro.logits.requires_grad and ro.values.requires_grad
    assert ro.terminations[:, 3].all() and ro.terminations.sum() == 3
    assert not ro.truncations.any() and (ro.final_values == 0).all()
    assert wm.burn_in_calls == 2  # the reset and the restart of all three envs at step 3


def test_truncation_gives_final_values() -> None:
    wm = FakeWorldModel(terminate_after=100)
    trainer = ImaginationTrainer(ActorCritic(TINY_AC, 4), wm, _config(batch=2, horizon=3))
    for _ in range(3):  # the value head is zero-initialised: train it off zero first
        trainer.train_step()
    ro = trainer.rollout()
    assert ro.truncations[:, 2].all() and ro.truncations.sum() == 2
    assert not ro.terminations.any()
    assert (ro.final_values[:, 2] != 0).all() and (ro.final_values[:, :2] == 0).all()


def test_learns_the_rewarded_action_in_the_dream() -> None:
    """FIRE gives +1 and RIGHT -1 in the fake dream: the policy must come to prefer FIRE."""
    torch.manual_seed(0)
    wm = FakeWorldModel(terminate_after=100)
    ac = ActorCritic(TINY_AC, 4)
    trainer = ImaginationTrainer(ac, wm, _config(batch=8, horizon=5, lr=3e-3), seed=0)
    first = trainer.train_step()
    for _ in range(60):
        last = trainer.train_step()
    obs = trainer.simulator.reset(seed=0)
    with torch.no_grad():
        probs = ac(obs)[0].softmax(-1).mean(0)
    assert probs[1] > 0.6 and probs[2] < 0.1, probs
    assert last["actor_critic/imagined_reward"] > first["actor_critic/imagined_reward"] + 1.0
    assert trainer.grad_steps == 61


def test_resume_is_exact() -> None:
    def make() -> ImaginationTrainer:
        torch.manual_seed(0)
        return ImaginationTrainer(
            ActorCritic(TINY_AC, 4), FakeWorldModel(terminate_after=3), _config(), seed=5
        )

    straight = make()
    for _ in range(4):
        straight.train_step()
    first = make()
    for _ in range(2):
        first.train_step()
    saved = first.state_dict()
    resumed = make()
    resumed.load_state_dict(saved)
    for _ in range(2):
        resumed.train_step()
    for a, b in zip(
        straight.actor_critic.parameters(), resumed.actor_critic.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_real_tiny_world_model(tiny_checkpoint: Path) -> None:
    wm = WorldModel.load(tiny_checkpoint)
    config = wm.config
    trainer = ImaginationTrainer(ActorCritic(config.actor_critic, wm.num_actions), wm, config)
    metrics = trainer.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    with pytest.raises(ValueError, match="actions"):
        ImaginationTrainer(ActorCritic(config.actor_critic, 6), wm, config)


def test_dreams_run_on_across_gradient_steps() -> None:
    """DIAMOND's env loop is not reset at each update (src/coroutines/env_loop.py:25): the fake
    ends an episode 4 steps after each start, so with windows of 6 steps the second window sees
    the episodes that restarted at step 3 of the first one end at its step 1."""
    wm = FakeWorldModel(terminate_after=4)
    trainer = ImaginationTrainer(ActorCritic(TINY_AC, 4), wm, _config(batch=2, horizon=6))
    first = trainer.rollout()
    assert first.terminations[:, 3].all() and first.terminations.sum() == 2
    assert trainer.simulator.elapsed_steps.tolist() == [2, 2]
    second = trainer.rollout()
    assert second.terminations[:, 1].all() and second.terminations[:, 5].all()
    assert second.terminations.sum() == 4 and not second.truncations.any()


def test_first_reset_has_no_burn_in_and_restarts_burn_in_with_gradients() -> None:
    ac = ActorCritic(TINY_AC, 4)
    with torch.no_grad():  # make the value depend on the LSTM state
        torch.nn.init.normal_(ac.value_head.weight)
    graph: list[bool] = []
    plain_burn_in = ac.burn_in

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        state = plain_burn_in(*args, **kwargs)
        graph.append(state[0].requires_grad)
        return state

    ac.burn_in = spy  # type: ignore[method-assign]
    trainer = ImaginationTrainer(ac, FakeWorldModel(terminate_after=2), _config(batch=2, horizon=5))
    ro = trainer.rollout()
    # DIAMOND env_loop.py:18-22: the first reset starts from a zero state, without burn-in, so
    # the only burn-ins are those of the restarts at steps 1 and 3
    assert len(graph) == 2
    # env_loop.py:53-56: the burn-in after a restart is part of the graph
    assert all(graph)
    assert ro.values.requires_grad


def test_replay_contexts_follow_recency_and_pad_with_zero() -> None:
    from test_segments import coded_episode

    from diamond_env.data.episode import FlatData
    from diamond_env.training.imagination import ReplayContexts

    episodes = [coded_episode(e, 6, side=64, life_loss_at=(2,)) for e in range(4)]
    data = FlatData.from_episodes(episodes)  # 8 lives of 3 steps
    source = ReplayContexts(data, 4, (0.1, 0.1, 0.1, 0.7), "cpu", preload=32, seed=0)
    obs, act = source.take(20)
    assert obs.shape == (20, 4, 3, 64, 64) and act.shape == (20, 4)
    assert (act[:, -1] == 0).all()  # the agent's slot
    padded = (obs == 0.0).flatten(2).all(-1)
    assert padded[:, 0].all() and not padded[:, -1].any()  # lives of 3 steps: left padding
    rest, _ = source.take(12)  # what is left of the 32 preloaded
    assert source._cursor == 32
    again, _ = source.take(1)  # exhausted: a fresh set is drawn
    assert source._cursor == 1
    state = source.state_dict()
    path = torch.save(state, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    copy = ReplayContexts(data, 4, (0.1, 0.1, 0.1, 0.7), "cpu", preload=32, seed=9)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(copy.take(5)[0], source.take(5)[0])
    assert path is None
    # the last quarter of the lives (the two newest) gets 70 % of the draws
    many = ReplayContexts(data, 4, (0.1, 0.1, 0.1, 0.7), "cpu", preload=4000, seed=1)
    frames, _ = many.take(4000)
    game = ((frames[:, -1, 0, 1, 1] + 1) * 127.5).round().long() - 1  # channel 0 codes the game
    assert abs(float((game == 3).float().mean()) - 0.7) < 0.03


def _tiny_pair(device: str) -> tuple[WorldModel, ActorCritic]:
    from fake_world_model import make_bank

    from diamond_env.atari import action_meanings

    config = get_preset("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wm = WorldModel(config, "Breakout", action_meanings("Breakout"), make_bank(5, 4))
        for p in wm.parameters():  # no zero-initialised layer: the denoiser's output matters
            if p.ndim > 1 and not bool(p.any()):
                torch.nn.init.normal_(p, std=0.05)
        ac = ActorCritic(config.actor_critic, wm.num_actions)
    return wm.to(device), ac.to(device)


def test_the_dream_can_run_a_stand_in_denoise_function() -> None:
    """``denoise_fn`` (how the loop's dreams replay CUDA graphs) reaches every denoiser pass and
    changes nothing when it computes the same function; off by default on a CPU."""
    calls = [0]
    wm, ac = _tiny_pair("cpu")
    plain = ImaginationTrainer(ac, wm, wm.config, seed=3)
    assert plain.denoise_fn is None

    def counting(*args: torch.Tensor | float | None) -> torch.Tensor:
        calls[0] += 1
        return wm.denoiser.denoise(*args)  # type: ignore[arg-type]

    wm2, ac2 = _tiny_pair("cpu")
    other = ImaginationTrainer(ac2, wm2, wm2.config, seed=3)
    other.denoise_fn = counting
    other.simulator = other._make_simulator(3)
    plain.simulator = plain._make_simulator(3)
    a, b = plain.rollout(), other.rollout()
    passes = wm.config.sampler.num_steps * wm.config.imagination.horizon
    assert calls[0] == passes
    torch.testing.assert_close(a.rewards, b.rewards)
    torch.testing.assert_close(a.logits, b.logits)
    with pytest.raises(ValueError, match="cuda_graphs: needs a CUDA"):
        ImaginationTrainer(ac, wm, wm.config, cuda_graphs=True)


def test_tf32_is_scoped_to_the_block() -> None:
    from diamond_env.devices import tf32_matmuls

    before = torch.backends.cuda.matmul.allow_tf32
    with tf32_matmuls(torch.device("cpu")):
        assert torch.backends.cuda.matmul.allow_tf32 == before
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with tf32_matmuls(torch.device("cuda")):  # (setting the flag needs no GPU)
            assert torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_dreams_follow_the_live_weights() -> None:
    """On CUDA the loop's dreams replay CUDA graphs of the live denoiser: the same rollouts as
    the plain path, also after the world model's weights changed in place."""
    runs = []
    for graphs in (False, True):
        wm, ac = _tiny_pair("cuda")
        trainer = ImaginationTrainer(ac, wm, wm.config, seed=3, cuda_graphs=graphs)
        first = trainer.rollout()
        with torch.no_grad():
            for p in wm.denoiser.parameters():
                p.mul_(1.01)  # in place, as an optimiser step
        runs.append((first, trainer.rollout()))
    (a1, a2), (b1, b2) = runs
    for a, b in ((a1, b1), (a2, b2)):
        torch.testing.assert_close(a.logits, b.logits, atol=1e-3, rtol=1e-3)
        assert torch.equal(a.terminations, b.terminations)
