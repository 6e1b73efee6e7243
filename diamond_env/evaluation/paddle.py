"""The Breakout paddle probe: does the dream answer the paddle the way the game does?

The ball table (:mod:`diamond_env.evaluation.ball`) replays the real actions; an agent instead
learns from what the dream does with *its* actions. In Breakout the one lesson that matters is
that a paddle under a falling ball returns it and a paddle elsewhere loses a life. This probe asks
both the game and the dream that question from the same states:

1. real states are drawn from the game played by the scripted tracker (:class:`TrackerPolicy`,
   with uniformly random actions mixed in), each one where the ball is in view, falling, and in
   the lower part of the play area (rows >= ``MIN_ROW`` of the 64 x 64 frame);
2. from each state the real game (its emulator state restored) and the dream (the same context
   of real frames and actions, ``repeats`` dreams) are played ``horizon`` steps in closed loop by
   two policies that read the frames they are shown: FOLLOW (the tracker) and AWAY (the paddle
   moves away from the ball); 20 steps by default, as a ball falling from row 30 may take that
   long to leave the screen and cost the life;
3. for each policy and each side: the share of runs that lose a life, in which the ball reaches
   the paddle's rows (seen at rows >= ``NEAR_PADDLE_ROW``: a dream that loses the ball on its way
   down does not), that return the ball (seen rising after that), and the rewards.

In the game, following the ball loses far fewer lives than moving away; the figure that says
whether an agent can learn to play in a dream is that same gap measured in the dream
(``life_gap``: lives lost AWAY minus FOLLOW, in points).

:func:`bounce_check` asks the narrower question behind it, with no policy in the loop: in real
tracker play, at each moment the falling ball reaches its lowest point above the paddle and the
game sends it back (:data:`~diamond_env.evaluation.ball.BOUNCE_ROW`), does the dream started from
the real context ``lead`` steps before, fed the real actions, send it back too? The game does in
every case by construction (copying the last frame never does); a dream that fails even with
``lead`` 0 has not learnt the bounce, one that fails only with longer leads drifts on the way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from diamond_env.evaluation.ball import BALL_GAME, BOUNCE_ROW, COLS, ball_centres
from diamond_env.frames import to_model, to_uint8, write_png

NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3
"""Breakout's minimal action set."""
PADDLE_ROWS = slice(57, 59)
"""Rows of the paddle in the 64 x 64 frame."""
WALL_LEFT, WALL_RIGHT = COLS.start, COLS.stop - 1
MIN_ROW = 30
"""Probe states have the ball falling at or below this row (it reaches the paddle in the run)."""
NEAR_PADDLE_ROW = 48
"""A ball seen rising after it was seen at or below this row was returned by the paddle."""
POLICIES = ("follow", "away")


def paddle_centre(frame: np.ndarray) -> float:
    """Column of the paddle's centre in a (64, 64, 3) uint8 frame; NaN when none is seen."""
    bright = frame[PADDLE_ROWS, 3:61].astype(np.int32).sum(-1) > 100
    cols = np.nonzero(bright.any(axis=0))[0]
    return float(cols.mean()) + 3 if len(cols) else float("nan")


def landing_column(row: float, col: float, d_row: float, d_col: float) -> float:
    """Where a ball at ``(row, col)`` moving ``(d_row, d_col)`` per frame crosses the paddle's
    row, reflected off the side walls; its column when it is not falling."""
    if d_row <= 0:
        return col
    col = col + d_col * (PADDLE_ROWS.start - row) / d_row
    width = WALL_RIGHT - WALL_LEFT
    offset = (col - WALL_LEFT) % (2 * width)
    return WALL_LEFT + (offset if offset <= width else 2 * width - offset)


class FramePolicy(Protocol):
    """A policy over batches of uint8 ``(N, 64, 64, 3)`` frames, with per-env memory."""

    def reset(self, mask: np.ndarray) -> None: ...

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


class TrackerPolicy:
    """A scripted Breakout player reading each 64 x 64 frame: it extrapolates where a falling ball
    will cross the paddle's row (off the side walls) and moves the paddle there; with no ball in
    view it presses FIRE. One memory per env (the ball's last centre, for its velocity). A
    measuring instrument and a data source (``tools/breakout_tracker.py``), not a learnt agent."""

    def __init__(self, num_envs: int = 1) -> None:
        self.last = np.full((num_envs, 2), np.nan)

    def reset(self, mask: np.ndarray) -> None:
        self.last[np.asarray(mask, dtype=bool)] = np.nan

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        balls = ball_centres(obs)  # (N, 2)
        actions = np.full(len(obs), FIRE, dtype=np.int64)
        for i, frame in enumerate(obs):
            paddle = paddle_centre(frame)
            ball = balls[i]
            if np.isnan(ball[0]) or np.isnan(paddle):
                continue
            velocity = ball - self.last[i] if not np.isnan(self.last[i, 0]) else np.zeros(2)
            target = landing_column(ball[0], ball[1], velocity[0], velocity[1])
            actions[i] = RIGHT if target > paddle + 1 else LEFT if target < paddle - 1 else NOOP
        self.last = balls
        return actions


class AwayPolicy:
    """Moves the paddle away from the ball's column (FIRE with no ball or paddle in view)."""

    def __init__(self, num_envs: int = 1) -> None:
        self.num_envs = num_envs

    def reset(self, mask: np.ndarray) -> None:
        pass

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        balls = ball_centres(obs)
        actions = np.full(len(obs), FIRE, dtype=np.int64)
        for i, frame in enumerate(obs):
            paddle = paddle_centre(frame)
            if not (np.isnan(balls[i, 0]) or np.isnan(paddle)):
                actions[i] = LEFT if balls[i, 1] >= paddle else RIGHT
        return actions


MAKERS: dict[str, Callable[[int], FramePolicy]] = {"follow": TrackerPolicy, "away": AwayPolicy}


def reached(frames: np.ndarray) -> bool:
    """Whether the ball in uint8 ``(T, 64, 64, 3)`` frames is seen at or below
    :data:`NEAR_PADDLE_ROW` (a dream that loses the ball on its way down never gets there)."""
    with np.errstate(invalid="ignore"):
        return bool(np.any(ball_centres(frames)[:, 0] >= NEAR_PADDLE_ROW))


def returned(frames: np.ndarray) -> bool:
    """Whether the ball in uint8 ``(T, 64, 64, 3)`` frames is seen rising (by a row or more, on
    consecutive frames) after it was seen at or below :data:`NEAR_PADDLE_ROW`."""
    rows = ball_centres(frames)[:, 0]
    low = np.flatnonzero(rows >= NEAR_PADDLE_ROW)
    if not len(low):
        return False
    after = rows[low[0] :]
    with np.errstate(invalid="ignore"):
        return bool(np.any(np.diff(after) <= -1.0))


@dataclass
class ProbeState:
    """A real state of the game: the emulator's state, the last ``L`` frames uint8
    ``(L, 64, 64, 3)`` (current last), the actions taken at all but the last (int64 ``(L,)``, the
    last slot 0) and the lives left."""

    ale_state: Any
    frames: np.ndarray
    actions: np.ndarray
    lives: int


def draw_states(
    env: Any, num_states: int, num_context: int, seed: int, epsilon: float = 0.25
) -> list[ProbeState]:
    """``num_states`` probe states from ``env`` (one real Breakout env,
    :func:`diamond_env.atari.make_single_atari_env`) played by the tracker with ``epsilon``
    random actions; a qualifying step is taken with probability 0.3, at most one per fall of
    the ball, so states spread over its path and over the games."""
    ale = env.unwrapped.ale
    rng = np.random.default_rng(seed)
    tracker = TrackerPolicy(1)
    states: list[ProbeState] = []
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    frames: list[np.ndarray] = [obs]
    actions: list[int] = []
    last_row, taken = float("nan"), False
    for _ in range(200 * num_states + 10_000):
        if len(states) == num_states:
            return states
        a = int(tracker(obs[None])[0]) if rng.random() >= epsilon else int(rng.integers(4))
        obs, _, term, trunc, _ = env.step(a)
        frames, actions = frames[-num_context:] + [obs], actions[-num_context:] + [a]
        row = float(ball_centres(obs)[0])
        if term or trunc:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            frames, actions, last_row = [obs], [], float("nan")
            tracker.reset(np.ones(1, bool))
            continue
        falling = row >= MIN_ROW and row > last_row
        last_row = row
        if not falling:
            taken = False  # a new fall may give a state again
        if falling and not taken and len(frames) > num_context and rng.random() < 0.3:
            taken = True  # one state per fall: states of one fall would share their outcome
            states.append(
                ProbeState(
                    ale.cloneState(),
                    np.stack(frames[-num_context:]),
                    np.array([*actions[-(num_context - 1) :], 0], dtype=np.int64),
                    int(ale.lives()),
                )
            )
    raise RuntimeError(f"paddle probe: found {len(states)} of {num_states} states")


def _primed(make: Callable[[int], FramePolicy], states: list[ProbeState], repeats: int) -> Any:
    """A policy for ``repeats`` copies of ``states`` that has seen each state's previous frame
    (so the tracker knows the ball's velocity)."""
    policy = make(len(states) * repeats)
    policy(np.concatenate([np.stack([s.frames[-2] for s in states])] * repeats))
    return policy


def play_real(
    env: Any, states: list[ProbeState], make: Callable[[int], FramePolicy], horizon: int
) -> dict[str, np.ndarray]:
    """Each state played ``horizon`` steps in the real game (stopping at a life loss); per run the
    figures and ``video`` uint8 ``(T, 64, 64, 3)`` (black after a life loss)."""
    ale = env.unwrapped.ale
    lost, near, back, rew, videos = [], [], [], [], []
    for s in states:
        ale.restoreState(s.ale_state)
        policy = _primed(make, [s], 1)
        obs, seen, total, died = s.frames[-1], [], 0.0, False
        for _ in range(horizon):
            obs, r, term, _, _ = env.step(int(policy(obs[None])[0]))
            seen.append(obs)
            total += float(r)
            if ale.lives() < s.lives or term:
                died = True
                break
        lost.append(died)
        near.append(reached(np.stack(seen)))
        back.append(returned(np.stack(seen)))
        rew.append(total)
        seen += [np.zeros_like(obs)] * (horizon - len(seen))
        videos.append(np.stack(seen))
    return {
        "life_lost": np.array(lost),
        "reached": np.array(near),
        "returned": np.array(back),
        "reward": np.array(rew),
        "video": np.stack(videos),
    }


class _FixedContexts:
    """A context source that starts env ``i`` from context ``i`` (one reset of all envs)."""

    def __init__(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        self.obs, self.act = obs, act

    def draw(self, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(uniforms) != len(self.obs):
            raise RuntimeError("paddle probe: the dream restarted an env before its end")
        return self.obs, self.act


def _run_dreams(
    world_model: Any,
    obs: torch.Tensor,
    act: torch.Tensor,
    horizon: int,
    choose: Callable[[np.ndarray, int], np.ndarray],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dreams from the contexts ``obs`` (N, L, 3, 64, 64) / ``act`` (N, L), each step's actions
    ``choose(frames shown, step)``, stopping at the dream's own life loss: frames ``(N, horizon,
    64, 64, 3)`` (black after a life loss), lives lost and rewards, each ``(N,)``."""
    from diamond_env.dream.simulator import DreamSimulator

    device = torch.device(world_model.device)
    sim = DreamSimulator(
        world_model,
        len(obs),
        horizon=horizon + 1,
        seed=seed,
        autoreset=False,
        context_source=_FixedContexts(obs.to(device), act.to(device)),
    )
    frames = to_uint8(sim.reset()).cpu().numpy()
    alive = np.ones(len(obs), bool)
    lost = np.zeros(len(obs), bool)
    rew = np.zeros(len(obs))
    seen = []
    for j in range(horizon):
        out = sim.step(torch.from_numpy(choose(frames, j)))
        frames = to_uint8(out.final_obs).cpu().numpy()
        seen.append(np.where(alive[:, None, None, None], frames, 0))
        rew += np.where(alive, out.reward.cpu().numpy(), 0.0)
        ended = out.terminated.cpu().numpy()
        lost |= alive & ended
        alive &= ~ended
    sim.close()
    return np.stack(seen, axis=1), lost, rew


def play_dream(
    world_model: Any,
    states: list[ProbeState],
    make: Callable[[int], FramePolicy],
    horizon: int,
    repeats: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Each state dreamt ``repeats`` times for ``horizon`` steps from its real context (stopping
    at the dream's own life loss); arrays ``(repeats * len(states),)``, state-major per repeat, and
    ``video`` ``(repeats * len(states), T, 64, 64, 3)``."""
    obs = torch.stack([to_model(torch.from_numpy(s.frames)) for s in states]).repeat(
        repeats, 1, 1, 1, 1
    )
    act = torch.stack([torch.from_numpy(s.actions) for s in states]).repeat(repeats, 1)
    policy = _primed(make, states, repeats)
    video, lost, rew = _run_dreams(
        world_model, obs, act, horizon, lambda frames, _: policy(frames), seed
    )
    near = np.array([reached(v) for v in video])
    back = np.array([returned(v) for v in video])
    return {"life_lost": lost, "reached": near, "returned": back, "reward": rew, "video": video}


def paddle_probe(
    world_model: Any,
    *,
    num_states: int = 64,
    repeats: int = 2,
    horizon: int = 20,
    seed: int = 0,
    grid_path: Path | None = None,
) -> dict[str, Any]:
    """The probe's figures for ``world_model`` (a Breakout :class:`WorldModel`, possibly on a fast
    path): per policy, shares of runs that lose a life and that return the ball, and rewards per
    run, in the game and in the dream; ``life_gap`` (AWAY minus FOLLOW lives lost) for both.
    ``grid_path``: also a PNG of the first states' FOLLOW runs, game above dream
    (:func:`save_probe_grid`)."""
    if world_model.game != BALL_GAME:
        raise ValueError(f"the paddle probe is for {BALL_GAME}, got a model of {world_model.game}")
    from diamond_env.atari import make_single_atari_env

    env = make_single_atari_env(BALL_GAME)
    try:
        states = draw_states(env, num_states, world_model.config.denoiser.num_context, seed)
        was_training = world_model.training
        world_model.eval()
        out: dict[str, Any] = {"states": num_states, "repeats": repeats, "horizon": horizon}
        for name in POLICIES:
            real = play_real(env, states, MAKERS[name], horizon)
            with torch.no_grad():
                dream = play_dream(world_model, states, MAKERS[name], horizon, repeats, seed)
            if name == "follow" and grid_path is not None:
                out["grid"] = str(save_probe_grid(real["video"], dream["video"], grid_path))
            out[name] = {
                f"{side}_{key}": float(np.mean(values[key]))
                for side, values in (("real", real), ("dream", dream))
                for key in ("life_lost", "reached", "returned", "reward")
            }
        world_model.train(was_training)
    finally:
        env.close()
    for side in ("real", "dream"):
        out[f"{side}_life_gap"] = (
            out["away"][f"{side}_life_lost"] - out["follow"][f"{side}_life_lost"]
        )
    return out


BOUNCE_LEADS = (0, 2, 5)
"""Steps between the end of the real context and the ball's lowest point in :func:`bounce_check`."""


def record_play(
    env: Any, steps: int, seed: int, epsilon: float = 0.25
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``steps`` real steps of the tracker with ``epsilon`` random actions, as games of
    ``(frames (T + 1, 64, 64, 3), actions (T,), lives (T + 1,))``."""
    rng = np.random.default_rng(seed)
    tracker = TrackerPolicy(1)
    games = []
    obs, _ = env.reset(seed=seed)
    frames, actions, lives = [obs], [], [int(env.unwrapped.ale.lives())]
    for i in range(steps):
        a = int(tracker(obs[None])[0]) if rng.random() >= epsilon else int(rng.integers(4))
        obs, _, term, trunc, _ = env.step(a)
        frames.append(obs)
        actions.append(a)
        lives.append(int(env.unwrapped.ale.lives()))
        if term or trunc or i == steps - 1:
            games.append((np.stack(frames), np.array(actions, np.int64), np.array(lives)))
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            tracker.reset(np.ones(1, bool))
            frames, actions, lives = [obs], [], [int(env.unwrapped.ale.lives())]
    return games


def find_bounces(frames: np.ndarray, lives: np.ndarray, margin: int) -> list[int]:
    """Frame indices ``t`` (``margin <= t < len - margin``) at which the ball, seen falling at or
    below ``BOUNCE_ROW``, is sent back by the paddle: seen a row higher within the next 3 frames,
    no life lost in the next 6."""
    rows = ball_centres(frames)[:, 0]
    out = []
    with np.errstate(invalid="ignore"):
        for t in range(margin, len(frames) - margin):
            if not (rows[t] >= BOUNCE_ROW and rows[t] > rows[t - 1]):
                continue
            ahead = np.r_[rows[t], rows[t + 1 : t + 4]]
            ahead = ahead[~np.isnan(ahead)]
            if np.any(ahead[1:] <= rows[t] - 1.0) and lives[t + 6] == lives[t]:
                out.append(t)
    return out


def bounce_check(
    world_model: Any, *, steps: int = 3000, seed: int = 0, leads: tuple[int, ...] = BOUNCE_LEADS
) -> dict[str, Any]:
    """For each lead ``d``: the share of the real bounces in ``steps`` steps of tracker play that
    the dream repeats (the ball seen rising after the paddle rows, :func:`returned`, within
    ``d + 5`` steps) from the real context ending ``d`` steps before the ball's lowest point, fed
    the real actions (one dream per bounce, open loop)."""
    if world_model.game != BALL_GAME:
        raise ValueError(f"the bounce check is for {BALL_GAME}, got a model of {world_model.game}")
    from diamond_env.atari import make_single_atari_env

    env = make_single_atari_env(BALL_GAME)
    try:
        games = record_play(env, steps, seed)
    finally:
        env.close()
    num_context = world_model.config.denoiser.num_context
    margin = max(leads) + num_context + 8
    found = [(g, t) for g, (f, _, life) in enumerate(games) for t in find_bounces(f, life, margin)]
    out: dict[str, Any] = {"steps": steps, "bounces": len(found), "repeated": {}}
    if not found:
        return out
    was_training = world_model.training
    world_model.eval()
    for lead in leads:
        horizon = lead + 5
        obs, act, future = [], [], []
        for g, t in found:
            frames, actions, _ = games[g]
            s = t - lead  # the context's last frame
            obs.append(to_model(torch.from_numpy(frames[s - num_context + 1 : s + 1])))
            act.append(torch.from_numpy(np.r_[actions[s - num_context + 1 : s], 0]))
            future.append(actions[s : s + horizon])
        actions = np.stack(future)
        with torch.no_grad():
            video, _, _ = _run_dreams(
                world_model,
                torch.stack(obs),
                torch.stack(act),
                horizon,
                functools.partial(_replayed, actions),
                seed,
            )
        out["repeated"][str(lead)] = float(np.mean([returned(v) for v in video]))
    world_model.train(was_training)
    return out


def _replayed(actions: np.ndarray, _frames: np.ndarray, step: int) -> np.ndarray:
    """The recorded actions ``actions[:, step]`` (a :func:`_run_dreams` chooser)."""
    return actions[:, step]


def bounce_summary(check: dict[str, Any]) -> str:
    """One line of :func:`bounce_check`'s figures."""
    if not check["bounces"]:
        return f"Bounce check: no bounce in {check['steps']} steps of tracker play."
    shares = " / ".join(f"{100 * v:.0f}" for v in check["repeated"].values())
    leads = " / ".join(check["repeated"])
    return (
        f"Bounce check ({check['bounces']} real bounces in {check['steps']} steps of tracker "
        f"play): the dream sends the ball back in {shares} % of them from the real context "
        f"{leads} steps before (the game 100 %, copying the last frame 0 %)."
    )


def save_probe_grid(
    real: np.ndarray, dream: np.ndarray, path: Path, *, max_rows: int = 6, scale: int = 2
) -> Path:
    """PNG of runs ``(N, T, 64, 64, 3)``: for each of the first ``max_rows`` states the game's
    frames above the dream's (every second step, the play area below the bricks), upscaled
    without smoothing so the ball stays visible."""
    rows = []
    for i in range(min(max_rows, len(real))):
        for video in (real[i], dream[i]):
            rows.append(np.concatenate(list(video[1::2, 24:]), axis=1))
        rows.append(np.full((3, rows[-1].shape[1], 3), 255, np.uint8))
    return write_png(np.concatenate(rows[:-1], axis=0), path, scale)


def paddle_rows(probe: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(measure, dream, game)`` rows of :func:`paddle_probe`'s figures."""

    def pct(v: float) -> str:
        return f"{100 * v:.0f} %"

    rows = []
    for name, what in (("follow", "paddle follows the ball"), ("away", "paddle moves away")):
        p = probe[name]
        rows += [
            (
                f"{what}: runs where the ball reaches the paddle's rows",
                pct(p["dream_reached"]),
                pct(p["real_reached"]),
            ),
            (
                f"{what}: runs that return the ball",
                pct(p["dream_returned"]),
                pct(p["real_returned"]),
            ),
            (f"{what}: runs that lose a life", pct(p["dream_life_lost"]), pct(p["real_life_lost"])),
            (
                f"{what}: reward per run",
                f"{p['dream_reward']:.2f}",
                f"{p['real_reward']:.2f}",
            ),
        ]
    rows.append(
        (
            "lives saved by following (away minus follow)",
            f"{100 * probe['dream_life_gap']:+.0f} points",
            f"{100 * probe['real_life_gap']:+.0f} points",
        )
    )
    return rows


def paddle_summary(probe: dict[str, Any]) -> str:
    """One line: does following the ball save lives in the dream as it does in the game?"""
    return (
        f"Paddle probe ({probe['states']} real states with the ball falling, {probe['horizon']} "
        f"steps, closed loop): following the ball instead of moving away saves a life in "
        f"{100 * probe['real_life_gap']:+.0f} points of runs in the game, "
        f"{100 * probe['dream_life_gap']:+.0f} in the dream; the ball comes back "
        f"{100 * probe['follow']['real_returned']:.0f} % of the time in the game, "
        f"{100 * probe['follow']['dream_returned']:.0f} % in the dream."
    )
