"""tools/ball_probe.py on constructed Breakout-like frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from diamond_env.training.wm_eval import Rollouts

_spec = importlib.util.spec_from_file_location(
    "ball_probe", Path(__file__).parent.parent / "tools" / "ball_probe.py"
)
assert _spec is not None and _spec.loader is not None
ball_probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ball_probe)


def _frames(rows: list[float]) -> np.ndarray:
    """Black frames with a 2 x 1 red ball at each row (NaN: no ball), column 30."""
    out = np.zeros((len(rows), 64, 64, 3), np.uint8)
    for i, r in enumerate(rows):
        if not np.isnan(r):
            out[i, int(r) : int(r) + 2, 30] = (200, 72, 72)
    return out


def test_the_probe_tells_a_dream_that_sends_the_ball_the_wrong_way() -> None:
    nan = float("nan")
    context = np.stack([_frames([50, 48, 46, 44]), _frames([30, 32, 34, 36])])  # up, down
    real = np.stack([_frames([42, 40, 38, 36]), _frames([38, 40, 42, 44])])
    dream = np.stack([_frames([46, 48, nan, nan]), _frames([38, 40, 42, 44])])
    rew = np.array([[0, 0, 0, 1], [0, 0, 0, 0]])
    rollouts = Rollouts(real=real, imagined=dream, context=context, real_rew=rew,
                        real_end=np.zeros_like(rew), dream_rew=np.zeros_like(rew),
                        dream_end=np.zeros_like(rew))  # fmt: skip
    assert ball_probe.ball_row(context[0, -1]) == 44.5
    assert np.isnan(ball_probe.ball_row(np.zeros((64, 64, 3), np.uint8)))
    table = ball_probe.probe(rollouts)
    assert table["up"]["rollouts"] == 1 and table["up"]["same way at 1"] == 0
    assert table["up"]["vanished at 3"] == 1 and table["up"]["vanished at 1"] == 0
    assert table["up"]["real rewards"] == 1 and table["up"]["dreamt rewards"] == 0
    assert table["down"]["same way at 1"] == 1 and table["down"]["same way at 3"] == 1
    assert table["down"]["vanished at 3"] == 0


def test_the_probe_counts_dreamt_balls_that_fade_and_the_ends_they_bring() -> None:
    nan = float("nan")
    context = np.stack([_frames([30, 32, 34, 36])] * 2)
    real = np.stack([_frames([38, 40, 42]), _frames([38, 40, nan])])
    dream = np.stack([_frames([38, nan, nan]), _frames([38, 40, nan])])
    faint = dream.copy()
    faint[0, 0] //= 4  # a ball too faint to be seen counts as lost
    real_end = np.array([[0, 0, 0], [0, 0, 1]])
    dream_end = np.array([[0, 1, 1], [0, 0, 1]])
    rollouts = Rollouts(real=real, imagined=faint, context=context, real_rew=np.zeros_like(real_end),
                        real_end=real_end, dream_rew=np.zeros_like(real_end),
                        dream_end=dream_end)  # fmt: skip
    table = ball_probe.fading(rollouts)
    assert table["real ball seen"].tolist() == [2, 2, 1]
    assert table["dreamt ball lost"].tolist() == [1, 1, 1]
    assert table["dreamt ends"].tolist() == [0, 1, 2]
    assert table["real ends"].tolist() == [0, 0, 1]
    # the last step's end in rollout 1 is a real one: not counted as a false end
    assert table["dreamt ends, ball lost"].tolist() == [0, 1, 1]
