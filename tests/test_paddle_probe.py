"""The Breakout paddle probe: its pieces on constructed frames, its real side in the real game
(following the ball saves lives there), and the whole probe on the tiny world model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from diamond_env.atari import make_single_atari_env
from diamond_env.cli.main import main
from diamond_env.evaluation.ball import ball_centres
from diamond_env.evaluation.fidelity import fidelity_lines
from diamond_env.evaluation.paddle import (
    FIRE,
    LEFT,
    MIN_ROW,
    RIGHT,
    AwayPolicy,
    TrackerPolicy,
    bounce_check,
    draw_states,
    find_bounces,
    paddle_probe,
    play_real,
    reached,
    record_play,
    returned,
)
from diamond_env.world_model.model import WorldModel

OLD = Path(__file__).parent / "data" / "v0.1.0"


def _frame(ball: tuple[int, int] | None) -> np.ndarray:
    f = np.zeros((64, 64, 3), np.uint8)
    f[57:59, 28:36] = (200, 72, 72)  # paddle, centre column 34.5
    if ball is not None:
        f[ball[0], ball[1] : ball[1] + 2] = 255
    return f


def _video(rows: list[int | None]) -> np.ndarray:
    return np.stack([_frame(None if r is None else (r, 30)) for r in rows])


def test_returned_needs_the_ball_near_the_paddle_then_rising() -> None:
    assert reached(_video([44, 48])) and not reached(_video([40, 44, None, None]))
    assert returned(_video([44, 48, 52, None, 50, 46]))  # down to the paddle, a gap, back up
    assert not returned(_video([44, 48, 52, 55, None, None]))  # lost
    assert not returned(_video([40, 38, 36, 34]))  # rising, but never near the paddle
    assert not returned(_video([None, None]))


def test_away_moves_from_the_ball_and_fires_without_one() -> None:
    frames = np.stack([_frame((40, 50)), _frame((40, 10)), _frame(None)])
    assert AwayPolicy(3)(frames).tolist() == [LEFT, RIGHT, FIRE]
    assert TrackerPolicy(3)(frames).tolist() == [RIGHT, LEFT, FIRE]


def test_in_the_real_game_following_the_ball_saves_lives() -> None:
    """The probe's states have the ball falling low in the play area, and from them the real game
    separates the two policies (what a dream is then asked to do too)."""
    env = make_single_atari_env("Breakout")
    try:
        states = draw_states(env, 24, 4, seed=0)
        rows = ball_centres(np.stack([s.frames for s in states]))[:, :, 0]  # (24, 4)
        assert (rows[:, -1] >= MIN_ROW).all() and (rows[:, -1] > rows[:, -2]).all()
        assert all(s.actions.shape == (4,) and s.actions[-1] == 0 for s in states)
        follow = play_real(env, states, TrackerPolicy, 20)
        away = play_real(env, states, AwayPolicy, 20)
        again = play_real(env, states, TrackerPolicy, 20)  # restored states: the same runs
    finally:
        env.close()
    assert np.array_equal(follow["life_lost"], again["life_lost"])
    assert away["life_lost"].mean() >= follow["life_lost"].mean() + 0.2
    assert follow["returned"].mean() >= away["returned"].mean() + 0.25
    assert follow["reached"].mean() >= follow["returned"].mean()


def test_the_probe_on_a_world_model_and_in_eval_wm(tmp_path: Path) -> None:
    wm = WorldModel.load(OLD / "world_model")
    probe = paddle_probe(wm, num_states=4, repeats=2, seed=1)
    for name in ("follow", "away"):
        for key, value in probe[name].items():
            assert value >= 0 and (key.endswith("reward") or value <= 1), (name, key, value)
    assert probe["real_life_gap"] == pytest.approx(
        probe["away"]["real_life_lost"] - probe["follow"]["real_life_lost"]
    )
    text = "\n".join(fidelity_lines({"paddle": probe}))
    assert "Paddle probe (4 real states" in text and "lives saved by following" in text
    assert "ball reaches the paddle's rows" in text

    out = tmp_path / "eval.json"
    argv = ["eval-wm", "--checkpoint", str(OLD / "world_model"), "--dataset"]
    argv += [str(OLD / "dataset"), "--batches", "1", "--rollouts", "2", "--out", str(out)]
    png = tmp_path / "probe.png"
    assert main([*argv, "--paddle-states", "2", "--paddle-grid", str(png)]) == 0
    assert json.loads(out.read_text())["paddle"]["states"] == 2
    image = cv2.imread(str(png))
    assert image.shape == (2 * (4 * 40 + 3), 2 * 10 * 64, 3)  # 2 states x (game, dream), 10 frames
    with pytest.raises(SystemExit):
        main([*argv, "--paddle-states", "-1"])


def test_find_bounces_on_constructed_frames() -> None:
    lives = np.full(20, 5)
    video = _video(
        [30, 34, 38, 42, 46, 50, 54, None, 52, 48, 44, 40, 36, 32, 30, 30, 30, 30, 30, 30]
    )
    assert find_bounces(video, lives, margin=2) == [6]  # the lowest frame seen before the gap
    lost = lives.copy()
    lost[8:] = 4  # the same fall, but a life is lost right after: no bounce
    assert find_bounces(video, lost, margin=2) == []
    high = _video([30, 34, 38, 42, 40, 36, 32, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30])
    assert find_bounces(high, lives, margin=2) == []  # turned above the paddle rows (bricks)


def test_the_bounce_check_in_the_real_game_and_in_eval_wm(tmp_path: Path) -> None:
    env = make_single_atari_env("Breakout")
    try:
        games = record_play(env, 600, seed=0)
    finally:
        env.close()
    assert sum(len(a) for _, a, _ in games) == 600
    for frames, actions, lives in games:
        assert len(frames) == len(actions) + 1 == len(lives)
    bounces = [find_bounces(f, life, 17) for f, _, life in games]
    assert sum(map(len, bounces)) >= 3  # the tracker returns the ball: bounces to check
    wm = WorldModel.load(OLD / "world_model")
    check = bounce_check(wm, steps=600, seed=0, leads=(0, 2))
    assert check["bounces"] == sum(len(find_bounces(f, life, 2 + 4 + 8)) for f, _, life in games)
    assert set(check["repeated"]) == {"0", "2"}
    assert all(0.0 <= v <= 1.0 for v in check["repeated"].values())
    text = "\n".join(fidelity_lines({"bounces": check}))
    assert f"Bounce check ({check['bounces']} real bounces in 600 steps" in text

    out = tmp_path / "eval.json"
    argv = ["eval-wm", "--checkpoint", str(OLD / "world_model"), "--dataset"]
    argv += [str(OLD / "dataset"), "--batches", "1", "--rollouts", "2", "--out", str(out)]
    assert main([*argv, "--bounce-steps", "300"]) == 0
    assert json.loads(out.read_text())["bounces"]["steps"] == 300
