"""Record real Breakout played by a scripted ball tracker, for the data-recipe study.

    python tools/breakout_tracker.py --out DATASET --steps N [--epsilon 0.25] [--seed 0]

Random play rarely returns the ball, so a dataset of it hardly shows the ball rising, breaking
bricks or coming back. This policy reads each 64 x 64 frame as a world model sees it: it finds
the ball (:mod:`diamond_env.evaluation.ball`) and the paddle (rows 57-58), extrapolates where a
falling ball will cross the paddle's row (bouncing off the side walls), and moves the paddle
there; with no ball in view it presses FIRE. Mixed with uniformly random actions (``--epsilon``,
so every action is seen in every kind of state), it gives a dataset in which the ball comes back.
The policy is :class:`diamond_env.evaluation.paddle.TrackerPolicy` (also the paddle probe's FOLLOW).
It is a measuring instrument, not a learnt agent: the steps it plays count as real steps like
any others. Appends to ``DATASET`` (created if missing) up to ``N`` steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diamond_env.data.collect import collect_until
from diamond_env.evaluation.paddle import TrackerPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", required=True, type=int)
    parser.add_argument("--epsilon", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=1)
    args = parser.parse_args()
    dataset, stats = collect_until(
        args.out,
        "Breakout",
        args.steps,
        policy=TrackerPolicy(args.num_envs),
        epsilon=args.epsilon,
        num_envs=args.num_envs,
        seed=args.seed,
    )
    if stats is not None:
        returns = stats.game_returns
        mean = f"{np.mean(returns):.1f}" if returns else "n/a"
        print(f"collected {stats.steps} steps, {len(returns)} games, mean return {mean}")
    info = dataset.info()
    print(f"dataset {args.out}: {info['num_steps']} steps, reward signs {info['reward_counts']}")


if __name__ == "__main__":
    main()
