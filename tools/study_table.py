"""Print held-out fidelity against minutes of training for train_wm.py runs (a markdown table).

    python tools/study_table.py RUN_DIR [RUN_DIR ...] [--marks 5,15,30,60,120]

For each run, the periodic evaluations in ``metrics.jsonl`` (``--eval-every``) are placed on a
time axis that starts when the run wrote ``options.json``; a resumed run's pause (a gap of more
than ``--gap`` minutes between records) is not counted. At each mark the latest evaluation at or
before it is shown, beside the copy-last-frame and majority-class baselines of the same rollouts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def timeline(run: Path, gap_minutes: float) -> list[tuple[float, dict[str, Any]]]:
    """(training minutes, evaluation record) for every ``kind == "eval"`` record of ``run``."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    clock, last = 0.0, (run / "options.json").stat().st_mtime
    first_options = min(r["time"] for r in records) - 60.0  # options.json is rewritten on resume
    last = max(min(last, records[0]["time"]), first_options)
    out = []
    for r in records:
        step = r["time"] - last
        if step <= 60 * gap_minutes:
            clock += step
        last = r["time"]
        if r.get("kind") == "eval":
            out.append((clock / 60, r))
    return out


def row(name: str, minutes: float, r: dict[str, Any]) -> str:
    def f(key: str, digits: int = 1) -> str:
        return f"{r[key]:.{digits}f}" if key in r else "–"

    psnr = " / ".join(f(f"psnr/{h}") for h in (1, 5, 15))
    copy = " / ".join(f(f"psnr_copy/{h}") for h in (1, 5, 15))
    mae = f"{f('changed_pixels/model_mae')} (copy {f('changed_pixels/copy_mae')})"
    events = " / ".join(
        f(k, 2) for k in ("reward_events/rare_f1", "end_events/rare_f1", "dream_end_events/rare_f1")
    )
    return f"| {name} | {minutes:.1f} | {r['step']} | {psnr} | {copy} | {mae} | {events} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--marks", default="5,15,30,60,120")
    p.add_argument("--gap", type=float, default=5.0)
    args = p.parse_args(argv)
    marks = [float(m) for m in args.marks.split(",")]
    print(
        "| run | minutes | grad steps | PSNR h1 / h5 / h15 (dB) | copy h1 / h5 / h15 (dB) | "
        "MAE on changing pixels | F1 reward / life loss / life loss in dream (majority: 0) |"
    )
    print("|---|---:|---:|---|---|---|---|")
    for run in args.runs:
        points = timeline(run, args.gap)
        shown = set()
        for mark in marks:
            before = [(m, r) for m, r in points if m <= mark + 0.5]
            if not before or before[-1][1]["step"] in shown:
                continue
            minutes, r = before[-1]
            shown.add(r["step"])
            print(row(run.name, minutes, r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
