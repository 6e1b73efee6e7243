"""Held-out fidelity of a world model: denoising loss, reward/end classification, open-loop
dreams, each next to its trivial baseline (:mod:`diamond_env.evaluation.fidelity`).

Every figure is computed on episodes the model did not train on, with fixed seeds so two
evaluations of the same model agree. Open-loop rollouts lie inside one life (context and real
steps), as the model's training segments do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diamond_env.data.episode import FlatData
from diamond_env.data.segments import SegmentSampler, life_index, to_torch
from diamond_env.evaluation.ball import BALL_GAME, BALL_HORIZONS, ball_in_view, ball_table
from diamond_env.evaluation.fidelity import event_scores, frame_figures, headline, rare_f1
from diamond_env.frames import to_model, to_uint8, write_png
from diamond_env.world_model.model import WorldModel

HORIZONS = (1, 5, 15)


@dataclass
class Rollouts:
    """Open-loop rollouts: ``real`` and ``imagined`` uint8 ``(R, H, 64, 64, 3)`` after the
    context ``(R, L, 64, 64, 3)``; the real and the dreamt reward signs (int ``(R, H)``, -1/0/+1)
    and terminations (int ``(R, H)``, 0/1; real: life loss or game over) of the same steps."""

    real: np.ndarray
    imagined: np.ndarray
    context: np.ndarray = field(repr=False)
    real_rew: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64), repr=False)
    real_end: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64), repr=False)
    dream_rew: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64), repr=False)
    dream_end: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64), repr=False)


def f1_per_class(pred: np.ndarray, target: np.ndarray, classes: list[int]) -> dict[str, float]:
    """F1 of each class (NaN-free: 0 when a class is never predicted nor present)."""
    out = {}
    for c in classes:
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        out[str(c)] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return out


@torch.no_grad()
def denoising_loss(
    wm: WorldModel, data: FlatData, *, batches: int, batch_size: int, seed: int
) -> float:
    """Mean EDM loss over ``batches`` seeded batches of held-out segments."""
    sampler = SegmentSampler(data, wm.num_context + 1, pad_after_end=False, seed=seed)
    gen = torch.Generator(device=wm.device).manual_seed(seed)
    wm.denoiser.eval()
    losses = []
    for _ in range(batches):
        seg = to_torch(sampler.sample(batch_size), wm.device)
        loss = wm.denoiser.compute_loss(seg.obs[:, :-1], seg.act, seg.obs[:, -1], generator=gen)
        losses.append(float(loss))
    return float(np.mean(losses))


@torch.no_grad()
def rew_end_metrics(
    wm: WorldModel, data: FlatData, *, seq_len: int, batches: int, batch_size: int, seed: int
) -> dict[str, Any]:
    """Accuracy, F1 per class and confusion matrices of reward sign and termination."""
    sampler = SegmentSampler(data, seq_len, pad_after_end=True, seed=seed)
    wm.rew_end.eval()
    preds_r, tgts_r, preds_e, tgts_e = [], [], [], []
    for _ in range(batches):
        seg = to_torch(sampler.sample(batch_size), wm.device)
        logits_r, logits_e, _ = wm.rew_end.predict(seg.obs[:, :-1], seg.act, seg.obs[:, 1:])
        m = seg.step_mask
        preds_r.append((logits_r.argmax(-1) - 1)[m].cpu().numpy())
        tgts_r.append(seg.rew.sign().long()[m].cpu().numpy())
        preds_e.append(logits_e.argmax(-1)[m].cpu().numpy())
        tgts_e.append(seg.end.long()[m].cpu().numpy())
    pr, tr = np.concatenate(preds_r), np.concatenate(tgts_r)
    pe, te = np.concatenate(preds_e), np.concatenate(tgts_e)
    conf_r = [[int(((tr == t) & (pr == p)).sum()) for p in (-1, 0, 1)] for t in (-1, 0, 1)]
    conf_e = [[int(((te == t) & (pe == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    reward_events = event_scores(pr, tr, (-1, 1))
    reward_events["rare_f1"] = rare_f1(reward_events, (-1, 1))
    end_events = event_scores(pe, te, (1,))
    end_events["rare_f1"] = rare_f1(end_events, (1,))
    return {
        "reward_events": reward_events,
        "end_events": end_events,
        "reward_accuracy": float((pr == tr).mean()),
        "reward_f1": f1_per_class(pr, tr, [-1, 0, 1]),
        "reward_confusion": conf_r,
        "end_accuracy": float((pe == te).mean()),
        "end_f1": f1_per_class(pe, te, [0, 1]),
        "end_confusion": conf_e,
        "transitions": int(len(tr)),
    }


@torch.no_grad()
def open_loop_rollouts(
    wm: WorldModel,
    data: FlatData,
    *,
    num_rollouts: int,
    horizon: int,
    seed: int,
    start_filter: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Rollouts:
    """From real contexts, imagine ``horizon`` frames with the real actions (no feedback).

    Windows of ``L`` context frames and ``horizon`` real steps lie inside one life (the last
    step may be the life's end), chosen uniformly among all such windows; with
    ``start_filter`` (uint8 ``(N, 64, 64, 3)`` last context frames -> bool ``(N,)``), among
    those it keeps."""
    L = wm.num_context
    lives = life_index(data)
    rng = np.random.default_rng(seed)
    starts = [
        (int(lives.frame_starts[e]) + j, int(lives.step_starts[e]) + j)
        for e in range(lives.num_lives)
        for j in range(int(lives.lengths[e]) - L - horizon + 2)
    ]
    if starts and start_filter is not None:
        keep = start_filter(data.obs[np.array([f for f, _ in starts]) + L - 1])
        starts = [w for w, k in zip(starts, keep, strict=True) if k]
    if not starts:
        raise ValueError(
            f"no held-out life is long enough for {L} context frames + {horizon} steps"
            + (" with the wanted start" if start_filter is not None else "")
            + f" (longest {int(lives.lengths.max())} steps)"
        )
    pick = rng.choice(len(starts), size=min(num_rollouts, len(starts)), replace=False)
    f0 = np.array([starts[i][0] for i in pick])[:, None]
    s0 = np.array([starts[i][1] for i in pick])[:, None]
    frames = data.obs[f0 + np.arange(L + horizon)]  # (R, L + H, 64, 64, 3)
    acts = torch.from_numpy(data.act[s0 + np.arange(L + horizon - 1)]).to(wm.device)
    real_steps = s0 + L - 1 + np.arange(horizon)  # the steps the dream imagines
    real_rew = np.sign(data.rew[real_steps]).astype(np.int64)
    real_end = (data.term[real_steps] | data.life_loss[real_steps]).astype(np.int64)
    obs = to_model(torch.from_numpy(frames[:, :L]).to(wm.device))
    state = wm.burn_in(obs, acts[:, :L])
    gen = torch.Generator(device=wm.device).manual_seed(seed)
    imagined, rews, ends = [], [], []
    for k in range(horizon):
        act = acts[:, k : k + L]
        out = wm.step(obs, act, state, generator=gen)
        state = out.state
        imagined.append(out.next_obs)
        rews.append(out.reward)
        ends.append(out.termination)
        obs = torch.cat([obs[:, 1:], out.next_obs[:, None]], dim=1)
    fake = to_uint8(torch.stack(imagined, dim=1)).cpu().numpy()
    return Rollouts(
        real=frames[:, L:],
        imagined=fake,
        context=frames[:, :L],
        real_rew=real_rew,
        real_end=real_end,
        dream_rew=torch.stack(rews, 1).round().long().cpu().numpy(),
        dream_end=torch.stack(ends, 1).long().cpu().numpy(),
    )


def rollout_figures(rollouts: Rollouts, horizons: tuple[int, ...] = HORIZONS) -> dict[str, Any]:
    """Frame figures (model and copy-last-frame) and the dream's own reward/end events against
    the real ones on the same steps (see :mod:`diamond_env.evaluation.fidelity`)."""
    figures = frame_figures(rollouts.context, rollouts.real, rollouts.imagined, horizons)
    if rollouts.real_rew.size:
        dream_rew = event_scores(rollouts.dream_rew, rollouts.real_rew, (-1, 1))
        dream_rew["rare_f1"] = rare_f1(dream_rew, (-1, 1))
        dream_end = event_scores(rollouts.dream_end, rollouts.real_end, (1,))
        dream_end["rare_f1"] = rare_f1(dream_end, (1,))
        figures["dream_reward_events"], figures["dream_end_events"] = dream_rew, dream_end
    return figures


def ball_figures(wm: WorldModel, data: FlatData, *, num_rollouts: int, seed: int) -> dict[str, Any]:
    """The ball table (:mod:`diamond_env.evaluation.ball`) over ``num_rollouts`` open-loop dreams
    of ``max(BALL_HORIZONS)`` steps that start with the ball in view; ``{"error": ...}`` when
    the data has no such window."""
    try:
        ro = open_loop_rollouts(
            wm,
            data,
            num_rollouts=num_rollouts,
            horizon=max(BALL_HORIZONS),
            seed=seed,
            start_filter=ball_in_view,
        )
    except ValueError as err:
        return {"error": str(err)}
    table = ball_table(
        ro.context, ro.real, ro.imagined, ro.real_rew, ro.real_end, ro.dream_rew, ro.dream_end
    )
    return table.to_dict()


def save_grid(rollouts: Rollouts, path: Path, *, max_rows: int = 4, scale: int = 3) -> Path:
    """PNG, upscaled without smoothing (each pixel a ``scale`` x ``scale`` block, so a one-pixel
    ball stays visible): for each rollout a row of real frames, the imagined ones below, and
    their absolute difference (amplified x4) under them."""
    rows = []
    for r in range(min(max_rows, len(rollouts.real))):
        real = np.concatenate(list(rollouts.real[r]), axis=1)
        fake = np.concatenate(list(rollouts.imagined[r]), axis=1)
        diff = np.abs(real.astype(np.int16) - fake).max(axis=-1, keepdims=True)
        diff = np.repeat(np.clip(4 * diff, 0, 255).astype(np.uint8), 3, axis=-1)
        gap = np.full((4, real.shape[1], 3), 255, np.uint8)
        rows += [real, fake, diff, gap, gap]
    return write_png(np.concatenate(rows[:-2], axis=0), path, scale)


def evaluate_world_model(
    wm: WorldModel,
    data: FlatData,
    *,
    seq_len: int,
    seed: int = 0,
    batches: int = 4,
    batch_size: int = 32,
    num_rollouts: int = 16,
    horizon: int = max(HORIZONS),
    grid_path: Path | None = None,
) -> dict[str, Any]:
    """All held-out fidelity figures of ``wm`` on ``data``; optionally writes the image grid."""
    was_training = wm.training
    results: dict[str, Any] = {
        "denoising_loss": denoising_loss(
            wm, data, batches=batches, batch_size=batch_size, seed=seed
        ),
        **rew_end_metrics(
            wm, data, seq_len=seq_len, batches=batches, batch_size=batch_size, seed=seed
        ),
    }
    try:
        rollouts = open_loop_rollouts(
            wm, data, num_rollouts=num_rollouts, horizon=horizon, seed=seed
        )
    except ValueError as err:
        results["psnr"] = {}
        results["psnr_error"] = str(err)
    else:
        results.update(rollout_figures(rollouts))
        if grid_path is not None:
            results["grid"] = str(save_grid(rollouts, grid_path))
    if wm.game == BALL_GAME:
        results["ball"] = ball_figures(wm, data, num_rollouts=num_rollouts, seed=seed)
    results["headline"] = headline(results)
    wm.train(was_training)
    return results
