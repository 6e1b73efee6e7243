"""Record real Breakout played by a scripted ball tracker, for the data-recipe study.

    python tools/breakout_tracker.py --out DATASET --steps N [--epsilon 0.25] [--seed 0]

Random play rarely returns the ball, so a dataset of it hardly shows the ball rising, breaking
bricks or coming back. This policy reads each 64 x 64 frame as a world model sees it: it finds
the ball (:mod:`diamond_env.evaluation.ball`) and the paddle (rows 57-58), extrapolates where a
falling ball will cross the paddle's row (bouncing off the side walls), and moves the paddle
there; with no ball in view it presses FIRE. Mixed with uniformly random actions (``--epsilon``,
so every action is seen in every kind of state), it gives a dataset in which the ball comes back.
It is a measuring instrument, not a learnt agent: the steps it plays count as real steps like
any others. Appends to ``DATASET`` (created if missing) up to ``N`` steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diamond_env.data.collect import collect_until
from diamond_env.evaluation.ball import COLS, ball_centres

NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3
PADDLE_ROWS = slice(57, 59)
WALL_LEFT, WALL_RIGHT = COLS.start, COLS.stop - 1


def paddle_centre(frame: np.ndarray) -> float:
    """Column of the paddle's centre in a (64, 64, 3) uint8 frame; NaN when none is seen."""
    bright = frame[PADDLE_ROWS, 3:61].astype(np.int32).sum(-1) > 100
    cols = np.nonzero(bright.any(axis=0))[0]
    return float(cols.mean()) + 3 if len(cols) else float("nan")


def landing_column(row: float, col: float, d_row: float, d_col: float) -> float:
    """Where a ball at ``(row, col)`` moving ``(d_row, d_col)`` per frame crosses the paddle's
    row, reflected off the side walls; its column when it is not falling."""
    if d_row <= 0:
        return col
    col = col + d_col * (PADDLE_ROWS.start - row) / d_row
    width = WALL_RIGHT - WALL_LEFT
    offset = (col - WALL_LEFT) % (2 * width)
    return WALL_LEFT + (offset if offset <= width else 2 * width - offset)


class TrackerPolicy:
    """The scripted tracker as a :class:`diamond_env.data.collect.Policy` (one memory per env:
    the ball's last centre, for its velocity)."""

    def __init__(self, num_envs: int = 1) -> None:
        self.last = np.full((num_envs, 2), np.nan)

    def reset(self, mask: np.ndarray) -> None:
        self.last[np.asarray(mask, dtype=bool)] = np.nan

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        balls = ball_centres(obs)  # (N, 2)
        actions = np.full(len(obs), FIRE, dtype=np.int64)
        for i, frame in enumerate(obs):
            paddle = paddle_centre(frame)
            ball = balls[i]
            if np.isnan(ball[0]) or np.isnan(paddle):
                continue
            velocity = ball - self.last[i] if not np.isnan(self.last[i, 0]) else np.zeros(2)
            target = landing_column(ball[0], ball[1], velocity[0], velocity[1])
            actions[i] = RIGHT if target > paddle + 1 else LEFT if target < paddle - 1 else NOOP
        self.last = balls
        return actions


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
