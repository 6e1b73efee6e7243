"""Benchmarks that print figures (``diamond-env bench``); never run as timed tests.

Each ``bench_*`` function measures one thing and returns plain numbers; :func:`run_bench`
nests them by what they measure (``collection`` -> ``num_envs`` -> ``steps_per_s``;
``dream`` -> ``grid`` -> preset -> ``num_envs`` -> ``frames_per_s``) so the JSON output can be
compared across machines and dates.

The dream figures time :class:`~diamond_env.envs.simulator.DreamSimulator` steps (sampler +
reward/end model + autoreset, no agent) of a world model with random weights: the cost of a step
does not depend on the weights, so no checkpoint is needed.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diamond_env.atari import ATARI_SETTINGS, make_atari_env

SECTIONS = ("collection", "ale_env", "dream")
"""What :func:`run_bench` can measure: real collection, the two ALE paths, the dream grid."""
DEFAULT_SECTIONS = ("collection", "ale_env")
DREAM_PRESETS = ("tiny", "small", "paper")
DREAM_NUM_ENVS = (1, 8, 32, 128)
DREAM_NUM_ENVS_QUICK = (1, 8)
DREAM_CONTEXTS = 4
"""Random starting contexts in the synthetic bank of :func:`bench_dream`."""


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "date": date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
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


def _synthetic_world_model(preset: str, game: str, device: str, seed: int) -> Any:
    """A :class:`WorldModel` of ``preset`` with seeded random weights and a bank of
    :data:`DREAM_CONTEXTS` random uint8 contexts, on ``device``. The global RNG is left as it
    was."""
    from diamond_env.atari import action_meanings
    from diamond_env.config import IMG_SIZE, get_preset
    from diamond_env.world_model import ContextBank, WorldModel

    config = get_preset(preset)
    meanings = action_meanings(game)
    gen = torch.Generator().manual_seed(seed)
    shape = (DREAM_CONTEXTS, config.denoiser.num_context, IMG_SIZE, IMG_SIZE, 3)
    bank = ContextBank(
        obs=torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8),
        act=torch.randint(0, len(meanings), shape[:2], generator=gen, dtype=torch.int64),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WorldModel(config, game, meanings, bank)
    return model.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_dream(
    preset: str,
    num_envs: int,
    steps: int,
    device: str = "cpu",
    warmup: int = 1,
    *,
    min_seconds: float = 0.0,
    game: str = "Breakout",
    horizon: int = 15,
    seed: int = 0,
) -> dict[str, float]:
    """Batched dream steps/s of a ``preset`` world model (random weights) with ``num_envs`` envs.

    Runs ``warmup`` untimed steps, then times steps with uniform random actions under
    ``torch.inference_mode``: exactly ``steps`` when ``min_seconds`` is 0, else until
    ``min_seconds`` have passed or ``steps`` were taken (at least one). The sampler is the
    preset's ``SamplerConfig`` (3 Euler steps in tiny/small/paper); envs are truncated after ``horizon`` steps and
    reset in the step, as in agent training. On CUDA the device is synchronised before each timer
    read.

    Returns ``frames_per_s`` (imagined frames/s, ``num_envs * steps_per_s``), ``steps_per_s``
    (batched steps/s), ``seconds`` and ``steps`` (timed), ``num_envs``, ``denoising_steps`` and
    ``params`` (world-model parameters).
    """
    from diamond_env.envs.simulator import DreamSimulator

    for name, value, low in (("num_envs", num_envs, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if not min_seconds >= 0.0:
        raise ValueError(f"min_seconds: expected a float >= 0, got {min_seconds!r}")
    dev = torch.device(device)
    model = _synthetic_world_model(preset, game, device, seed)
    sim = DreamSimulator(model, num_envs, horizon=horizon, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        sim.reset()
        for _ in range(warmup):
            sim.step(torch.randint(0, sim.num_actions, (num_envs,), generator=gen))
        _sync(dev)
        budget = min_seconds if min_seconds > 0.0 else float("inf")
        taken, elapsed, start = 0, 0.0, time.perf_counter()
        while taken < steps and elapsed < budget:
            sim.step(torch.randint(0, sim.num_actions, (num_envs,), generator=gen))
            taken += 1
            _sync(dev)
            elapsed = time.perf_counter() - start
    elapsed = max(elapsed, 1e-9)
    return {
        "frames_per_s": num_envs * taken / elapsed,
        "steps_per_s": taken / elapsed,
        "seconds": elapsed,
        "steps": taken,
        "num_envs": num_envs,
        "denoising_steps": sim.sampler_config.num_steps,
        "params": sum(p.numel() for p in model.parameters()),
    }


def run_dream_grid(
    presets: Sequence[str] = DREAM_PRESETS,
    num_envs: Sequence[int] = DREAM_NUM_ENVS,
    *,
    device: str = "cpu",
    min_seconds: float = 10.0,
    max_steps: int = 10_000,
    game: str = "Breakout",
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`bench_dream` for every preset x num_envs: one warm-up step, then steps until
    ``min_seconds`` (a single timed step where one step takes longer). ``progress`` prints each
    cell as it finishes (the paper x 128 cell takes minutes on a 2-core CPU)."""
    from diamond_env.config import PRESETS

    if isinstance(presets, str) or not presets or not set(presets) <= set(PRESETS):
        raise ValueError(
            f"presets: expected a sequence of names from {list(PRESETS)}, got {presets!r}"
        )
    if isinstance(num_envs, int) or not num_envs:
        raise ValueError(f"num_envs: expected a non-empty sequence of ints, got {num_envs!r}")
    grid: dict[str, dict[int, dict[str, float]]] = {}
    for preset in presets:
        grid[preset] = {}
        for n in num_envs:
            fig = bench_dream(
                preset, n, max_steps, device, warmup=1, min_seconds=min_seconds, game=game
            )
            grid[preset][n] = fig
            if progress:
                print(f"dream {preset:<6} num_envs={n:<4} {_dream_cell(fig)}", flush=True)
    return {"device": device, "game": game, "min_seconds": min_seconds, "grid": grid}


def run_bench(
    quick: bool = True,
    game: str = "Breakout",
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    dream_presets: Sequence[str] | None = None,
    dream_num_envs: Sequence[int] | None = None,
    dream_min_seconds: float | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Run the benchmarks of ``sections`` (a subset of :data:`SECTIONS`).

    ``quick`` keeps each section to about a minute on 2 cores: fewer real steps, and a dream grid
    of 3 s cells over ``num_envs`` (1, 8) (full: 10 s cells over (1, 8, 32, 128)).
    ``dream_presets`` / ``dream_num_envs`` / ``dream_min_seconds`` replace the default grid and
    cell time; ``device`` is where the dream runs (the real env is always on the CPU).
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ValueError(
            f"sections: expected a non-empty subset of {list(SECTIONS)}, got {sections!r}"
        )
    steps = 4000 if quick else 20000
    results: dict[str, Any] = {"machine": machine_info(), "game": game}
    if "collection" in sections:
        results["collection"] = {n: bench_collection(game, n, steps) for n in (1, 8)}
    if "ale_env" in sections:
        results["ale_env_steps_per_s"] = {n: bench_ale_paths(game, n, steps) for n in (1, 8)}
    if "dream" in sections:
        default_envs = DREAM_NUM_ENVS_QUICK if quick else DREAM_NUM_ENVS
        default_seconds = 3.0 if quick else 10.0
        results["dream"] = run_dream_grid(
            DREAM_PRESETS if dream_presets is None else dream_presets,
            default_envs if dream_num_envs is None else dream_num_envs,
            device=device, game=game, progress=progress,
            min_seconds=default_seconds if dream_min_seconds is None else dream_min_seconds,
        )  # fmt: skip
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
    if "dream" in results:
        lines.extend(format_dream(results["dream"]))
    return "\n".join(lines)


def _dream_cell(fig: dict[str, float]) -> str:
    return (
        f"{fig['frames_per_s']:9.2f} frames/s ({fig['steps']} steps in {fig['seconds']:.1f} s, "
        f"{fig['denoising_steps']} denoising steps)"
    )


def format_dream(dream: dict[str, Any]) -> list[str]:
    """The dream grid as table lines: one row per preset, frames/s per ``num_envs`` column."""
    grid: dict[str, dict[Any, dict[str, float]]] = dream["grid"]
    columns = sorted({int(n) for cells in grid.values() for n in cells})
    denoising = sorted({int(f["denoising_steps"]) for c in grid.values() for f in c.values()})
    lines = [
        f"dream env frames/s ({dream['game']}, random weights, device {dream['device']}, "
        f"{'/'.join(map(str, denoising))} denoising steps, columns = num_envs)",
        f"{'preset':<8}{'params':>8}" + "".join(f"{'n=' + str(n):>10}" for n in columns),
    ]
    for preset, cells in grid.items():
        by_n = {int(n): fig for n, fig in cells.items()}
        params = next(iter(by_n.values()))["params"] / 1e6 if by_n else 0.0
        row = "".join(
            f"{by_n[n]['frames_per_s']:>10.2f}" if n in by_n else f"{'-':>10}" for n in columns
        )
        lines.append(f"{preset:<8}{params:>7.1f}M{row}")
    return lines
