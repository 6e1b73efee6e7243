"""Benchmarks that print figures (``diamond-env bench``); never run as timed tests.

Each ``bench_*`` function measures one thing and returns plain numbers; :func:`run_bench`
nests them by what they measure (``collection`` -> ``num_envs`` -> ``steps_per_s``) so the JSON
output can be compared across machines and dates.
"""

from __future__ import annotations

import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diamond_env.atari import ATARI_SETTINGS, make_atari_env


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "date": date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def bench_collection(game: str, num_envs: int, steps: int) -> dict[str, float]:
    """Real-ALE collection into a dataset on disk with a random policy: steps/s end to end."""
    from diamond_env.data.collect import Collector, RandomPolicy
    from diamond_env.data.dataset import EpisodeDataset

    env = make_atari_env(game, num_envs)
    with tempfile.TemporaryDirectory() as tmp:
        ds = EpisodeDataset.create(
            Path(tmp) / "d", env.game, ATARI_SETTINGS,
            int(env.single_action_space.n),  # type: ignore[attr-defined]
            env.get_action_meanings(),
        )  # fmt: skip
        collector = Collector(env, ds, seed=0)
        stats = collector.collect(RandomPolicy(ds.num_actions, seed=0), steps=steps, progress=False)
    env.close()
    return {"steps_per_s": stats.steps_per_s, "steps": float(stats.steps)}


def bench_ale_paths(game: str, num_envs: int, steps: int) -> dict[str, float]:
    """Env steps/s of our gymnasium-wrapper path against ale-py's C++ ``AtariVectorEnv``."""
    from ale_py.vector_env import AtariVectorEnv

    from diamond_env.atari import canonical_game

    rng = np.random.default_rng(0)
    ours = make_atari_env(game, num_envs, seed=0)
    n_act = int(ours.single_action_space.n)  # type: ignore[attr-defined]
    cpp = AtariVectorEnv(
        _rom_id(canonical_game(game)), num_envs, grayscale=False, img_height=64, img_width=64,
        stack_num=1, reward_clipping=False, use_fire_reset=False, autoreset_mode="SameStep",
    )  # fmt: skip
    cpp.reset(seed=0)
    out = {}
    for name, env in (("gymnasium_wrappers", ours), ("ale_cpp_vector", cpp)):
        start = time.perf_counter()
        for _ in range(max(1, steps // num_envs)):
            env.step(rng.integers(0, n_act, size=num_envs))
        out[name] = max(1, steps // num_envs) * num_envs / (time.perf_counter() - start)
    ours.close()
    cpp.close()
    return out


def _rom_id(game: str) -> str:
    out = [game[0].lower()]
    for ch in game[1:]:
        out.append("_" + ch.lower() if ch.isupper() else ch)
    return "".join(out)


def run_bench(quick: bool = True, game: str = "Breakout") -> dict[str, Any]:
    """Run every benchmark; ``quick`` keeps the whole run to a few minutes on 2 cores."""
    steps = 4000 if quick else 20000
    results: dict[str, Any] = {"machine": machine_info(), "game": game}
    results["collection"] = {n: bench_collection(game, n, steps) for n in (1, 8)}
    results["ale_env_steps_per_s"] = {n: bench_ale_paths(game, n, steps) for n in (1, 8)}
    return results


def format_results(results: dict[str, Any]) -> str:
    """A human-readable table of :func:`run_bench`'s results."""
    lines = [f"machine: {results['machine']}"]
    for n, fig in results.get("collection", {}).items():
        lines.append(
            f"collection  {results['game']:<10} num_envs={n:<4} {fig['steps_per_s']:8.0f} steps/s"
        )
    for n, fig in results.get("ale_env_steps_per_s", {}).items():
        parts = "  ".join(f"{k}={v:.0f}" for k, v in fig.items())
        lines.append(f"ale env     {results['game']:<10} num_envs={n:<4} {parts} steps/s")
    return "\n".join(lines)
