"""The Breakout ball table on constructed frames: finder, each figure, the copy baseline."""

from __future__ import annotations

import numpy as np
import pytest

from diamond_env.evaluation.ball import ball_centres, ball_in_view, ball_summary, ball_table
from diamond_env.evaluation.fidelity import fidelity_lines


def _frame(ball: tuple[int, int] | None = None) -> np.ndarray:
    """A black 64 x 64 frame with bricks above the play area, a paddle below it, and a 1 x 2
    white ball at ``(row, col)``."""
    f = np.zeros((64, 64, 3), np.uint8)
    f[14:22, 4:60] = (200, 72, 72)  # bricks: above the play area, never a ball
    f[58:60, 28:36] = (200, 72, 72)  # paddle: below it
    if ball is not None:
        r, c = ball
        f[r, c : c + 2] = 255
    return f


def test_ball_centres_finds_the_ball_and_ignores_bricks_and_paddle() -> None:
    frames = np.stack([_frame((40, 20)), _frame(None), _frame((29, 4)), _frame((20, 30))])
    centres = ball_centres(frames)
    np.testing.assert_allclose(centres[0], [40.0, 20.5])
    np.testing.assert_allclose(centres[2], [29.0, 4.5])
    assert np.isnan(centres[1]).all() and np.isnan(centres[3]).all()  # none; among the bricks
    assert ball_in_view(frames).tolist() == [True, False, True, False]
    dim = _frame(None)
    dim[40, 20] = (30, 30, 30)  # RGB sum 90: background noise, not a ball
    assert not ball_in_view(dim[None])[0]
    with pytest.raises(ValueError, match="64, 64, 3"):
        ball_centres(np.zeros((2, 32, 32, 3), np.uint8))


def _rollouts(
    paths_real: list[list[tuple[int, int] | None]],
    paths_dream: list[list[tuple[int, int] | None]],
    contexts: list[list[tuple[int, int] | None]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ctx = np.stack([np.stack([_frame(b) for b in c]) for c in contexts])
    real = np.stack([np.stack([_frame(b) for b in p]) for p in paths_real])
    dream = np.stack([np.stack([_frame(b) for b in p]) for p in paths_dream])
    return ctx, real, dream


def test_each_figure_of_the_table() -> None:
    h = 5
    rising = [(50, 30), (48, 30)]  # the ball rose 2 rows over the last two context frames
    falling = [(40, 30), (42, 30)]
    contexts = [rising, rising, falling, [(40, 30), None]]  # the last: no ball in view, left out
    real = [
        [(46, 30), (44, 30), (42, 30), (40, 30), (38, 30)],  # keeps rising
        [(46, 30), (44, 30), (42, 30), (40, 30), None],  # rises, then out of view at step 5
        [(44, 30), (46, 30), (48, 30), (50, 30), (52, 30)],
        [(44, 30)] * h,
    ]
    dream = [
        [(46, 31), (44, 32), (42, 32), (40, 30), None],  # within 3 px at 1 and 3, gone at 5
        [(50, 30), (48, 30), None, None, (38, 30)],  # falls back; at 5 the real ball is unseen
        [(44, 30), (46, 30), (48, 30), (50, 30), (52, 30)],  # perfect
        [None] * h,
    ]
    ctx, r, d = _rollouts(real, dream, contexts)
    zeros = np.zeros((4, h), np.int64)
    real_rew, dream_rew = zeros.copy(), zeros.copy()
    real_rew[0, 2] = real_rew[1, 4] = real_rew[2, 1] = 1
    dream_rew[0, 2] = dream_rew[1, 3] = 1  # one true (same step), one false (a step early)
    dream_rew[3, 0] = 1  # in the dream that is left out: not counted
    real_end, dream_end = zeros.copy(), zeros.copy()
    dream_end[0, 4] = 1  # the real life goes on: a false life loss
    real_end[2, 2], dream_end[2, 3] = 1, 1  # the real life ended first: not false
    t = ball_table(ctx, r, d, real_rew, real_end, dream_rew, dream_end, horizons=(1, 3, 5))
    assert t.dreams == 3
    assert t.counted == {"1": 3, "3": 3, "5": 2}
    assert t.within == pytest.approx({"1": 2 / 3, "3": 2 / 3, "5": 1 / 2})
    assert t.present == pytest.approx({"1": 1.0, "3": 2 / 3, "5": 1 / 2})
    # copy-last-frame: (48, 30) or (42, 30) held; within 3 px of the real ball at step 1 only
    assert t.within_copy == pytest.approx({"1": 1.0, "3": 0.0, "5": 0.0})
    assert (t.rising, t.rising_kept) == (2, 1)
    assert (t.real_rewards, t.dreamt_rewards, t.true_rewards) == (3, 2, 1)
    assert t.false_life_losses == 1
    summary = ball_summary(t.to_dict())
    assert "1 true of 3 real, 1 false" in summary and "1 in 3 dreams" in summary
    lines = "\n".join(fidelity_lines({"ball": t.to_dict()}))
    assert "67 % / 67 % / 50 %" in lines and "1 of 2" in lines


def test_no_dream_counts_gives_none_not_nan() -> None:
    ctx, r, d = _rollouts([[(40, 30)]], [[(40, 30)]], [[None, None]])
    t = ball_table(ctx, r, d, *(np.zeros((1, 1), np.int64),) * 4, horizons=(1,))
    assert t.dreams == 0 and t.within == {"1": None} and t.present == {"1": None}
    assert "n/a" in ball_summary(t.to_dict())


def test_shapes_are_checked() -> None:
    ctx, r, d = _rollouts([[(40, 30)] * 2], [[(40, 30)] * 2], [[(40, 30)] * 2])
    with pytest.raises(ValueError, match="real_rew"):
        ball_table(ctx, r, d, np.zeros((1, 3)), *(np.zeros((1, 2)),) * 3)
    with pytest.raises(ValueError, match="imagined"):
        ball_table(ctx, r, d[:, :1], *(np.zeros((1, 2)),) * 4)


def test_tracker_follows_the_ball_and_fires_without_one() -> None:
    from diamond_env.evaluation import paddle as trk

    frame = _frame((40, 50))  # paddle at columns 28-35 (centre 31.5), ball to its right
    assert trk.paddle_centre(frame) == 31.5
    assert trk.landing_column(40.0, 50.0, 0.0, 1.0) == 50.0  # not falling: where it is
    assert trk.landing_column(47.0, 50.0, 2.0, 4.0) == 70.0 - 2 * (70.0 - 59.0)  # off the wall
    policy = trk.TrackerPolicy(2)
    acts = policy(np.stack([frame, _frame(None)]))
    assert acts.tolist() == [trk.RIGHT, trk.FIRE]
    left = _frame((40, 6))
    assert policy(np.stack([left, left]))[0] == trk.LEFT
    policy.reset(np.array([True, False]))
    assert np.isnan(policy.last[0]).all() and not np.isnan(policy.last[1]).all()
