"""Held-out fidelity of a world model: denoising loss, reward/end classification, open-loop PSNR.

Every figure is computed on episodes the model did not train on, with fixed seeds so two
evaluations of the same model agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from diamond_env.data.episode import FlatData
from diamond_env.data.segments import SegmentSampler, to_torch
from diamond_env.frames import to_model, to_uint8
from diamond_env.world_model import WorldModel

HORIZONS = (1, 5, 15)


@dataclass
class Rollouts:
    """Open-loop rollouts: ``real`` and ``imagined`` uint8 ``(R, H, 64, 64, 3)`` after the context."""

    real: np.ndarray
    imagined: np.ndarray
    context: np.ndarray = field(repr=False)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB between uint8 frames, per frame over the last three axes (peak 255)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = np.maximum((diff**2).mean(axis=(-3, -2, -1)), 1e-10)
    return np.asarray(10.0 * np.log10(255.0**2 / mse))


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
        logits_r, logits_e, _ = wm.rew_end(seg.obs[:, :-1], seg.act, seg.obs[:, 1:])
        m = seg.step_mask
        preds_r.append((logits_r.argmax(-1) - 1)[m].cpu().numpy())
        tgts_r.append(seg.rew.sign().long()[m].cpu().numpy())
        preds_e.append(logits_e.argmax(-1)[m].cpu().numpy())
        tgts_e.append(seg.end.long()[m].cpu().numpy())
    pr, tr = np.concatenate(preds_r), np.concatenate(tgts_r)
    pe, te = np.concatenate(preds_e), np.concatenate(tgts_e)
    conf_r = [[int(((tr == t) & (pr == p)).sum()) for p in (-1, 0, 1)] for t in (-1, 0, 1)]
    conf_e = [[int(((te == t) & (pe == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    return {
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
    wm: WorldModel, data: FlatData, *, num_rollouts: int, horizon: int, seed: int
) -> Rollouts:
    """From real contexts, imagine ``horizon`` frames with the real actions (no feedback)."""
    L = wm.num_context
    rng = np.random.default_rng(seed)
    starts = [
        (int(data.frame_starts[e]) + j, int(data.step_starts[e]) + j)
        for e in range(data.num_episodes)
        for j in range(int(data.lengths[e]) - L - horizon + 1)
    ]
    if not starts:
        raise ValueError(
            f"no held-out episode is long enough for {L} context frames + {horizon} steps "
            f"(lengths {data.lengths.tolist()})"
        )
    pick = rng.choice(len(starts), size=min(num_rollouts, len(starts)), replace=False)
    f0 = np.array([starts[i][0] for i in pick])[:, None]
    s0 = np.array([starts[i][1] for i in pick])[:, None]
    frames = data.obs[f0 + np.arange(L + horizon)]  # (R, L + H, 64, 64, 3)
    acts = torch.from_numpy(data.act[s0 + np.arange(L + horizon - 1)]).to(wm.device)
    obs = to_model(torch.from_numpy(frames[:, :L]).to(wm.device))
    state = wm.burn_in(obs, acts[:, :L])
    gen = torch.Generator(device=wm.device).manual_seed(seed)
    imagined = []
    for k in range(horizon):
        act = acts[:, k : k + L]
        out = wm.step(obs, act, state, generator=gen)
        state = out.state
        imagined.append(out.next_obs)
        obs = torch.cat([obs[:, 1:], out.next_obs[:, None]], dim=1)
    fake = to_uint8(torch.stack(imagined, dim=1)).cpu().numpy()
    return Rollouts(real=frames[:, L:], imagined=fake, context=frames[:, :L])


def psnr_by_horizon(rollouts: Rollouts, horizons: tuple[int, ...] = HORIZONS) -> dict[str, float]:
    """Mean PSNR (dB) of imagined against real frames ``h`` steps after the context."""
    values = psnr(rollouts.real, rollouts.imagined)  # (R, H)
    return {str(h): float(values[:, h - 1].mean()) for h in horizons if h <= values.shape[1]}


def save_grid(rollouts: Rollouts, path: Path, *, max_rows: int = 4, scale: int = 2) -> Path:
    """PNG: for each rollout a row of real frames above a row of imagined ones."""
    rows = []
    for r in range(min(max_rows, len(rollouts.real))):
        real = np.concatenate(list(rollouts.real[r]), axis=1)
        fake = np.concatenate(list(rollouts.imagined[r]), axis=1)
        gap = np.full((4, real.shape[1], 3), 255, np.uint8)
        rows += [real, fake, gap, gap]
    grid = np.concatenate(rows[:-2], axis=0)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


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
        results["psnr"] = psnr_by_horizon(rollouts)
        if grid_path is not None:
            results["grid"] = str(save_grid(rollouts, grid_path))
    wm.train(was_training)
    return results
