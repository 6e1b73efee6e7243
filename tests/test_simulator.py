"""DreamSimulator: contexts, rolling buffers, same-step autoreset, seeding, validation, NaN.

Most tests use the deterministic fake world model (tests/fake_world_model.py), whose frames,
rewards and ends can be computed by hand; one smoke test runs a real tiny WorldModel.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from fake_world_model import (
    CONTEXT_STRIDE,
    MARKER,
    MEANINGS,
    REWARDS,
    FakeWorldModel,
    level,
    marker_level,
)

from diamond_env.config import get_preset
from diamond_env.dream import keyed_random
from diamond_env.dream.simulator import DreamSimulator, make_simulator
from diamond_env.world_model.model import ContextBank, WorldModel

H, W = 64, 64


def _replay_generator(seed: int, num_contexts: int):
    """The draws the simulator makes for one env, in its documented order, replayed alone: key
    from the seed, one counter value per draw (context index: a uniform; step: the noise, then
    two uniforms)."""
    key = keyed_random.keys_from_seeds(torch.tensor([seed]))
    count = [0]

    def counter() -> torch.Tensor:
        count[0] += 1
        return torch.tensor([count[0] - 1])

    def draw_context() -> int:
        u = float(keyed_random.uniform(key, counter(), 1)[0, 0])
        return min(int(u * num_contexts), num_contexts - 1)

    def draw_step() -> tuple[torch.Tensor, torch.Tensor]:
        noise = keyed_random.normal(key, counter(), 3 * H * W).view(3, H, W)
        return noise, keyed_random.uniform(key, counter(), 2)[0]

    return draw_context, draw_step


def test_reset_starts_from_bank_contexts_and_burns_in() -> None:
    wm = FakeWorldModel(num_contexts=5)
    sim = DreamSimulator(wm, 3, seed=0)
    obs = sim.reset(context_index=[2, None, 4])
    assert obs.shape == (3, 3, H, W) and obs.dtype == torch.float32
    draw_context, _ = _replay_generator(0 + 1, 5)  # env 1 draws; envs 0 and 2 are forced
    k1 = draw_context()
    ks = [2, k1, 4]
    assert level(obs).tolist() == [CONTEXT_STRIDE * k + 3 for k in ks]
    ctx = sim.context_obs
    assert ctx.shape == (3, 4, 3, H, W)
    assert level(ctx).tolist() == [[CONTEXT_STRIDE * k + i for i in range(4)] for k in ks]
    assert sim.context_act.tolist() == [[(k + i) % 4 for i in range(3)] for k in ks]
    assert wm.burn_in_calls == 1 and wm.burn_in_rows == 3
    assert sim.elapsed_steps.tolist() == [0, 0, 0]


def test_a_context_source_serves_draws_and_the_bank_serves_chosen_starts() -> None:
    """Any ContextSource replaces the bank's draws; ``context_index`` still picks bank entries,
    and the per-env draws are made either way."""
    from fake_world_model import make_bank

    from diamond_env.dream.contexts import BankContexts

    other = BankContexts(make_bank(7), torch.device("cpu"))
    calls: list[int] = []

    class Source:
        def draw(self, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            calls.append(len(uniforms))
            return other.at(torch.full((len(uniforms),), 6))  # always entry 6 of another bank

    sim = DreamSimulator(FakeWorldModel(num_contexts=5), 3, seed=0, context_source=Source())
    obs = sim.reset(context_index=[None, 1, None])
    assert calls == [3]
    assert level(obs).tolist() == [CONTEXT_STRIDE * k + 3 for k in (6, 1, 6)]
    assert sim._counters.tolist() == [1, 1, 1]

    class Wrong:
        def draw(self, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return other.at(torch.zeros(len(uniforms) + 1, dtype=torch.int64))

    sim = DreamSimulator(FakeWorldModel(num_contexts=5), 2, seed=0, context_source=Wrong())
    with pytest.raises(ValueError, match="context_source: expected frames"):
        sim.reset()


def test_step_rolls_context_and_follows_model() -> None:
    wm = FakeWorldModel(terminate_after=100)
    sim = DreamSimulator(wm, 2, seed=5, horizon=50)
    sim.reset(context_index=[1, 3])
    out = sim.step(torch.tensor([1, 2]))
    assert level(out.obs).tolist() == [(13 + 1 + 1) % 256, (33 + 1 + 2) % 256]
    assert out.reward.tolist() == [REWARDS[1], REWARDS[2]]
    assert out.reward.dtype == torch.float32
    assert out.terminated.tolist() == [False, False] and out.truncated.tolist() == [False, False]
    assert torch.equal(out.obs, out.final_obs)
    assert level(sim.context_obs).tolist() == [[11, 12, 13, 15], [31, 32, 33, 36]]
    # actions taken at the context frames: bank actions (k + i) % 4 for i = 1, 2, then ours
    assert sim.context_act.tolist() == [[2, 3, 1], [0, 1, 2]]
    assert sim.elapsed_steps.tolist() == [1, 1]
    # the marker pixel shows each env's first noise value from its own generator
    for i in range(2):
        draw_context, draw_step = _replay_generator(5 + i, 5)
        draw_context()  # drawn even though the context was forced
        noise, _ = draw_step()
        mark = round((float(out.obs[i, 0, MARKER[0], MARKER[1]]) + 1) * 127.5)
        assert mark == marker_level(float(noise[0, 0, 0]))


def test_autoreset_boundaries_termination_then_truncation() -> None:
    """Env 0 terminates at step 2 (action 3); env 1 is truncated at step 3 (horizon 3)."""
    wm = FakeWorldModel(num_contexts=5, terminate_after=100, terminate_action=3)
    sim = DreamSimulator(wm, 2, seed=10, horizon=3)
    sim.reset()
    replay = [_replay_generator(10 + i, 5) for i in range(2)]
    ks = [r[0]() for r in replay]
    levels = [CONTEXT_STRIDE * k + 3 for k in ks]
    plan = [[0, 0], [3, 0], [2, 1]]
    expected_flags = [([False, False], [False, False]), ([True, False], [False, False])]
    expected_flags.append(([False, False], [False, True]))
    for t, actions in enumerate(plan):
        noises = [r[1]()[0] for r in replay]
        out = sim.step(torch.tensor(actions))
        final_levels = [(levels[i] + 1 + actions[i]) % 256 for i in range(2)]
        term, trunc = expected_flags[t]
        assert out.terminated.tolist() == term, t
        assert out.truncated.tolist() == trunc, t
        assert out.reward.tolist() == [REWARDS[a] for a in actions]
        assert level(out.final_obs).tolist() == final_levels
        for i in range(2):
            mark = round((float(out.final_obs[i, 0, 0, 0]) + 1) * 127.5)
            assert mark == marker_level(float(noises[i][0, 0, 0]))
        for i in range(2):
            if term[i] or trunc[i]:  # same-step reset: a freshly drawn context, burnt in
                k = replay[i][0]()
                levels[i] = CONTEXT_STRIDE * k + 3
                assert torch.equal(out.obs[i], sim.context_obs[i, -1])
                assert level(sim.context_obs[i]).tolist() == [
                    CONTEXT_STRIDE * k + j for j in range(4)
                ]
            else:
                levels[i] = final_levels[i]
                assert torch.equal(out.obs[i], out.final_obs[i])
        assert level(out.obs).tolist() == levels
    assert sim.elapsed_steps.tolist() == [1, 0]
    assert wm.burn_in_rows == 2 + 1 + 1


def test_termination_takes_precedence_over_truncation() -> None:
    sim = DreamSimulator(FakeWorldModel(terminate_after=2), 1, seed=0, horizon=2)
    sim.reset()
    sim.step(torch.tensor([0]))
    out = sim.step(torch.tensor([0]))
    assert out.terminated.tolist() == [True] and out.truncated.tolist() == [False]


def test_no_autoreset_keeps_dreaming_from_the_end() -> None:
    sim = DreamSimulator(FakeWorldModel(terminate_after=1), 1, seed=0, autoreset=False)
    sim.reset(context_index=[0])
    out = sim.step(torch.tensor([1]))
    assert out.terminated.tolist() == [True]
    assert torch.equal(out.obs, out.final_obs) and level(out.obs).tolist() == [3 + 2]


def _rollout(sim: DreamSimulator, actions: torch.Tensor) -> list[torch.Tensor]:
    results = [sim.reset(seed=3)]
    for a in actions:
        out = sim.step(a)
        results += [out.obs, out.reward, out.terminated, out.truncated, out.final_obs]
    return results


def test_seeded_rollouts_repeat_and_seeds_matter() -> None:
    actions = torch.randint(0, 4, (9, 3), generator=torch.Generator().manual_seed(0))
    first = _rollout(DreamSimulator(FakeWorldModel(terminate_after=3), 3, horizon=4), actions)
    again = _rollout(DreamSimulator(FakeWorldModel(terminate_after=3), 3, horizon=4), actions)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = DreamSimulator(FakeWorldModel(terminate_after=3), 3, horizon=4)
    other.reset(seed=4)
    out = other.step(actions[0])
    assert not torch.equal(out.final_obs, first[5])  # different noise markers


def test_env_trajectory_does_not_depend_on_num_envs() -> None:
    n, steps, seed = 4, 12, 21
    actions = torch.randint(0, 4, (steps, n), generator=torch.Generator().manual_seed(1))
    batched = DreamSimulator(FakeWorldModel(terminate_after=3), n, horizon=5)
    outs = [batched.reset(seed=seed)] + [batched.step(a) for a in actions]
    for i in (0, 2, 3):
        alone = DreamSimulator(FakeWorldModel(terminate_after=3), 1, horizon=5)
        assert torch.equal(alone.reset(seed=seed + i)[0], outs[0][i])
        for t in range(steps):
            single = alone.step(actions[t, i : i + 1])
            for a, b in zip(single, outs[t + 1], strict=True):
                assert torch.equal(a[0], b[i]), (i, t)


def test_partial_reset_touches_only_masked_envs() -> None:
    wm = FakeWorldModel(terminate_after=100)
    sim = DreamSimulator(wm, 3, seed=0, horizon=50)
    sim.reset()
    sim.step(torch.tensor([1, 1, 1]))
    before_obs, before_act, rows = sim.context_obs, sim.context_act, wm.burn_in_rows
    obs = sim.reset(seed=7, mask=torch.tensor([False, True, False]))
    assert sim.elapsed_steps.tolist() == [1, 0, 1]
    assert wm.burn_in_rows == rows + 1
    ctx = sim.context_obs
    assert torch.equal(ctx[[0, 2]], before_obs[[0, 2]])
    assert torch.equal(sim.context_act[[0, 2]], before_act[[0, 2]])
    k = _replay_generator(7 + 1, 5)[0]()
    assert level(obs[1]).item() == CONTEXT_STRIDE * k + 3
    # the reseeded env now follows the stream of a fresh env seeded 8
    fresh = DreamSimulator(FakeWorldModel(terminate_after=100), 1, horizon=50)
    fresh.reset(seed=8)
    assert torch.equal(
        sim.step(torch.tensor([0, 2, 0])).obs[1], fresh.step(torch.tensor([2])).obs[0]
    )


def test_reset_argument_errors() -> None:
    sim = DreamSimulator(FakeWorldModel(), 2, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        sim.step(torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="first reset"):
        sim.reset(mask=torch.tensor([True, False]))
    sim.reset()
    with pytest.raises(ValueError, match="at least one True"):
        sim.reset(mask=torch.tensor([False, False]))
    with pytest.raises(ValueError, match=r"bool of shape \(2,\)"):
        sim.reset(mask=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="seed"):
        sim.reset(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        sim.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"context_index\[0\]"):
        sim.reset(context_index=[5, None])
    with pytest.raises(ValueError, match=r"context_index\[1\]"):
        sim.reset(context_index=[0, 1.5])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (torch.tensor([0.0, 1.0]), TypeError, "float32"),
        (torch.tensor([True, False]), TypeError, "bool"),
        ([0, 1], TypeError, "list"),
        (torch.tensor([0, 1, 2]), ValueError, r"got shape \(3,\)"),
        (torch.tensor([[0, 1]]), ValueError, r"got shape \(1, 2\)"),
        (torch.tensor([0, 4]), ValueError, r"\[0, 4\).*got \[4\] at envs \[1\]"),
        (torch.tensor([-1, 0]), ValueError, r"got \[-1\] at envs \[0\]"),
    ],
)
def test_bad_actions_raise_and_leave_the_env_usable(bad, error, message) -> None:
    sims = [DreamSimulator(FakeWorldModel(), 2, seed=0) for _ in range(2)]
    for sim in sims:
        sim.reset()
    with pytest.raises(error, match=message):
        sims[0].step(bad)
    assert sims[0].elapsed_steps.tolist() == [0, 0]
    good = torch.tensor([1, 3], dtype=torch.int32)  # any integer dtype is accepted
    a, b = sims[0].step(good), sims[1].step(good)  # no randomness was consumed by the bad call
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_nan_from_the_model_raises_and_commits_nothing() -> None:
    wm = FakeWorldModel()
    sim = DreamSimulator(wm, 2, seed=0)
    sim.reset()
    before = sim.context_obs
    wm.emit_nan = True
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        sim.step(torch.tensor([0, 0]))
    assert torch.equal(sim.context_obs, before) and sim.elapsed_steps.tolist() == [0, 0]
    wm.emit_nan = False
    assert torch.isfinite(sim.step(torch.tensor([0, 0])).obs).all()


def test_sampler_overrides_and_argument_validation() -> None:
    wm = FakeWorldModel()
    sim = DreamSimulator(wm, 1, num_denoising_steps=1, sampler="heun", reward_mode="mean")
    sim.reset(seed=0)
    sim.step(torch.tensor([0]))
    base = wm.config.sampler
    assert wm.last_sampler == dataclasses.replace(base, num_steps=1, method="heun")
    assert wm.last_reward_mode == "mean"
    sim = DreamSimulator(wm, 1)
    sim.reset(seed=0)
    sim.step(torch.tensor([0]))
    assert wm.last_sampler == base and wm.last_reward_mode == "sample"
    bad_kwargs = [
        ({"sampler": "ddim"}, "sampler"),
        ({"num_denoising_steps": 0}, "num_denoising_steps"),
        ({"reward_mode": "max"}, "reward_mode"),
        ({"horizon": 0}, "horizon"),
        ({"device": "meta"}, "device"),
    ]
    for kwargs, name in bad_kwargs:
        with pytest.raises(ValueError, match=name):
            DreamSimulator(wm, 1, **kwargs)
    with pytest.raises(ValueError, match="num_envs"):
        DreamSimulator(wm, 0)
    # a bound from the free memory, before anything is allocated (10 million envs: ~55 TiB)
    with pytest.raises(ValueError, match=r"10000000 envs need about .* GiB .* free on cpu; use "):
        DreamSimulator(wm, 10_000_000)
    wm.contexts = ContextBank.empty(4)
    with pytest.raises(ValueError, match="at least one starting context"):
        DreamSimulator(wm, 1)


def test_make_simulator_checkpoint_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAMOND_ENV_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="diamond-env train-wm --game Pong --run-dir"):
        make_simulator("Pong", 2)  # no model of Pong ships with the package
    with pytest.raises(ValueError, match="'Pong'"):
        make_simulator("Pong", 2, world_model=FakeWorldModel(game="Breakout"))
    sim = make_simulator(
        "Breakout", 2, world_model=FakeWorldModel(), horizon=9, max_episode_steps=4
    )
    assert sim.horizon == 4 and sim.num_envs == 2


def test_real_tiny_world_model_end_to_end(tmp_path: Path) -> None:
    """Save a real tiny model, load it by path, dream two steps; seeded rollouts repeat."""
    g = torch.Generator().manual_seed(0)
    bank = ContextBank(
        obs=torch.randint(0, 256, (3, 4, H, W, 3), dtype=torch.uint8, generator=g),
        act=torch.randint(0, 4, (3, 4), generator=g),
    )
    WorldModel(get_preset("tiny"), "Breakout", MEANINGS, bank).save(tmp_path / "wm")
    runs = []
    for _ in range(2):
        sim = make_simulator("Breakout", 2, checkpoint=tmp_path / "wm", num_denoising_steps=1)
        run = [sim.reset(seed=1)]
        for a in ([1, 2], [3, 0]):
            out = sim.step(torch.tensor(a))
            run += list(out)
        runs.append(run)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    obs, reward = runs[0][1], runs[0][2]
    assert obs.shape == (2, 3, H, W) and obs.abs().max() <= 1.0
    levels = (obs + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert set(reward.tolist()) <= {-1.0, 0.0, 1.0}
