"""Counter-based randomness of the dream (``diamond_env.dream.keyed_random``)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diamond_env.cli.bench import synthetic_world_model
from diamond_env.dream import keyed_random
from diamond_env.dream.simulator import DreamSimulator

U64 = (1 << 64) - 1


def splitmix64_output(z: int) -> int:
    """SplitMix64's output function in Python integers (Steele, Lea and Flood, "Fast splittable
    pseudorandom number generators", OOPSLA 2014; constants of Java's SplittableRandom.mix64)."""
    z &= U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
    return z ^ (z >> 31)


def test_hashes_are_splitmix64_of_key_and_counter_in_wrapping_arithmetic() -> None:
    seeds = torch.tensor([0, 1, 12345, 2**63 - 1])
    keys = keyed_random.keys_from_seeds(seeds)
    golden = 0x9E3779B97F4A7C15
    for s, k in zip(seeds.tolist(), keys.tolist(), strict=True):
        assert k & U64 == splitmix64_output(s * golden + golden)
    counters = torch.tensor([0, 3, 2**31, 7])
    bits = keyed_random.hash_block(keys, counters, 300)
    for i in range(4):
        for j in (0, 1, 299):
            z = (keys[i].item() & U64) + golden * ((counters[i].item() << 32) + j)
            assert bits[i, j].item() & U64 == splitmix64_output(z), (i, j)


def test_normals_and_uniforms_have_the_right_moments_and_no_cross_env_correlation() -> None:
    keys = keyed_random.keys_from_seeds(torch.arange(64))
    counters = torch.zeros(64, dtype=torch.int64)
    x = keyed_random.normal(keys, counters, 12288)
    assert x.shape == (64, 12288) and x.dtype == torch.float32
    n = x.numel()  # 786k values: the standard errors are ~1e-3 (mean), ~1e-3 (variance)
    assert abs(float(x.mean())) < 5e-3 and abs(float(x.var()) - 1) < 1e-2
    assert abs(float((x**3).mean())) < 2e-2 and abs(float((x**4).mean()) - 3) < 5e-2
    assert n == 64 * 12288
    corr = torch.corrcoef(x[:8])  # neighbouring seeds
    assert float((corr - torch.eye(8)).abs().max()) < 0.05
    u = keyed_random.uniform(keys, counters + 1, 1000)
    assert float(u.min()) > 0 and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 5e-3
    # a draw depends on the counter, and only on its own env's key and counter
    assert not torch.equal(keyed_random.normal(keys, counters + 1, 10), x[:, :10])
    alone = keyed_random.normal(keys[5:6], counters[5:6], 12288)
    assert torch.equal(alone[0], x[5])


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(num_envs: int) -> int:
    model = synthetic_world_model("tiny", "Breakout", "cpu", seed=0)
    sim = DreamSimulator(model, num_envs, horizon=3, seed=0)
    with torch.inference_mode():
        sim.reset()
        counter = _OpCounter()
        with counter:
            for _ in range(3):  # the third step truncates and restarts every env
                sim.step(torch.zeros(num_envs, dtype=torch.int64))
    return counter.ops


def test_a_dream_step_runs_the_same_tensor_operations_for_any_number_of_envs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No per-env work: steps (with their randomness and the restarts at the horizon) dispatch
    as many torch operations for 32 envs as for 2 (the per-env generators they replace made 3
    calls per env and step). On a CPU the hashing goes by blocks of ``CPU_CHUNK`` values (21
    envs' noise), which adds a block's few operations per 21 envs; one block here."""
    monkeypatch.setattr(keyed_random, "CPU_CHUNK", 1 << 30)
    assert _ops_per_step(2) == _ops_per_step(32)
