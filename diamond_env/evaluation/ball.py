"""The Breakout ball table: does the dreamt ball stay with the real one, and does the dream give
the game's rewards and keep its lives?

A whole-frame figure barely sees the ball (a few of the 4,096 pixels of a 64 x 64 frame), yet an
agent can only learn Breakout from a dream that keeps it. The table is computed on open-loop
dreams (real contexts, the real actions, inside one life) that start with the ball in view, and
each figure that has one sits beside the copy-last-frame baseline:

- *within 3 px at h*: of the dreams whose real ball is in view ``h`` steps after the context, the
  share whose dreamt ball is in view with its centre at most 3 pixels (Euclidean) from the real
  ball's centre;
- *present at h*: of the same dreams, the share with a dreamt ball in view at all;
- *rising kept*: dreams whose real ball rose over the last two context frames and still rises one
  step later, and of those, how many dream a ball that rises too;
- *rewards*: the real positive rewards of the dreamt steps, the dream's own, and its true ones
  (a dreamt reward on the very step of a real one);
- *false life losses*: dreams that end a life on a step before which (that step included) the
  real game went on.

The ball is found in the play area between the bricks and the paddle (rows 29-56, columns 4-59
of the 64 x 64 frame), as the pixels whose RGB sum exceeds 100 over the black background; its
centre is their mean position. Above row 29 (among the bricks) or at the paddle it is not "in
view".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diamond_env.data.episode import FlatData

BALL_GAME = "Breakout"
"""The game whose frames the ball finder reads."""
ROWS = slice(29, 57)
COLS = slice(4, 60)
BRIGHTNESS = 100
BALL_HORIZONS = (1, 5, 10, 15)
NEAR_PX = 3.0


def ball_centres(frames: np.ndarray) -> np.ndarray:
    """Ball centre ``(row, col)`` of each frame of uint8 ``(..., 64, 64, 3)``, float ``(..., 2)``;
    NaN where no ball is in view."""
    frames = np.asarray(frames)
    if frames.ndim < 3 or frames.shape[-3:] != (64, 64, 3):
        raise ValueError(f"frames: expected (..., 64, 64, 3), got {frames.shape}")
    area = frames[..., ROWS, COLS, :].astype(np.int32).sum(-1) > BRIGHTNESS  # (..., R, C)
    count = area.sum(axis=(-2, -1)).astype(np.float64)
    rows = np.arange(ROWS.start, ROWS.stop, dtype=np.float64)[:, None]
    cols = np.arange(COLS.start, COLS.stop, dtype=np.float64)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (area * rows).sum(axis=(-2, -1)) / count
        c = (area * cols).sum(axis=(-2, -1)) / count
    out = np.stack([r, c], axis=-1)
    out[count == 0] = np.nan
    return out


BOUNCE_ROW = 48
"""A ball seen at or below this row (the lower part of the play area) and a row higher one frame
later has been sent back by the paddle (:func:`bounce_steps`)."""


def bounce_steps(data: FlatData, chunk: int = 4096) -> np.ndarray:
    """bool ``(num_steps,)`` of ``data``: the steps at which the ball is first seen sent back up by
    the paddle (the ball seen at or below :data:`BOUNCE_ROW` in the step's frame and at least a
    row higher in the next frame of the same episode, and not already rising into the step's
    frame: a rising ball is marked once). Frames are read ``chunk`` at a time."""
    rows = np.concatenate(
        [ball_centres(data.obs[i : i + chunk])[:, 0] for i in range(0, len(data.obs), chunk)]
    )
    # step j of episode e goes from frame step_starts[e] + e + j to the next one
    episode = np.repeat(np.arange(data.num_episodes), data.lengths)
    frame = np.arange(len(data.act)) + episode
    first = np.zeros(len(frame), dtype=bool)
    first[data.step_starts] = True
    now, after = rows[frame], rows[frame + 1]
    before = np.where(first, np.nan, rows[np.maximum(frame - 1, 0)])
    with np.errstate(invalid="ignore"):
        rising_before = before >= now + 1.0
        return (now >= BOUNCE_ROW) & (after <= now - 1.0) & ~rising_before


def ball_in_view(frames: np.ndarray) -> np.ndarray:
    """bool ``(...)``: a ball is in view in each frame of ``(..., 64, 64, 3)``."""
    return ~np.isnan(ball_centres(frames)[..., 0])


@dataclass(frozen=True)
class BallTable:
    """The figures of the module docstring; shares are in [0, 1], None when no dream counts."""

    dreams: int
    within: dict[str, float | None]
    within_copy: dict[str, float | None]
    present: dict[str, float | None]
    counted: dict[str, int]
    rising: int
    rising_kept: int
    real_rewards: int
    dreamt_rewards: int
    true_rewards: int
    false_life_losses: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _share(hits: np.ndarray, counted: np.ndarray) -> float | None:
    n = int(counted.sum())
    return float((hits & counted).sum() / n) if n else None


def ball_table(
    context: np.ndarray,
    real: np.ndarray,
    imagined: np.ndarray,
    real_rew: np.ndarray,
    real_end: np.ndarray,
    dream_rew: np.ndarray,
    dream_end: np.ndarray,
    horizons: tuple[int, ...] = BALL_HORIZONS,
) -> BallTable:
    """The table over dreams: ``context`` uint8 ``(R, L, 64, 64, 3)``, ``real`` and ``imagined``
    ``(R, H, 64, 64, 3)``; reward signs and terminations (int ``(R, H)``) of the real steps and
    the dream. Dreams whose real ball is not in view in the last context frame are left out."""
    if real.shape != imagined.shape or real.ndim != 5:
        raise ValueError(
            f"real {real.shape} and imagined {imagined.shape}: expected one (R, H, ...)"
        )
    num, horizon = real.shape[:2]
    for name, a in (
        ("real_rew", real_rew),
        ("real_end", real_end),
        ("dream_rew", dream_rew),
        ("dream_end", dream_end),
    ):
        if np.shape(a) != (num, horizon):
            raise ValueError(f"{name}: expected shape {(num, horizon)}, got {np.shape(a)}")
    last_two = ball_centres(context[:, -2:])  # (R, 2, 2)
    keep = ~np.isnan(last_two[:, -1, 0])
    real_c = ball_centres(real[keep])  # (R', H, 2)
    dream_c = ball_centres(imagined[keep])
    copy_c = np.repeat(last_two[keep][:, -1:], horizon, axis=1)
    real_seen = ~np.isnan(real_c[..., 0])
    dream_seen = ~np.isnan(dream_c[..., 0])
    with np.errstate(invalid="ignore"):
        near = np.hypot(*(dream_c - real_c).transpose(2, 0, 1)) <= NEAR_PX
        near_copy = np.hypot(*(copy_c - real_c).transpose(2, 0, 1)) <= NEAR_PX
        rose = last_two[keep][:, 1, 0] < last_two[keep][:, 0, 0]
        still_rising = rose & (real_c[:, 0, 0] < last_two[keep][:, 1, 0])
        dream_rises = dream_c[:, 0, 0] < last_two[keep][:, 1, 0]
    within: dict[str, float | None] = {}
    within_copy: dict[str, float | None] = {}
    present: dict[str, float | None] = {}
    counted: dict[str, int] = {}
    for h in horizons:
        if not 1 <= h <= horizon:
            continue
        seen = real_seen[:, h - 1]
        within[str(h)] = _share(near[:, h - 1], seen)
        within_copy[str(h)] = _share(near_copy[:, h - 1], seen)
        present[str(h)] = _share(dream_seen[:, h - 1], seen)
        counted[str(h)] = int(seen.sum())
    real_pos = np.asarray(real_rew)[keep] > 0
    dream_pos = np.asarray(dream_rew)[keep] > 0
    ended_before = np.cumsum(np.asarray(real_end)[keep] > 0, axis=1) > 0
    false_end = ((np.asarray(dream_end)[keep] > 0) & ~ended_before).any(axis=1)
    return BallTable(
        dreams=int(keep.sum()),
        within=within,
        within_copy=within_copy,
        present=present,
        counted=counted,
        rising=int(still_rising.sum()),
        rising_kept=int((still_rising & dream_rises).sum()),
        real_rewards=int(real_pos.sum()),
        dreamt_rewards=int(dream_pos.sum()),
        true_rewards=int((real_pos & dream_pos).sum()),
        false_life_losses=int(false_end.sum()),
    )


def ball_rows(table: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(measure, world model, copy-last-frame)`` rows of a :meth:`BallTable.to_dict`."""
    hs = list(table["within"])
    fmt = " / ".join

    def pct(values: dict[str, float | None]) -> str:
        return fmt("n/a" if v is None else f"{100 * v:.0f} %" for v in values.values())

    n = table["dreams"]
    rows = [
        (
            f"ball within {NEAR_PX:g} px at {fmt(hs)} steps ({n} dreams with the ball in view)",
            pct(table["within"]),
            pct(table["within_copy"]),
        ),
        (f"ball present at {fmt(hs)} steps", pct(table["present"]), "100 %"),
        (
            "rising balls that keep rising after one step",
            f"{table['rising_kept']} of {table['rising']}",
            f"0 of {table['rising']}",
        ),
        (
            "rewards in the dream: real / dreamt (true)",
            f"{table['real_rewards']} / {table['dreamt_rewards']} ({table['true_rewards']})",
            f"{table['real_rewards']} / 0 (0)",
        ),
        (f"dreams ending a life the game keeps (of {n})", f"{table['false_life_losses']}", "0"),
    ]
    return rows


def ball_summary(table: dict[str, Any]) -> str:
    """One line: the ball table's main figures."""
    within = ", ".join(
        f"{h}: {'n/a' if v is None else f'{100 * v:.0f}'}" for h, v in table["within"].items()
    )
    return (
        f"Ball within {NEAR_PX:g} px (% at step {within}); rewards dreamt "
        f"{table['true_rewards']} true of {table['real_rewards']} real, "
        f"{table['dreamt_rewards'] - table['true_rewards']} false; false life losses "
        f"{table['false_life_losses']} in {table['dreams']} dreams."
    )
