"""Benchmarks that print figures (``diamond-env bench``); never run as timed tests.

Each ``bench_*`` function measures one thing and returns plain numbers; :func:`run_bench`
nests them by what they measure (``collection`` -> ``num_envs`` -> ``steps_per_s``;
``dream`` -> ``grid`` -> preset -> ``num_envs`` -> ``frames_per_s``; ``train`` / ``imagination``
-> ``grid`` -> preset -> figures; ``fastpath`` -> ``grid`` -> preset -> ``num_envs`` -> variant)
so the JSON output can be compared across machines and dates.

The dream figures time :class:`~diamond_env.dream.simulator.DreamSimulator` steps (sampler +
reward/end model + autoreset, no agent) of a world model with random weights: the cost of a step
does not depend on the weights, so no checkpoint is needed. Its reward/end head is set to predict
reward 0 and no termination (as a trained model mostly does), so envs restart at the horizon
only. Training figures use random frames of the right shapes. Every figure that does work also
reads as achieved GFLOP/s against the FLOPs counted in :mod:`diamond_env.world_model.flops`.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diamond_env.atari import ATARI_SETTINGS, make_atari_env
from diamond_env.config import PRESETS, LoopConfig
from diamond_env.world_model.fastpath import FastPathOptions, prepare_world_model
from diamond_env.world_model.flops import (
    count_model_flops,
    denoiser_passes,
    denoiser_sample_flops,
    dream_frame_flops,
    imagination_update_flops,
    loop_counts,
    project_hours,
    rew_end_sample_flops,
)

SECTIONS = ("collection", "ale_env", "dream", "train", "imagination")
"""What :func:`run_bench` can measure: real collection, the two ALE paths, the dream grid,
world-model training and actor-critic imagination updates (per preset)."""
DEFAULT_SECTIONS = ("collection", "ale_env")
DREAM_PRESETS = ("tiny", "small", "paper")
DREAM_NUM_ENVS = (1, 8, 32, 128)
DREAM_NUM_ENVS_QUICK = (1, 8)
DREAM_CONTEXTS = 4
"""Random starting contexts in the synthetic bank of :func:`bench_dream`."""
TRAIN_PRESETS_QUICK = ("tiny", "cpu")
"""Presets of the ``train`` and ``imagination`` sections with ``quick`` (full: every preset)."""


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
    info.update(cpu_features())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU's model name and its native bf16 instructions (``avx512_bf16``, ``amx_bf16``),
    read from ``cpuinfo`` where it exists: bf16 autocast pays only on CPUs that have them."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines() if ":" in line)
    )  # the last processor's fields: they are the same on every core
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name", "?"),
        "cpu_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
    }


def bench_collection(game: str, num_envs: int, steps: int) -> dict[str, float]:
    """Real-ALE collection into a dataset on disk with a random policy: steps/s end to end."""
    from diamond_env.data.collect import Collector, RandomPolicy
    from diamond_env.data.dataset import EpisodeDataset

    env = make_atari_env(game, num_envs)
    with tempfile.TemporaryDirectory() as tmp:
        ds = EpisodeDataset.create(
            Path(tmp) / "d",
            env.game,
            ATARI_SETTINGS,
            int(env.single_action_space.n),  # type: ignore[attr-defined]
            env.get_action_meanings(),
        )
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
        _rom_id(canonical_game(game)),
        num_envs,
        grayscale=False,
        img_height=64,
        img_width=64,
        stack_num=1,
        reward_clipping=False,
        use_fire_reset=False,
        autoreset_mode="SameStep",
    )
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


def synthetic_world_model(preset: str, game: str, device: str, seed: int) -> Any:
    """A :class:`WorldModel` of ``preset`` with seeded random weights, a reward/end head that
    predicts reward 0 and no termination, and a bank of :data:`DREAM_CONTEXTS` random uint8
    contexts, on ``device``. The global RNG is left as it was."""
    from diamond_env.atari import action_meanings
    from diamond_env.config import IMG_SIZE, get_preset
    from diamond_env.world_model.model import ContextBank, WorldModel

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
    # logits: reward classes (-1, 0, +1), then (continue, end)
    model.rew_end.set_constant_logits([-10.0, 10.0, -10.0, 10.0, -10.0])
    return model.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(
    fn: Callable[[], object], steps: int, warmup: int, min_seconds: float, device: torch.device
) -> tuple[int, float]:
    """Call ``fn`` ``warmup`` times untimed, then time calls: exactly ``steps`` when
    ``min_seconds`` is 0, else until ``min_seconds`` have passed or ``steps`` were made (at least
    one). Returns (timed calls, seconds). On CUDA the device is synchronised before each read."""
    for name, value, low in (("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if not min_seconds >= 0.0:
        raise ValueError(f"min_seconds: expected a float >= 0, got {min_seconds!r}")
    for _ in range(warmup):
        fn()
    _sync(device)
    budget = min_seconds if min_seconds > 0.0 else float("inf")
    taken, elapsed, start = 0, 0.0, time.perf_counter()
    while taken < steps and elapsed < budget:
        fn()
        taken += 1
        _sync(device)
        elapsed = time.perf_counter() - start
    return taken, max(elapsed, 1e-9)


def _memory_start(device: torch.device) -> float:
    """Reset the CUDA peak counter; return the current figure :func:`_memory_figures` grows from."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return _max_rss_mb()


def _memory_figures(device: torch.device, start: float) -> dict[str, float]:
    """``peak_mem_mb``: CUDA ``max_memory_allocated`` since :func:`_memory_start`, or on the CPU
    the process's high-water resident set (``ru_maxrss``, over its whole life); ``mem_growth_mb``:
    how much that peak rose above ``start`` during the measurement (0 on the CPU when an earlier
    peak was higher)."""
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _max_rss_mb()
    )
    return {"peak_mem_mb": peak, "mem_growth_mb": max(0.0, peak - start)}


def _max_rss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, else KiB


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
    fastpath: FastPathOptions | None = None,
    inference: bool = True,
) -> dict[str, float]:
    """Batched dream steps/s of a ``preset`` world model (random weights) with ``num_envs`` envs.

    Runs ``warmup`` untimed steps, then times steps with uniform random actions under
    ``torch.inference_mode`` (``torch.no_grad`` when ``inference`` is False): exactly ``steps``
    when ``min_seconds`` is 0, else until ``min_seconds`` have passed or ``steps`` were taken (at
    least one). The sampler is the preset's ``SamplerConfig`` (3 Euler steps in every preset); envs
    are truncated after ``horizon`` steps and reset in the step, as in agent training. On CUDA the
    device is synchronised before each timer read. ``fastpath``: run a model prepared by
    :func:`diamond_env.world_model.fastpath.prepare_world_model` with these options.

    Returns ``frames_per_s`` (imagined frames/s, ``num_envs * steps_per_s``), ``steps_per_s``
    (batched steps/s), ``seconds`` and ``steps`` (timed), ``num_envs``, ``denoising_steps``,
    ``params`` (world-model parameters), ``gflop_per_frame`` (counted), ``gflop_per_s``
    (achieved) and the memory figures of :func:`_memory_figures`.
    """
    from diamond_env.dream.simulator import DreamSimulator

    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs: expected an int >= 1, got {num_envs!r}")
    _time_calls(lambda: None, steps, warmup, min_seconds, torch.device("cpu"))  # validation only
    dev = torch.device(device)
    model = synthetic_world_model(preset, game, device, seed)
    flops = count_model_flops(model.config, model.num_actions)
    if fastpath is not None:
        model = prepare_world_model(model, fastpath)
    start_mem = _memory_start(dev)
    sim = DreamSimulator(model, num_envs, horizon=horizon, seed=seed)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        sim.step(torch.randint(0, sim.num_actions, (num_envs,), generator=gen))

    with torch.inference_mode() if inference else torch.no_grad():
        sim.reset()
        taken, elapsed = _time_calls(step, steps, warmup, min_seconds, dev)
    frame_flops = dream_frame_flops(flops, denoiser_passes(sim.sampler_config))
    return {
        "frames_per_s": num_envs * taken / elapsed,
        "steps_per_s": taken / elapsed,
        "seconds": elapsed,
        "steps": taken,
        "num_envs": num_envs,
        "denoising_steps": sim.sampler_config.num_steps,
        "params": sum(p.numel() for p in model.parameters()),
        "gflop_per_frame": frame_flops / 1e9,
        "gflop_per_s": num_envs * taken / elapsed * frame_flops / 1e9,
        **_memory_figures(dev, start_mem),
    }


def _synthetic_data(num_actions: int, seed: int, episodes: int = 4, steps: int = 40) -> Any:
    """:class:`FlatData` of ``episodes`` games of ``steps`` random frames, actions and rewards,
    each ending in a termination."""
    from diamond_env.config import IMG_SIZE
    from diamond_env.data.episode import Episode, FlatData

    rng = np.random.default_rng(seed)
    games = []
    for _ in range(episodes):
        flags = np.zeros(steps, dtype=bool)
        games.append(
            Episode(
                obs=rng.integers(0, 256, (steps + 1, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8),
                act=rng.integers(0, num_actions, steps, dtype=np.int64),
                rew=rng.choice(np.array([-1.0, 0.0, 1.0], dtype=np.float32), steps),
                term=np.concatenate([flags[1:], [True]]),
                trunc=flags,
                life_loss=flags,
            )
        )
    return FlatData.from_episodes(games)


def _work_figures(taken: int, elapsed: float, batch: int, flops: int) -> dict[str, float]:
    per_s = taken / elapsed
    return {
        "samples_per_s": per_s * batch,
        "steps_per_s": per_s,
        "batch_size": batch,
        "seconds": elapsed,
        "steps": taken,
        "gflop_per_sample": flops / 1e9,
        "gflop_per_s": per_s * batch * flops / 1e9,
    }


def bench_train(
    preset: str,
    steps: int,
    device: str = "cpu",
    warmup: int = 1,
    *,
    min_seconds: float = 0.0,
    game: str = "Breakout",
    seed: int = 0,
) -> dict[str, Any]:
    """World-model training throughput of ``preset``: :class:`WorldModelTrainer` steps (segment
    sampling from random in-RAM data, forward, backward, AdamW) at the preset's batch sizes,
    timed as in :func:`_time_calls`, the denoiser first, then the reward/end model.

    Returns ``denoiser`` and ``rew_end``, each with ``samples_per_s`` (segments/s), ``steps_per_s``
    (gradient steps/s), ``batch_size``, ``seconds``, ``steps``, ``gflop_per_sample`` (≈ 3 x the
    counted forward) and ``gflop_per_s``; and the memory figures of :func:`_memory_figures`.
    """
    from diamond_env.data.segments import SegmentSampler
    from diamond_env.training.wm_trainer import WorldModelTrainer

    dev = torch.device(device)
    model = synthetic_world_model(preset, game, device, seed)
    config, flops = model.config, count_model_flops(model.config, model.num_actions)
    data, loop = _synthetic_data(model.num_actions, seed), model.config.loop
    den_sampler = SegmentSampler(data, loop.denoiser_seq_len, pad_after_end=False, seed=seed)
    re_sampler = SegmentSampler(data, loop.rew_end_seq_len, pad_after_end=True, seed=seed + 1)
    start_mem = _memory_start(dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        trainer = WorldModelTrainer(model, config, dev)
        den = _time_calls(
            lambda: trainer.denoiser_step(den_sampler), steps, warmup, min_seconds, dev
        )
        re = _time_calls(lambda: trainer.rew_end_step(re_sampler), steps, warmup, min_seconds, dev)
    return {
        "denoiser": _work_figures(
            *den,
            config.denoiser_optim.batch_size,
            denoiser_sample_flops(flops, loop.denoiser_seq_len - config.denoiser.num_context),
        ),
        "rew_end": _work_figures(*re, config.rew_end_optim.batch_size, rew_end_sample_flops(flops)),
        **_memory_figures(dev, start_mem),
    }


def bench_imagination(
    preset: str,
    steps: int,
    device: str = "cpu",
    warmup: int = 1,
    *,
    min_seconds: float = 0.0,
    game: str = "Breakout",
    seed: int = 0,
) -> dict[str, Any]:
    """Actor-critic updates/s of :class:`ImaginationTrainer` on a ``preset`` world model (random
    weights, no terminations) at the preset's imagination batch and horizon, timed as in
    :func:`_time_calls`.

    Returns ``updates_per_s``, ``frames_per_s`` (dream frames inside them: ``updates_per_s * B *
    H``), ``batch_size``, ``horizon``, ``seconds``, ``steps``, ``gflop_per_update`` (counted, see
    :func:`diamond_env.world_model.flops.imagination_update_flops`), ``gflop_per_s`` and the memory figures.
    """
    from diamond_env.models.actor_critic import ActorCritic
    from diamond_env.training.imagination import ImaginationTrainer

    dev = torch.device(device)
    model = synthetic_world_model(preset, game, device, seed)
    config, imag = model.config, model.config.imagination
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agent = ActorCritic(config.actor_critic, model.num_actions).to(dev)
    trainer = ImaginationTrainer(agent, model, config, seed=seed)
    start_mem = _memory_start(dev)
    taken, elapsed = _time_calls(trainer.train_step, steps, warmup, min_seconds, dev)
    passes = denoiser_passes(trainer.simulator.sampler_config)
    flops = imagination_update_flops(count_model_flops(config, model.num_actions), config, passes)
    return {
        "updates_per_s": taken / elapsed,
        "frames_per_s": taken / elapsed * imag.batch_size * imag.horizon,
        "batch_size": imag.batch_size,
        "horizon": imag.horizon,
        "seconds": elapsed,
        "steps": taken,
        "gflop_per_update": flops / 1e9,
        "gflop_per_s": taken / elapsed * flops / 1e9,
        **_memory_figures(dev, start_mem),
    }


def _check_presets(presets: Sequence[str]) -> None:
    if isinstance(presets, str) or not presets or not set(presets) <= set(PRESETS):
        raise ValueError(
            f"presets: expected a sequence of names from {list(PRESETS)}, got {presets!r}"
        )


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
    _check_presets(presets)
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


def run_preset_section(
    section: str,
    presets: Sequence[str],
    *,
    device: str = "cpu",
    min_seconds: float = 10.0,
    max_steps: int = 10_000,
    game: str = "Breakout",
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`bench_train` (``section="train"``) or :func:`bench_imagination`
    (``"imagination"``) for every preset: one warm-up step, then steps until ``min_seconds``."""
    benches = {"train": bench_train, "imagination": bench_imagination}
    if section not in benches:
        raise ValueError(f"section: expected one of {list(benches)}, got {section!r}")
    _check_presets(presets)
    grid: dict[str, dict[str, Any]] = {}
    for preset in presets:
        grid[preset] = benches[section](
            preset, max_steps, device, 1, min_seconds=min_seconds, game=game
        )
        if progress:
            print("\n".join(_SECTION_FORMATS[section]({preset: grid[preset]})), flush=True)
    return {"device": device, "game": game, "min_seconds": min_seconds, "grid": grid}


def run_fastpath_grid(
    options: FastPathOptions,
    presets: Sequence[str],
    num_envs: Sequence[int],
    *,
    device: str = "cpu",
    min_seconds: float = 10.0,
    max_steps: int = 10_000,
    game: str = "Breakout",
    progress: bool = False,
) -> dict[str, Any]:
    """The dream with fast paths off and on, cell by cell: variant ``plain``, each option alone
    (when several are on) and all of them together (named ``a+b``). Every variant steps under
    ``torch.no_grad`` (as an agent's loop does), so ``inference_mode`` is measured too. Each cell
    holds ``frames_per_s`` and ``ratio`` (to ``plain``) per variant."""
    _check_presets(presets)
    names = options.names()
    if not names:
        raise ValueError("fastpath: expected at least one option on, got none")
    variants: dict[str, FastPathOptions | None] = {"plain": None}
    if len(names) > 1:
        variants.update({n: FastPathOptions.from_names([n]) for n in names})
    variants["+".join(names)] = options
    grid: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for preset in presets:
        grid[preset] = {}
        for n in num_envs:
            fps = {
                name: bench_dream(
                    preset,
                    n,
                    max_steps,
                    device,
                    min_seconds=min_seconds,
                    game=game,
                    fastpath=opt,
                    inference=False,
                )["frames_per_s"]
                for name, opt in variants.items()
            }
            grid[preset][n] = {
                "frames_per_s": fps,
                "ratio": {k: v / fps["plain"] for k, v in fps.items()},
            }
            if progress:
                print(_fastpath_row(preset, n, grid[preset][n]), flush=True)
    return {"device": device, "game": game, "options": names, "grid": grid}


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
    train_presets: Sequence[str] | None = None,
    fastpath: Mapping[str, bool] | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmarks of ``sections`` (a subset of :data:`SECTIONS`).

    ``quick`` keeps each section to about a minute on 2 cores: fewer real steps, and a dream grid
    of 3 s cells over ``num_envs`` (1, 8) (full: 10 s cells over (1, 8, 32, 128)).
    ``dream_presets`` / ``dream_num_envs`` / ``dream_min_seconds`` replace the default grid and
    cell time; ``device`` is where the models run (the real env is always on the CPU).
    ``train_presets`` are the presets of the ``train`` and ``imagination`` sections (default:
    ``dream_presets`` when given, else :data:`TRAIN_PRESETS_QUICK` with ``quick``, every preset
    without); their cells last ``dream_min_seconds`` too. ``fastpath`` (option names, or a mapping
    name -> on) adds ``results["fastpath"]``: :func:`run_fastpath_grid` over the dream grid.
    ``results["projection"]`` holds :func:`loop_projection` when it can be computed.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ValueError(
            f"sections: expected a non-empty subset of {list(SECTIONS)}, got {sections!r}"
        )
    fast = FastPathOptions.from_names(fastpath) if fastpath is not None else None
    steps = 4000 if quick else 20000
    seconds = (3.0 if quick else 10.0) if dream_min_seconds is None else dream_min_seconds
    presets = DREAM_PRESETS if dream_presets is None else dream_presets
    default_envs = DREAM_NUM_ENVS_QUICK if quick else DREAM_NUM_ENVS
    num_envs = default_envs if dream_num_envs is None else dream_num_envs
    if train_presets is None:
        train_presets = dream_presets or (TRAIN_PRESETS_QUICK if quick else PRESETS)
    results: dict[str, Any] = {"machine": machine_info(), "game": game}
    if "collection" in sections:
        results["collection"] = {n: bench_collection(game, n, steps) for n in (1, 8)}
    if "ale_env" in sections:
        results["ale_env_steps_per_s"] = {n: bench_ale_paths(game, n, steps) for n in (1, 8)}
    common: dict[str, Any] = {
        "device": device,
        "game": game,
        "progress": progress,
        "min_seconds": seconds,
    }
    if "dream" in sections:
        results["dream"] = run_dream_grid(presets, num_envs, **common)
    for section in ("train", "imagination"):
        if section in sections:
            results[section] = run_preset_section(section, train_presets, **common)
    if fast is not None:
        results["fastpath"] = run_fastpath_grid(fast, presets, num_envs, **common)
    projection = loop_projection(results)
    if projection:
        results["projection"] = projection
    return results


def loop_projection(
    results: dict[str, Any], loop: LoopConfig | None = None
) -> dict[str, dict[str, float]]:
    """Hours of a full run of ``loop`` (default ``LoopConfig()``: Atari 100k, docs/method.md §5) for each
    preset measured in both the ``train`` and ``imagination`` sections of ``results``, from
    :func:`diamond_env.world_model.flops.project_hours`::

        hours = ( N_den / denoiser_steps_per_s + N_re / rew_end_steps_per_s
                + N_ac / actor_critic_updates_per_s + real_steps / collection_steps_per_s ) / 3600

    with ``N_den = N_re = 10,000 + 999 x 400 = 409,600``, ``N_ac = 5,000 + 999 x 400 = 404,600``
    (1,000 epochs: 950 with collection after 5,000 initial steps, then 50) and the measured
    throughputs of that preset at its own batch sizes and imagination batch x horizon (the paper
    preset: 32 and 32 x 15). Collection counts only when the ``collection`` section (1 env) was
    measured; evaluation games are not included. Empty when nothing can be projected.
    """
    counts = loop_counts(LoopConfig() if loop is None else loop)
    train = results.get("train", {}).get("grid", {})
    imag = results.get("imagination", {}).get("grid", {})
    collection = results.get("collection", {})
    one_env = collection.get(1, collection.get("1"))
    out = {}
    for preset in (p for p in train if p in imag):
        out[preset] = project_hours(
            counts,
            denoiser_steps_per_s=train[preset]["denoiser"]["steps_per_s"],
            rew_end_steps_per_s=train[preset]["rew_end"]["steps_per_s"],
            actor_critic_steps_per_s=imag[preset]["updates_per_s"],
            collection_steps_per_s=None if one_env is None else one_env["steps_per_s"],
        )
    return out


def format_results(results: dict[str, Any]) -> str:
    """A human-readable table of :func:`run_bench`'s results (also of its JSON file)."""
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
    for section, fmt in _SECTION_FORMATS.items():
        if section in results:
            lines.extend(fmt(results[section]["grid"]))
    if "fastpath" in results:
        lines.extend(format_fastpath(results["fastpath"]))
    lines.extend(format_projection(loop_projection(results)))
    return "\n".join(lines)


def _dream_cell(fig: dict[str, float]) -> str:
    return (
        f"{fig['frames_per_s']:9.2f} frames/s ({fig['steps']} steps in {fig['seconds']:.1f} s, "
        f"{fig['denoising_steps']} denoising steps)"
    )


def format_dream(dream: dict[str, Any]) -> list[str]:
    """The dream grid as table lines: one row per preset, frames/s per ``num_envs`` column, then
    achieved GFLOP/s per preset (best cell)."""
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
    for preset, cells in grid.items():
        best = max(cells.values(), key=lambda f: f["frames_per_s"], default=None)
        if best is not None and "gflop_per_s" in best:
            lines.append(
                f"  {preset}: {best['gflop_per_frame']:.2f} GFLOP/frame, best "
                f"{best['gflop_per_s']:.1f} GFLOP/s at num_envs={int(best['num_envs'])}, "
                f"peak memory {best['peak_mem_mb']:.0f} MiB"
            )
    return lines


def format_train(grid: dict[str, dict[str, Any]]) -> list[str]:
    """Training rows: samples/s and achieved GFLOP/s of each network per preset."""
    lines = []
    for preset, fig in grid.items():
        parts = [
            f"{name} {fig[name]['samples_per_s']:8.1f} samples/s (batch "
            f"{fig[name]['batch_size']}, {fig[name]['gflop_per_s']:6.1f} GFLOP/s)"
            for name in ("denoiser", "rew_end")
        ]
        lines.append(
            f"train       {preset:<6} " + "  ".join(parts) + f"  peak {fig['peak_mem_mb']:.0f} MiB"
        )
    return lines


def format_imagination(grid: dict[str, dict[str, Any]]) -> list[str]:
    """Imagination rows: actor-critic updates/s, dream frames/s inside them, GFLOP/s."""
    return [
        f"imagination {preset:<6} {fig['updates_per_s']:8.3f} updates/s (batch "
        f"{fig['batch_size']} x horizon {fig['horizon']}: {fig['frames_per_s']:8.1f} frames/s, "
        f"{fig['gflop_per_s']:6.1f} GFLOP/s)  peak {fig['peak_mem_mb']:.0f} MiB"
        for preset, fig in grid.items()
    ]


_SECTION_FORMATS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "train": format_train,
    "imagination": format_imagination,
}


def format_fastpath(fastpath: dict[str, Any]) -> list[str]:
    """Fast-path rows: frames/s of each variant and its ratio to the plain path."""
    lines = [f"fast paths (dream frames/s, device {fastpath['device']}, ratio to plain)"]
    for preset, cells in fastpath["grid"].items():
        lines.extend(_fastpath_row(preset, n, cell) for n, cell in cells.items())
    return lines


def _fastpath_row(preset: str, num_envs: Any, cell: dict[str, dict[str, float]]) -> str:
    parts = "  ".join(
        f"{name}={fps:.2f} (x{cell['ratio'][name]:.2f})"
        for name, fps in cell["frames_per_s"].items()
    )
    return f"fastpath    {preset:<6} num_envs={int(num_envs):<4} {parts}"


def format_projection(projection: dict[str, dict[str, float]]) -> list[str]:
    """One line per preset: projected hours of the Atari-100k loop and where they go."""
    return [
        f"projection  {preset:<6} Atari-100k loop (docs/method.md §5) {h['total']:.1f} h = denoiser "
        f"{h['denoiser']:.1f} + rew/end {h['rew_end']:.1f} + actor-critic {h['actor_critic']:.1f}"
        f" + collection {h['collection']:.1f} h (no evaluation)"
        for preset, h in projection.items()
    ]
