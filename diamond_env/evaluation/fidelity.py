"""World-model figures that cannot flatter: every one sits beside a trivial baseline.

* Frames: full-frame PSNR of the open-loop dream at each horizon **next to copy-last-frame** (the
  last real context frame repeated), both as the PSNR of the pooled MSE over all rollouts (a mean
  of per-frame PSNRs would let identical frames count as huge values and flatter copying).
* Dynamics: the error over the pixels that change in the real game between consecutive frames
  (where copying is wrong by construction), model against copy, as MAE and pooled PSNR.
* Rewards and terminations: precision, recall and F1 of the rare classes (rewards -1 and +1,
  termination = life loss or game over) with their counts, next to the majority-class predictor
  (whose F1 on a rare class is 0).

All functions here are pure: uint8 frames ``(R, H, 64, 64, 3)`` and integer labels in, plain
numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from diamond_env.evaluation.ball import ball_rows, ball_summary
from diamond_env.evaluation.paddle import bounce_summary, paddle_rows, paddle_summary

MAX_PSNR = 100.0
"""PSNR reported for a zero error (identical frames)."""


def pooled_psnr(real: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB, peak 255) of the MSE pooled over all frames and pixels (``mask``: bool over the
    leading axes + pixels, ``(..., H, W)``, selects pixels; all channels count)."""
    diff = real.astype(np.float64) - pred.astype(np.float64)
    sq = diff**2
    if mask is not None:
        if not mask.any():
            return float("nan")
        sq = sq[mask]
    mse = float(sq.mean())
    return MAX_PSNR if mse == 0.0 else min(MAX_PSNR, 10.0 * np.log10(255.0**2 / mse))


def copy_baseline(context: np.ndarray, horizon: int) -> np.ndarray:
    """The copy-last-frame prediction: the last context frame ``(R, L, ...)`` repeated
    ``horizon`` times -> ``(R, horizon, ...)``."""
    return np.repeat(context[:, -1:], horizon, axis=1)


def changed_pixels(context: np.ndarray, real: np.ndarray) -> np.ndarray:
    """bool ``(R, H, 64, 64)``: pixels of real frame ``t`` that differ (any channel) from real
    frame ``t - 1`` (the last context frame before ``t = 0``)."""
    previous = np.concatenate([context[:, -1:], real[:, :-1]], axis=1)
    return np.any(previous != real, axis=-1)


def frame_figures(
    context: np.ndarray, real: np.ndarray, imagined: np.ndarray, horizons: tuple[int, ...]
) -> dict[str, Any]:
    """PSNR by horizon (model, copy, and the whole curve) and the changing-pixel figures.

    ``context`` ``(R, L, 64, 64, 3)``, ``real`` and ``imagined`` ``(R, H, 64, 64, 3)``, uint8.
    """
    steps = real.shape[1]
    copy = copy_baseline(context, steps)
    curve = [pooled_psnr(real[:, k], imagined[:, k]) for k in range(steps)]
    copy_curve = [pooled_psnr(real[:, k], copy[:, k]) for k in range(steps)]
    changed = changed_pixels(context, real)
    err_model = np.abs(real.astype(np.float64) - imagined).mean(axis=-1)  # (R, H, 64, 64)
    err_copy = np.abs(real.astype(np.float64) - copy).mean(axis=-1)
    n = int(changed.sum())
    dynamics = {
        "pixels": n,
        "fraction": float(changed.mean()),
        "model_mae": float(err_model[changed].mean()) if n else float("nan"),
        "copy_mae": float(err_copy[changed].mean()) if n else float("nan"),
        "model_psnr": pooled_psnr(real, imagined, changed),
        "copy_psnr": pooled_psnr(real, copy, changed),
    }
    return {
        "psnr": {str(h): curve[h - 1] for h in horizons if h <= steps},
        "psnr_copy": {str(h): copy_curve[h - 1] for h in horizons if h <= steps},
        "psnr_curve": curve,
        "psnr_copy_curve": copy_curve,
        "changed_pixels": dynamics,
        "rollouts": int(real.shape[0]),
    }


def event_scores(pred: np.ndarray, target: np.ndarray, classes: tuple[int, ...]) -> dict[str, Any]:
    """Precision, recall and F1 of each (rare) class, with ``support`` (true count) and
    ``predicted`` (predicted count); and the same F1 of the majority-class predictor."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    values, counts = np.unique(target, return_counts=True)
    majority = int(values[np.argmax(counts)]) if len(values) else 0
    out: dict[str, Any] = {"steps": int(len(target)), "majority_class": majority}
    for c in classes:
        tp = int(((pred == c) & (target == c)).sum())
        predicted, support = int((pred == c).sum()), int((target == c).sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (predicted + support) if predicted + support else 0.0
        base_f1 = (2 * support / (len(target) + support)) if c == majority and support else 0.0
        out[str(c)] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": predicted,
            "majority_f1": base_f1,
        }
    return out


def rare_f1(scores: dict[str, Any], classes: tuple[int, ...]) -> float:
    """F1 of the rare classes together (micro-averaged over ``classes``)."""
    tp = sum(scores[str(c)]["recall"] * scores[str(c)]["support"] for c in classes)
    total = sum(scores[str(c)]["support"] + scores[str(c)]["predicted"] for c in classes)
    return float(2 * tp / total) if total else 0.0


def headline(fig: dict[str, Any]) -> str:
    """One plain line: does the model beat the trivial baselines, and where not."""
    parts, failures = [], []
    for h, value in fig.get("psnr", {}).items():
        copy = fig["psnr_copy"][h]
        ok = value >= copy
        parts.append(f"PSNR@{h} {value:.1f} dB vs copy {copy:.1f}")
        if not ok:
            failures.append(f"full-frame PSNR at horizon {h}")
    dyn = fig.get("changed_pixels")
    if dyn and dyn["pixels"]:
        parts.append(f"changing pixels MAE {dyn['model_mae']:.1f} vs copy {dyn['copy_mae']:.1f}")
        if not dyn["model_mae"] < dyn["copy_mae"]:
            failures.append("changing pixels")
    for key, name in (("reward_events", "reward"), ("end_events", "life-loss")):
        ev = fig.get(key)
        if ev:
            if not any(v["support"] for k, v in ev.items() if isinstance(v, dict)):
                parts.append(f"no {name} events in the held-out data")
                continue
            f1 = ev["rare_f1"]
            parts.append(f"{name} F1 {f1:.2f} vs majority 0.00")
            if f1 <= 0.0:
                failures.append(f"{name} events")
    if not parts:
        return "no figures"
    verdict = (
        "BEATS the trivial baselines"
        if not failures
        else "does NOT beat the trivial baselines on " + ", ".join(failures)
    )
    return f"World model {verdict} ({'; '.join(parts)})."


def markdown_table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...] = ("", "")) -> list[str]:
    """A markdown table of any number of columns."""
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def fidelity_lines(fid: dict[str, Any]) -> list[str]:
    """Markdown of a world model's figures, each beside its trivial baseline, headline first."""
    lines = [f"**{fid['headline']}**", ""] if fid.get("headline") else []
    rows = [
        (
            f"open-loop PSNR, {h} steps after the context",
            f"{v:.2f} dB",
            f"{fid['psnr_copy'][h]:.2f} dB" if h in fid.get("psnr_copy", {}) else "n/a",
        )
        for h, v in fid.get("psnr", {}).items()
    ]
    if "psnr_error" in fid:
        rows.append(("open-loop PSNR", f"not computed: {fid['psnr_error']}", ""))
    dyn = fid.get("changed_pixels")
    if dyn and dyn.get("pixels"):
        share = f"{100 * dyn['fraction']:.1f} % of pixels"
        rows.append(
            (
                f"MAE on pixels that change ({share})",
                f"{dyn['model_mae']:.2f}",
                f"{dyn['copy_mae']:.2f}",
            )
        )
        rows.append(
            (
                "PSNR on pixels that change",
                f"{dyn['model_psnr']:.2f} dB",
                f"{dyn['copy_psnr']:.2f} dB",
            )
        )
    names = (
        ("reward_events", "reward", (-1, 1), "teacher-forced"),
        ("end_events", "termination", (1,), "teacher-forced"),
        ("dream_reward_events", "reward", (-1, 1), "in the dream"),
        ("dream_end_events", "termination", (1,), "in the dream"),
    )
    for key, name, classes, how in names:
        ev = fid.get(key)
        if not ev:
            continue
        for c in classes:
            e = ev[str(c)]
            label = f"{c:+d}" if key.endswith("reward_events") else "end"
            rows.append(
                (
                    f"{name} {label} ({how}): P / R / F1, true / predicted count",
                    f"{e['precision']:.2f} / {e['recall']:.2f} / {e['f1']:.2f}, "
                    f"{e['support']} / {e['predicted']}",
                    f"F1 {e['majority_f1']:.2f}",
                )
            )
    if "denoising_loss" in fid:
        rows.append(("denoising loss", f"{fid['denoising_loss']:.4f}", ""))
    lines += markdown_table(rows, ("measure", "world model", "baseline (copy / majority class)"))
    ball = fid.get("ball")
    if ball and "error" in ball:
        lines += [f"Ball table not computed: {ball['error']}", ""]
    elif ball:
        lines += [f"**{ball_summary(ball)}**", ""]
        lines += markdown_table(
            ball_rows(ball), ("ball table (Breakout)", "world model", "copy last frame")
        )
    paddle = fid.get("paddle")
    if paddle:
        lines += [f"**{paddle_summary(paddle)}**", ""]
        lines += markdown_table(paddle_rows(paddle), ("paddle probe (Breakout)", "dream", "game"))
    if fid.get("bounces"):
        lines += [f"**{bounce_summary(fid['bounces'])}**", ""]
    return lines
