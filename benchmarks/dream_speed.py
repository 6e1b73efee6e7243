"""What a user of ``gym.make`` / ``gym.make_vec`` gets, for several dreams, side by side in one run.

    python benchmarks/dream_speed.py --dream "3-step|CKPT|auto|0" --dream "1-step bf16|STUDENT|channels_last,bf16|0" \
        --num-envs 1,32 --rounds 3 --seconds 20

Each ``--dream`` is ``label|checkpoint|fastpath|num_denoising_steps`` (fastpath as the env kwarg:
``auto``, ``plain`` or comma-separated names; steps 0 = the checkpoint's). The first dream is the
reference of the ratios. Every dream is built through the registered env (``gym.make`` at one env,
``gym.make_vec`` above), so the figure includes the Gymnasium face: actions in, numpy frames,
rewards and infos out. The dreams alternate, measurement by measurement, round after round, so a
change in the machine's load reaches all alike; ratios are taken within a round and the medians
printed. Work is counted with :mod:`diamond_env.world_model.flops` (denoiser passes x frames +
the reward/end step) and shown as GFLOP/s and as a share of the CPU's fp32 peak (from
``/proc/cpuinfo``; a bf16 path on AMX tiles can exceed it, since its own peak is higher).
The load average before and after is printed: compare figures only from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import fp32_peak  # noqa: E402

import diamond_env  # noqa: E402,F401  (registers the envs)
from diamond_env.devices import tune_allocator  # noqa: E402
from diamond_env.world_model.flops import count_model_flops, dream_frame_flops  # noqa: E402
from diamond_env.world_model.model import WorldModel  # noqa: E402


def parse_dream(text: str) -> dict[str, Any]:
    parts = text.split("|")
    if len(parts) != 4:
        raise SystemExit(f"--dream {text!r}: expected label|checkpoint|fastpath|steps")
    label, checkpoint, fastpath, steps = parts
    return {"label": label, "checkpoint": checkpoint, "fastpath": fastpath, "steps": int(steps)}


def build(dream: dict[str, Any], num_envs: int) -> tuple[Any, int]:
    """The env of ``dream`` at ``num_envs`` and its FLOPs per step (all envs)."""
    wm = WorldModel.load(dream["checkpoint"])
    steps = dream["steps"] or wm.config.sampler.num_steps
    fastpath: Any = dream["fastpath"]
    if fastpath not in ("auto", "plain"):
        fastpath = fastpath.split(",")
    kwargs = {"checkpoint": dream["checkpoint"], "fastpath": fastpath}
    if dream["steps"]:
        kwargs["num_denoising_steps"] = dream["steps"]
    if num_envs == 1:
        env = gym.make("diamond_env:Dream-v0", **kwargs)
    else:
        env = gym.make_vec("diamond_env:Dream-v0", num_envs=num_envs, **kwargs)
    flops = count_model_flops(wm.config, len(wm.action_meanings))
    return env, num_envs * dream_frame_flops(flops, steps)


def measure(env: Any, num_envs: int, seconds: float, rng: np.random.Generator) -> float:
    """Dreamt frames per second over at least ``seconds`` (after two warm-up steps)."""
    n_act = int(env.single_action_space.n if num_envs > 1 else env.action_space.n)
    env.reset(seed=0)

    def act() -> Any:
        a = rng.integers(0, n_act, size=num_envs)
        return a if num_envs > 1 else int(a[0])

    for _ in range(2):
        _, _, term, trunc, _ = env.step(act())
        if num_envs == 1 and (term or trunc):
            env.reset()
    steps, start = 0, time.perf_counter()
    while True:
        _, _, term, trunc, _ = env.step(act())
        steps += 1
        if num_envs == 1 and (term or trunc):
            env.reset()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps * num_envs / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dream", action="append", required=True, help="label|checkpoint|fastpath|steps"
    )
    p.add_argument("--num-envs", default="1,32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    p.add_argument("--out", type=Path, default=None, help="write every measurement as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_allocator()  # as the diamond-env command does for its process
    dreams = [parse_dream(d) for d in args.dream]
    peak, how = fp32_peak()
    load_before = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 peak {peak:.0f} "
        f"GFLOP/s ({how}); load average {load_before[0]:.2f}"
    )
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for num_envs in (int(n) for n in args.num_envs.split(",")):
        envs = [build(d, num_envs) for d in dreams]
        per_round: list[list[float]] = []
        for _ in range(args.rounds):
            per_round.append([measure(env, num_envs, args.seconds, rng) for env, _ in envs])
        for i, (dream, (env, flops)) in enumerate(zip(dreams, envs, strict=True)):
            fps = [r[i] for r in per_round]
            ratios = [r[i] / r[0] for r in per_round]
            gflops = statistics.median(fps) / num_envs * flops / 1e9
            row = {
                "num_envs": num_envs,
                "dream": dream["label"],
                "frames_per_s": statistics.median(fps),
                "ms_per_step": 1000 * num_envs / statistics.median(fps),
                "ratio": statistics.median(ratios),
                "gflop_per_frame": flops / num_envs / 1e9,
                "gflop_per_s": gflops,
                "peak_share": gflops / peak if peak else None,
                "rounds": fps,
            }
            rows.append(row)
            env.close()
            share = f"{100 * row['peak_share']:.0f} %" if row["peak_share"] else "n/a"
            print(
                f"{num_envs:>4} envs  {dream['label']:<28} {row['frames_per_s']:8.1f} frames/s "
                f"({row['ms_per_step']:7.1f} ms a step)  x{row['ratio']:.2f}  "
                f"{row['gflop_per_frame']:.2f} GFLOP/frame, {gflops:6.1f} GFLOP/s ({share} of "
                f"fp32 peak)  rounds {', '.join(f'{x:.1f}' for x in fps)}"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(
            json.dumps({"rows": rows, "load": [load_before, os.getloadavg()]}, indent=2)
        )


if __name__ == "__main__":
    main()
