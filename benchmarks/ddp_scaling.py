"""World-model training throughput: one process with T threads against K processes (torchrun,
gloo) with T / K threads each, at the same global batch.

    python benchmarks/ddp_scaling.py --dataset DATASET --preset cpu --steps 60 --rounds 2

Each configuration runs ``diamond-env train-wm --steps S --log-every 1 --eval-every 0`` in a fresh
run directory; the rate is read from ``metrics.jsonl`` (wall-clock time of its records) between
the 10th step and the last, so start-up, data loading and the final evaluation do not count.
Configurations alternate within each round, so both see the same machine. Prints gradient
steps/s and segments/s (both networks' batches) per configuration and the ratio, and the machine
load before each run; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from diamond_env.config import apply_overrides, get_preset

FIRST_TIMED_STEP = 10


def run_once(
    dataset: str, preset: str, overrides: str, steps: int, processes: int, threads: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        args = [
            "-m",
            "diamond_env",
            "train-wm",
            "--preset",
            preset,
            "--dataset",
            dataset,
            "--run-dir",
            str(run_dir),
            "--steps",
            str(steps),
            "--log-every",
            "1",
            "--eval-every",
            "0",
            "--save-every",
            str(steps),
            "--no-progress",
        ]
        if overrides:
            args += ["--overrides", overrides]
        if processes > 1:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                str(processes),
                "--master_port",
                str(29_500 + os.getpid() % 1000),
                *args,
            ]
        else:
            cmd = [sys.executable, *args]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        load = os.getloadavg()[0]
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=3600)
        times = {}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["kind"] == "train":
                times[record["step"]] = record["time"]
    elapsed = times[steps] - times[FIRST_TIMED_STEP]
    return {"steps_per_s": (steps - FIRST_TIMED_STEP) / elapsed, "load_before": load}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--overrides", default="")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads of the machine to share")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.steps <= FIRST_TIMED_STEP:
        p.error(f"--steps must exceed {FIRST_TIMED_STEP}")
    config = apply_overrides(get_preset(args.preset), args.overrides)
    batch = config.denoiser_optim.batch_size + config.rew_end_optim.batch_size
    configs = [(1, args.threads), (args.processes, max(1, args.threads // args.processes))]
    print(
        f"{args.preset} preset, global batch {config.denoiser_optim.batch_size} denoiser + "
        f"{config.rew_end_optim.batch_size} reward/end segments, {args.steps} steps "
        f"(timed from step {FIRST_TIMED_STEP}), {os.cpu_count()} CPUs"
    )
    rows = []
    for r in range(args.rounds):
        rates = []
        for processes, threads in configs:
            fig = run_once(
                args.dataset, args.preset, args.overrides, args.steps, processes, threads
            )
            fig.update(
                round=r + 1,
                processes=processes,
                threads=threads,
                segments_per_s=fig["steps_per_s"] * batch,
            )
            rows.append(fig)
            rates.append(fig["steps_per_s"])
            print(
                f"round {r + 1}: {processes} process(es) x {threads} thread(s): "
                f"{fig['steps_per_s']:.3f} steps/s, {fig['segments_per_s']:.1f} segments/s "
                f"(load before {fig['load_before']:.2f})",
                flush=True,
            )
        print(
            f"round {r + 1}: {configs[1][0]} x {configs[1][1]} / {configs[0][0]} x "
            f"{configs[0][1]} = {rates[1] / rates[0]:.2f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
