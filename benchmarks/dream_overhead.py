"""How much of a dream step is spent outside the networks (randomness, resets, bookkeeping).

    python benchmarks/dream_overhead.py --preset tiny --num-envs 1 32 256 1024

A world model of the preset with random weights (reward/end head fixed to "reward 0, no end", as
in ``diamond-env bench``) steps ``--steps`` times with random actions, envs truncated every
``--horizon`` steps and restarted in the step. Forward hooks time every call of the denoiser's
network and of the reward/end model (the device synchronised around them on CUDA); the rest of
the step is "outside". The randomness draw is also timed on its own, for this version's keyed
draw and for the per-env generators it replaced (measured alternately in the same run). Prints
one row per draw and ``num_envs`` and, with ``--out``, JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
from torch import nn

from diamond_env.cli.bench import machine_info, synthetic_world_model
from diamond_env.dream.simulator import DreamSimulator


class NetworkTimer:
    """Seconds spent inside the forward calls of the given modules and in the given bound
    methods (outermost calls only)."""

    def __init__(
        self, modules: list[nn.Module], methods: list[tuple[Any, str]], device: torch.device
    ) -> None:
        self.seconds, self.device, self._depth, self._start = 0.0, device, 0, 0.0
        for m in modules:
            m.register_forward_pre_hook(self._enter)
            m.register_forward_hook(self._leave)
        for owner, name in methods:
            setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._leave()

        return timed

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _enter(self, *_: Any) -> None:
        if self._depth == 0:
            self._sync()
            self._start = time.perf_counter()
        self._depth += 1

    def _leave(self, *_: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._sync()
            self.seconds += time.perf_counter() - self._start


def per_env_generator_draw(sim: DreamSimulator) -> Any:
    """The draw this project made before keyed randomness (for the comparison): one
    ``torch.Generator`` per env, three calls per env and step (noise, then two uniforms)."""
    generators = [torch.Generator(device=sim.device).manual_seed(i) for i in range(sim.num_envs)]

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        noise = [torch.randn(sim.frame_shape, generator=g, device=sim.device) for g in generators]
        uniforms = [torch.rand((2,), generator=g, device=sim.device) for g in generators]
        return torch.stack(noise), torch.stack(uniforms)

    return draw


def measure(
    preset: str, num_envs: int, steps: int, horizon: int, device: str, draw_kind: str
) -> dict[str, float]:
    dev = torch.device(device)
    model = synthetic_world_model(preset, "Breakout", device, seed=0)
    sim = DreamSimulator(model, num_envs, horizon=horizon, seed=0)
    timer = NetworkTimer([model.rew_end], [(model.denoiser, "network")], dev)
    draw = {"seconds": 0.0}
    original = sim._draw_step_randomness if draw_kind == "keyed" else per_env_generator_draw(sim)

    def timed_draw() -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        out = original()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        draw["seconds"] += time.perf_counter() - start
        return out

    sim._draw_step_randomness = timed_draw  # type: ignore[method-assign]
    gen = torch.Generator().manual_seed(0)
    actions = [torch.randint(0, sim.num_actions, (num_envs,), generator=gen) for _ in range(steps)]
    with torch.inference_mode():
        sim.reset()
        for a in actions[:2]:  # warm-up
            sim.step(a)
        timer.seconds, draw["seconds"] = 0.0, 0.0
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        for a in actions:
            sim.step(a)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        total = time.perf_counter() - start
    outside = total - timer.seconds
    return {
        "num_envs": num_envs,
        "step_ms": 1e3 * total / steps,
        "network_ms": 1e3 * timer.seconds / steps,
        "outside_ms": 1e3 * outside / steps,
        "outside_share": outside / total,
        "draw_ms": 1e3 * draw["seconds"] / steps,
        "frames_per_s": num_envs * steps / total,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 32, 256, 1024])
    p.add_argument(
        "--frames",
        type=int,
        default=2048,
        help="dreamed frames timed per num_envs (steps = frames / num_envs, 2..30)",
    )
    p.add_argument(
        "--draws",
        nargs="+",
        default=["keyed", "per-env"],
        help="keyed (this version) and/or per-env (one torch.Generator per env)",
    )
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    info = machine_info()
    print(
        f"{args.preset} preset, {args.device}, {torch.get_num_threads()} threads, "
        f"load {os.getloadavg()[0]:.2f}, {info.get('cpu', '')}"
    )
    print("draw     num_envs steps  step ms  networks ms  outside ms  outside %  draw ms  frames/s")
    rows = []
    for n in args.num_envs:
        steps = min(30, max(2, args.frames // n))
        for kind in args.draws:  # alternating, so both see the same machine state
            r = {
                "draw": kind,
                "steps": steps,
                **measure(args.preset, n, steps, args.horizon, args.device, kind),
            }
            rows.append(r)
            print(
                f"{kind:8s} {n:8d} {steps:5d} {r['step_ms']:8.1f} {r['network_ms']:12.1f} "
                f"{r['outside_ms']:11.2f} {100 * r['outside_share']:9.1f} {r['draw_ms']:8.2f} "
                f"{r['frames_per_s']:9.0f}",
                flush=True,
            )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "preset": args.preset, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
