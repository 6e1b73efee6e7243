"""Where does the dreamt Breakout ball go? A diagnostic beside ``diamond-env eval-wm``.

    python tools/ball_probe.py --checkpoint RUN/world_model --dataset HELDOUT [--rollouts 64]

Runs the open-loop rollouts of ``eval-wm`` (same windows and seed) and finds the ball in each
frame: the pixels brighter than the black background in the play area between the bricks and
the paddle (rows 29-56, columns 4-59 of the 64 x 64 frame; Breakout only). Each rollout is
classed by the real ball's vertical motion over the last two context frames (up, down, or no
ball seen), and for each class it prints, after 1 and 3 dreamt steps, how often the dreamt ball
moves the way the real one does, how often it has vanished while the real one is there, and the
rewards of the real continuations against the dreamt ones. In random play the ball rarely
travels up (only after the paddle hits it), and that is the way to the bricks and the rewards.

A second table follows the ball over the dreamt steps: in how many rollouts the real ball is
seen, how many of those lost their ball in the dream, and the dream's terminations (all, and
those taken with the ball lost while the real game went on). A small model's ball fades over a
dream, and its reward/end model reads a vanished ball as a lost life.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from diamond_env.data.dataset import EpisodeDataset
from diamond_env.training.wm_eval import Rollouts, open_loop_rollouts
from diamond_env.world_model import WorldModel

ROWS, COLS = slice(29, 57), slice(4, 60)


def ball_row(frame: np.ndarray, threshold: int = 100) -> float:
    """Mean row of the ball's pixels in a (64, 64, 3) uint8 frame; NaN when none is seen."""
    rows, _ = np.nonzero(frame[ROWS, COLS].astype(np.int64).sum(-1) > threshold)
    return float(rows.mean()) + ROWS.start if len(rows) else float("nan")


def direction(before: float, after: float) -> str:
    if np.isnan(before) or np.isnan(after):
        return "none"
    return "up" if after < before else "down" if after > before else "still"


def probe(rollouts: Rollouts, steps: tuple[int, ...] = (1, 3)) -> dict[str, dict[str, float]]:
    """Per class of the real ball's motion: rollouts, agreement and vanishing after ``steps``,
    real and dreamt rewards."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in range(len(rollouts.real)):
        ctx = [ball_row(f) for f in rollouts.context[r][-2:]]
        kind = direction(*ctx)
        row = table[kind]
        row["rollouts"] += 1
        row["real rewards"] += float((rollouts.real_rew[r] > 0).sum())
        row["dreamt rewards"] += float((rollouts.dream_rew[r] > 0).sum())
        for k in steps:
            real = [ctx[-1]] + [ball_row(f) for f in rollouts.real[r][:k]]
            fake = [ctx[-1]] + [ball_row(f) for f in rollouts.imagined[r][:k]]
            real_dir, fake_dir = direction(real[-2], real[-1]), direction(fake[-2], fake[-1])
            row[f"same way at {k}"] += float(real_dir != "none" and real_dir == fake_dir)
            row[f"vanished at {k}"] += float(not np.isnan(real[-1]) and np.isnan(fake[-1]))
    return {kind: dict(row) for kind, row in table.items()}


def fading(rollouts: Rollouts) -> dict[str, np.ndarray]:
    """Per dreamt step (``(H,)`` int arrays): rollouts whose real ball is seen, those whose dreamt
    ball is lost while the real one is seen, dreamt and real terminations, and dreamt
    terminations taken with no dreamt ball while the real game did not end."""
    real = np.array([[ball_row(f) for f in frames] for frames in rollouts.real])
    dream = np.array([[ball_row(f) for f in frames] for frames in rollouts.imagined])
    real_seen, dream_lost = ~np.isnan(real), np.isnan(dream)
    dream_end, real_end = rollouts.dream_end.astype(bool), rollouts.real_end.astype(bool)
    return {
        "real ball seen": real_seen.sum(0),
        "dreamt ball lost": (real_seen & dream_lost).sum(0),
        "dreamt ends": dream_end.sum(0),
        "real ends": real_end.sum(0),
        "dreamt ends, ball lost": (dream_end & dream_lost & ~real_end).sum(0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--rollouts", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = EpisodeDataset.open(args.dataset)
    wm = WorldModel.load(args.checkpoint, expected_game="Breakout")
    wm.eval()
    rollouts = open_loop_rollouts(  # WorldModel.step runs without gradients
        wm, dataset.load_all(), num_rollouts=args.rollouts, horizon=15, seed=args.seed
    )
    table = probe(rollouts)
    columns = ["rollouts", "same way at 1", "same way at 3", "vanished at 1", "vanished at 3",
               "real rewards", "dreamt rewards"]  # fmt: skip
    print("| real ball in the context | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for kind in ("up", "down", "still", "none"):
        if kind in table:
            cells = [f"{table[kind].get(c, 0):g}" for c in columns]
            print(f"| {kind} | " + " | ".join(cells) + " |")
    lost = fading(rollouts)
    print("\n| dreamt step | " + " | ".join(lost) + " |")
    print("|---:|" + "---:|" * len(lost))
    for t in range(len(lost["real ball seen"])):
        print(f"| {t + 1} | " + " | ".join(str(v[t]) for v in lost.values()) + " |")
    print("| all | " + " | ".join(str(v.sum()) for v in lost.values()) + " |")


if __name__ == "__main__":
    main()
