"""Train only the reward/end model of a preset on a dataset and print held-out event F1 over time.

    python tools/rew_end_study.py --dataset TRAIN --heldout HELDOUT --preset cpu \\
        --overrides "rew_end.frame_difference=true loop.rew_end_event_fraction=0.5" \\
        --minutes 15 --eval-every 50

The denoiser is not trained (the two networks do not share anything), so this isolates what a
reward/end recipe buys per CPU-minute. Figures are teacher-forced on real held-out frames, beside
the majority-class predictor (F1 0).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from diamond_env.config import apply_overrides, get_preset
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.evaluation.wm_eval import rew_end_metrics
from diamond_env.training.wm_trainer import WorldModelTrainer, build_context_bank, make_samplers
from diamond_env.world_model.model import WorldModel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--overrides", default="")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--max-steps", type=int, default=10**9)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON lines of the evaluations")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    config = apply_overrides(get_preset(args.preset), args.overrides)
    dataset = EpisodeDataset.open(args.dataset)
    data = dataset.load_all()
    heldout = EpisodeDataset.open(args.heldout).load_all()
    bank = build_context_bank(data, 8, 4, np.random.default_rng(0))
    wm = WorldModel(config, dataset.game, dataset.action_meanings, bank)
    trainer = WorldModelTrainer(wm, config, torch.device("cpu"))
    _, sampler = make_samplers(config, data, args.seed)
    start, step, rows = time.monotonic(), 0, []
    print(f"{args.overrides or 'preset ' + args.preset}")
    while time.monotonic() - start < 60 * args.minutes and step < args.max_steps:
        trainer.rew_end_step(sampler)
        step += 1
        if step % args.eval_every == 0:
            minutes = (time.monotonic() - start) / 60
            with torch.no_grad():
                m = rew_end_metrics(
                    wm,
                    heldout,
                    seq_len=config.loop.rew_end_seq_len,
                    batches=8,
                    batch_size=32,
                    seed=0,
                )
            r, e = m["reward_events"], m["end_events"]
            row = {
                "step": step,
                "minutes": round(minutes, 2),
                "reward_f1": r["rare_f1"],
                "end_f1": e["rare_f1"],
                "reward": r,
                "end": e,
            }
            rows.append(row)
            print(
                f"step {step:5d} {minutes:5.1f} min: reward F1 {r['rare_f1']:.2f}, "
                f"life-loss F1 {e['rare_f1']:.2f} (majority class: 0)",
                flush=True,
            )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
