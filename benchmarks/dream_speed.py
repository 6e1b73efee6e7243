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

``--diamond CHECKOUT`` adds the yardstick as the first row, the reference of the ratios: DIAMOND's
own ``WorldModelEnv`` (``src/envs/world_model_env.py`` of a checkout of its repository, imported
from there, never copied) with its networks at the first dream's size (channels, depths,
conditioning widths, LSTM width; its own initialisation), 3 Euler steps + its reward/end model a
frame, fp32, fed random contexts. It runs in a child process of its own, so this process's
allocator setting does not reach it, and takes its turn in the alternation like any dream.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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


def _diamond_config(d: dict[str, Any], wm: WorldModel) -> Any:
    """DIAMOND's AgentConfig with its networks at the size of ``wm``'s."""
    den, rew = wm.config.denoiser, wm.config.rew_end
    inner = d["diffusion"].InnerModelConfig(
        img_channels=3,
        num_steps_conditioning=den.num_context,
        cond_channels=den.cond_channels,
        depths=list(den.depths),
        channels=list(den.channels),
        attn_depths=[int(a) for a in den.attn_depths],
    )
    rew_cfg = d["rew_end"].RewEndModelConfig(
        lstm_dim=rew.lstm_dim,
        img_channels=3,
        img_size=64,
        cond_channels=rew.cond_channels,
        depths=list(rew.depths),
        channels=list(rew.channels),
        attn_depths=[int(a) for a in rew.attn_depths],
    )
    ac = d["actor_critic"].ActorCriticConfig(
        lstm_dim=16, img_channels=3, img_size=64, channels=[4, 4, 8, 8], down=[1, 1, 1, 1]
    )
    return d["agent"].AgentConfig(
        denoiser=d["diffusion"].DenoiserConfig(
            inner_model=inner, sigma_data=den.sigma_data, sigma_offset_noise=den.sigma_offset_noise
        ),
        rew_end_model=rew_cfg,
        actor_critic=ac,
        num_actions=len(wm.action_meanings),
    )


def _diamond_worker(conn: Any, checkout: str, checkpoint: str, num_envs: int, threads: int) -> None:
    """Child process: DIAMOND's dream at ``checkpoint``'s network size; answers each number of
    seconds it receives with the frames per second it measured (None ends it)."""
    if threads:
        torch.set_num_threads(threads)
    from side_by_side import _Contexts, load_diamond

    d = load_diamond(Path(checkout))
    wm = WorldModel.load(checkpoint)
    torch.manual_seed(0)
    agent = d["agent"].Agent(_diamond_config(d, wm)).eval()
    cfg = d["wm_env"].WorldModelEnvConfig(
        horizon=15,
        num_batches_to_preload=1,
        diffusion_sampler=d["diffusion"].DiffusionSamplerConfig(num_steps_denoising=3),
    )
    env = d["wm_env"].WorldModelEnv(agent.denoiser, agent.rew_end_model, _Contexts(num_envs), cfg)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    n_act = len(wm.action_meanings)
    with torch.no_grad():
        while (seconds := conn.recv()) is not None:
            for _ in range(2):
                env.step(torch.randint(0, n_act, (num_envs,), generator=gen))
            steps, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or steps == 0:
                env.step(torch.randint(0, n_act, (num_envs,), generator=gen))
                steps += 1
            conn.send(steps * num_envs / elapsed)


class DiamondYardstick:
    """DIAMOND's dream in a child process (see the module docstring)."""

    def __init__(self, checkout: Path, checkpoint: str, num_envs: int, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_diamond_worker, args=(child, str(checkout), checkpoint, num_envs, threads)
        )
        self.proc.start()

    def measure(self, seconds: float) -> float:
        self.conn.send(seconds)
        return float(self.conn.recv())

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=30)


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
    p.add_argument(
        "--diamond",
        type=Path,
        default=None,
        help="DIAMOND checkout: add its dream at the first dream's size as the yardstick row",
    )
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
    labels = [d["label"] for d in dreams]
    if args.diamond:
        labels.insert(0, "DIAMOND's code (yardstick)")
        # same network size as the first dream, 3 steps: its work a frame is our 3-step dream's
        first = WorldModel.load(dreams[0]["checkpoint"])
        yardstick_frame_flops = dream_frame_flops(
            count_model_flops(first.config, len(first.action_meanings)), 3
        )
    for num_envs in (int(n) for n in args.num_envs.split(",")):
        envs = [build(d, num_envs) for d in dreams]
        if args.diamond:
            yardstick = DiamondYardstick(
                args.diamond, dreams[0]["checkpoint"], num_envs, args.threads
            )
            envs.insert(0, (yardstick, num_envs * yardstick_frame_flops))
        per_round: list[list[float]] = []
        for _ in range(args.rounds):
            per_round.append(
                [
                    env.measure(args.seconds)
                    if isinstance(env, DiamondYardstick)
                    else measure(env, num_envs, args.seconds, rng)
                    for env, _ in envs
                ]
            )
        for i, (label, (env, flops)) in enumerate(zip(labels, envs, strict=True)):
            fps = [r[i] for r in per_round]
            ratios = [r[i] / r[0] for r in per_round]
            gflops = statistics.median(fps) / num_envs * flops / 1e9
            row = {
                "num_envs": num_envs,
                "dream": label,
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
                f"{num_envs:>4} envs  {label:<28} {row['frames_per_s']:8.1f} frames/s "
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
