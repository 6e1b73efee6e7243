"""Seconds to the first dream step in a fresh process: imports, ``gym.make_vec`` (loading the
checkpoint and preparing the fast path), the first reset and step.

    python benchmarks/first_make.py CHECKPOINT [--fastpath auto|plain] [--repeats 2]

Each measurement runs in its own new process (what a subprocess worker pays), alternating
``auto`` and ``plain`` when ``--fastpath both`` (the default).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

_CHILD = """
import sys, time
t0 = time.perf_counter()
import gymnasium as gym
import diamond_env  # noqa: F401
t1 = time.perf_counter()
env = gym.make_vec("DiamondDream-Breakout-v0", num_envs=2, checkpoint=sys.argv[1],
                   fastpath=sys.argv[2])
t2 = time.perf_counter()
env.reset(seed=0)
env.step(env.action_space.sample())
t3 = time.perf_counter()
print(f"{sys.argv[2]:5s}: import {t1 - t0:.2f} s, make {t2 - t1:.2f} s, "
      f"first reset + step {t3 - t2:.2f} s")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--fastpath", default="both", choices=("both", "auto", "plain"))
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    modes = ["auto", "plain"] if args.fastpath == "both" else [args.fastpath]
    for _ in range(args.repeats):
        for mode in modes:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, args.checkpoint, mode],
                capture_output=True,
                text=True,
                check=True,
            )
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
