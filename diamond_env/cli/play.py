"""``diamond-env play``: play the dream (or the real game) with the keyboard in a pygame window.

Keys (also printed at start):

* arrows and space: UP / DOWN / LEFT / RIGHT / FIRE and their combinations, mapped on the game's
  own action meanings (:func:`action_from_keys`); nothing held is NOOP;
* ``m``: switch between human and agent control (needs ``agent``);
* ``+`` (or ``=``) / ``-``: longer / shorter imagination horizon (the dream is truncated, then
  restarted, after that many steps);
* ``p``: pause; ``.``: one step while paused; ``Enter`` or ``r``: restart the episode;
  ``Esc`` or ``q``: quit.

With ``record`` every episode played (ended, restarted or cut by quitting) is written to that
directory as ``episode_NNN.npz`` (``obs`` uint8 (T+1, 64, 64, 3), ``act`` int64 (T,), ``rew``
float32 (T,), ``end`` bool (T,), ``agent`` bool (T,): whether the agent chose the action) and
``episode_NNN.gif``.

The game logic (:class:`PlaySession`) knows nothing of pygame; :func:`play` is the window around
it. pygame is imported inside :func:`play` only. It runs headless with ``SDL_VIDEODRIVER=dummy``,
``max_frames`` and a ``script`` of key events.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from diamond_env.data.collect import Policy
from diamond_env.run.safe_io import InputError, read_json

if TYPE_CHECKING:
    from diamond_env.world_model.model import WorldModel

BUTTONS = {"up": "UP", "down": "DOWN", "left": "LEFT", "right": "RIGHT", "space": "FIRE"}
"""pygame key names -> the ALE button they press."""
COMMANDS = {
    "m": "control",
    "=": "horizon+",
    "+": "horizon+",
    "[+]": "horizon+",
    "-": "horizon-",
    "[-]": "horizon-",
    "p": "pause",
    ".": "step",
    "return": "reset",
    "r": "reset",
    "escape": "quit",
    "q": "quit",
}
"""pygame key names -> session commands."""
HORIZONS = (5, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 10_000)
"""The horizons ``+`` and ``-`` step through."""
HEADER = 36
"""Pixels above the game for the two status lines."""


def action_from_keys(held: Collection[str], meanings: Sequence[str]) -> int:
    """The action index whose ALE name matches the held buttons (pygame key names, see
    :data:`BUTTONS`); when the game lacks that combination, the closest one it has (movement kept
    before FIRE, horizontal before vertical), NOOP (index of "NOOP", else 0) when none fits."""
    press = {BUTTONS[k] for k in held if k in BUTTONS}
    vert = "UP" if "UP" in press and "DOWN" not in press else ""
    vert = "DOWN" if "DOWN" in press and "UP" not in press else vert
    horiz = "RIGHT" if "RIGHT" in press and "LEFT" not in press else ""
    horiz = "LEFT" if "LEFT" in press and "RIGHT" not in press else horiz
    fire = "FIRE" if "FIRE" in press else ""
    parts = [p for p in (vert, horiz, fire) if p]  # in ALE's order: UPRIGHTFIRE

    def rank(sub: tuple[str, ...]) -> tuple[int, bool, bool]:
        return (-len(set(sub) - {"FIRE"}), "FIRE" not in sub, horiz not in sub)

    subsets = [c for k in range(len(parts), 0, -1) for c in itertools.combinations(parts, k)]
    names = list(meanings)
    for sub in sorted(subsets, key=rank):
        if "".join(sub) in names:
            return names.index("".join(sub))
    return names.index("NOOP") if "NOOP" in names else 0


def next_horizon(horizon: int, *, up: bool) -> int:
    """The :data:`HORIZONS` rung above (``up``) or below ``horizon``, kept within the ladder."""
    if up:
        return HORIZONS[min(bisect.bisect_right(HORIZONS, horizon), len(HORIZONS) - 1)]
    return HORIZONS[max(bisect.bisect_left(HORIZONS, horizon) - 1, 0)]


class Game(Protocol):
    """One game to play, dream or real: frames uint8 (64, 64, 3)."""

    game: str
    kind: str  # "dream" or "real"
    action_meanings: list[str]
    horizon: int | None

    def reset(self) -> np.ndarray: ...

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """Frame reached, reward, whether the episode ended (terminated or truncated)."""
        ...


class DreamGame:
    """The dream of one game (a :class:`DreamSimulator` with one env, no autoreset)."""

    def __init__(self, world_model: WorldModel, *, horizon: int, seed: int) -> None:
        from diamond_env.dream.simulator import DreamSimulator

        self.sim = DreamSimulator(world_model, 1, horizon=horizon, seed=seed, autoreset=False)
        self.kind = "dream"
        self.game, self.action_meanings = self.sim.game, self.sim.action_meanings

    @property
    def horizon(self) -> int | None:
        return self.sim.horizon

    @horizon.setter
    def horizon(self, value: int | None) -> None:
        if value is not None:
            self.sim.horizon = int(value)

    def reset(self) -> np.ndarray:
        from diamond_env.dream.gym_env import frames_to_numpy

        return frames_to_numpy(self.sim.reset())[0]

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        from diamond_env.dream.gym_env import frames_to_numpy

        out = self.sim.step(torch.tensor([action]))
        ended = bool(out.terminated[0] | out.truncated[0])
        return frames_to_numpy(out.final_obs)[0], float(out.reward[0]), ended


class RealGame:
    """The real game (full games, docs/method.md §1 settings); its first reset is seeded."""

    def __init__(self, game: str, *, seed: int) -> None:
        from diamond_env.atari import make_atari_env

        self.env = make_atari_env(game, 1, train=False)
        self.game, self.action_meanings = self.env.game, self.env.get_action_meanings()
        self.horizon: int | None = None
        self.seed: int | None = seed
        self.kind = "real"

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed)
        self.seed = None
        return obs[0]

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        obs, rew, _, _, info = self.env.step(np.array([action], dtype=np.int64))
        over = bool(info["game_over"][0])
        return (info["final_obs"][0] if over else obs[0]), float(rew[0]), over


@dataclass
class Recording:
    """What one episode recorded: frames (T+1), actions, rewards, ends, agent flags (T)."""

    obs: list[np.ndarray]
    act: list[int] = field(default_factory=list)
    rew: list[float] = field(default_factory=list)
    end: list[bool] = field(default_factory=list)
    agent: list[bool] = field(default_factory=list)


class PlaySession:
    """Human or agent play of a :class:`Game`, without any window.

    ``tick(held)`` advances one step unless paused (``held``: pygame names of held keys);
    ``command(name)`` applies a :data:`COMMANDS` value. ``returns`` lists finished episodes'
    returns; with ``record`` each episode is saved there (see the module docstring).
    """

    def __init__(
        self, game: Game, *, policy: Policy | None = None, record: Path | None = None
    ) -> None:
        self.game, self.policy, self.record = game, policy, record
        self.human = True
        self.paused = False
        self.pending_step = False
        self.quit = False
        self.returns: list[float] = []
        self.recorded: list[Path] = []
        self.steps = 0
        self._start()

    def _start(self) -> None:
        self.frame = self.game.reset()
        self.episode = Recording(obs=[self.frame])
        self.ret, self.t = 0.0, 0
        if self.policy is not None:
            self.policy.reset(np.ones(1, dtype=bool))

    def command(self, name: str) -> None:
        if name == "control" and self.policy is not None:
            self.human = not self.human
        elif name in ("horizon+", "horizon-") and self.game.horizon is not None:
            self.game.horizon = next_horizon(self.game.horizon, up=name == "horizon+")
        elif name == "pause":
            self.paused = not self.paused
        elif name == "step":
            self.pending_step = True
        elif name == "reset":
            self.finish(ended=False)
            self._start()
        elif name == "quit":
            self.finish(ended=False)
            self.quit = True

    def tick(self, held: Collection[str]) -> bool:
        """One step when not paused (or a single step was asked for); True if a step was taken."""
        if self.quit or (self.paused and not self.pending_step):
            return False
        self.pending_step = False
        use_agent = self.policy is not None and not self.human
        action = action_from_keys(held, self.game.action_meanings)
        if self.policy is not None:  # the agent sees every frame, so it can take over any time
            agent_action = int(self.policy(self.frame[None])[0])
            action = agent_action if use_agent else action
        self.frame, reward, ended = self.game.step(action)
        self.ret, self.t, self.steps = self.ret + reward, self.t + 1, self.steps + 1
        ep = self.episode
        ep.obs.append(self.frame)
        ep.act.append(action)
        ep.rew.append(reward)
        ep.end.append(ended)
        ep.agent.append(use_agent)
        if ended:
            self.finish(ended=True)
            self._start()
        return True

    def finish(self, *, ended: bool) -> None:
        """Close the current episode: count its return (if it ended) and record it."""
        if ended:
            self.returns.append(self.ret)
        if self.record is not None and self.episode.act:
            self.recorded.append(save_episode(self.episode, self.record, self.game.game))
            self.episode = Recording(obs=[self.frame])

    def status(self) -> tuple[str, str]:
        """Two lines for the window header."""
        who = "human" if self.human else "agent"
        horizon = "-" if self.game.horizon is None else str(self.game.horizon)
        line1 = f"{self.game.game} {self.game.kind} | {who} | horizon {horizon} | t {self.t} | "
        line1 += f"return {self.ret:g}"
        flags = [f for f, on in (("PAUSED", self.paused), ("REC", self.record)) if on]
        return line1, " ".join(flags) or "m agent  +/- horizon  p pause  . step  r reset"


def save_episode(ep: Recording, directory: Path, game: str) -> Path:
    """Write ``episode_NNN.npz`` (next free NNN) and its ``.gif`` in ``directory``."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    k = len(list(directory.glob("episode_*.npz")))
    while (directory / f"episode_{k:03d}.npz").exists():
        k += 1
    path = directory / f"episode_{k:03d}.npz"
    np.savez_compressed(
        path,
        obs=np.stack(ep.obs).astype(np.uint8),
        act=np.asarray(ep.act, dtype=np.int64),
        rew=np.asarray(ep.rew, dtype=np.float32),
        end=np.asarray(ep.end, dtype=bool),
        agent=np.asarray(ep.agent, dtype=bool),
        meta=np.asarray(json.dumps({"game": game})),
    )
    frames = [Image.fromarray(np.repeat(np.repeat(f, 3, 0), 3, 1)).quantize() for f in ep.obs]
    frames[0].save(
        path.with_suffix(".gif"), save_all=True, append_images=frames[1:], duration=66, loop=0
    )
    return path


@dataclass(frozen=True)
class PlayResult:
    """What a play session did: window frames drawn, game steps, finished episodes' returns,
    recorded ``.npz`` files."""

    frames: int
    steps: int
    returns: list[float]
    recorded: list[Path]


KEYS_HELP = (
    "keys: arrows/space = UP DOWN LEFT RIGHT FIRE | m = human/agent | +/- = horizon | "
    "p = pause | . = one step | Enter/r = restart | Esc/q = quit"
)


def _make_game(
    checkpoint: str | os.PathLike[str] | None,
    real: bool,
    game: str | None,
    horizon: int,
    seed: int,
    device: str,
) -> Game:
    if real:
        if game is None:
            if checkpoint is None:
                raise ValueError("game: expected a game name or a checkpoint to take it from")
            config = Path(checkpoint) / "config.json"
            if not config.is_file():
                raise FileNotFoundError(f"checkpoint file {config} is missing")
            game = str(read_json(config).get("game"))
        return RealGame(game, seed=seed)
    if checkpoint is None:
        raise ValueError("checkpoint: expected a world-model checkpoint directory to dream with")
    from diamond_env.world_model.model import WorldModel

    wm = WorldModel.load(checkpoint, device=device, expected_game=game).eval()
    return DreamGame(wm, horizon=horizon, seed=seed)


def _script_by_frame(script: Sequence[tuple[int, str, str]]) -> dict[int, list[tuple[str, str]]]:
    out: dict[int, list[tuple[str, str]]] = {}
    for frame, kind, key in script:
        if kind not in ("down", "up"):
            raise ValueError(f"script: expected (frame, 'down' | 'up', key), got kind {kind!r}")
        out.setdefault(int(frame), []).append((kind, key))
    return out


def play(
    checkpoint: str | os.PathLike[str] | None,
    *,
    agent: str | os.PathLike[str] | None = None,
    real: bool = False,
    game: str | None = None,
    horizon: int = 1000,
    seed: int = 0,
    scale: int = 8,
    fps: int = 15,
    device: str = "cpu",
    max_frames: int | None = None,
    record: str | os.PathLike[str] | None = None,
    script: Sequence[tuple[int, str, str]] = (),
    trust_pickle: bool = False,
) -> PlayResult:
    """Open a pygame window and play the dream of ``checkpoint`` (or, ``real=True``, the real
    game named by ``game`` or by the checkpoint) until Esc / closing the window / ``max_frames``.

    ``agent``: an agent directory (:func:`~diamond_env.evaluation.real_game.load_agent`); control
    starts with it when given (``trust_pickle``: see ``load_agent``). ``horizon``: steps before the dream is truncated. ``fps`` 0 runs
    unthrottled. ``script``: ``(frame, "down" | "up", pygame key name)`` events posted before
    that frame's input is read (for tests and demos).
    """
    from diamond_env.evaluation.real_game import load_agent

    try:
        import pygame  # noqa: F401  (fail before loading any model)
    except ImportError as err:
        raise InputError("diamond-env play needs pygame: pip install pygame") from err
    if scale < 1 or fps < 0 or (max_frames is not None and max_frames < 1):
        raise ValueError(
            f"scale, fps, max_frames: expected >= 1, >= 0, None or >= 1, got {scale}, {fps}, "
            f"{max_frames}"
        )
    events = _script_by_frame(script)
    target = _make_game(checkpoint, real, game, horizon, seed, device)
    policy: Policy | None = None
    if agent is not None:
        policy, _ = load_agent(agent, device=device, seed=seed, trust_pickle=trust_pickle)
        n = getattr(policy, "num_actions", len(target.action_meanings))
        if n != len(target.action_meanings):
            raise ValueError(
                f"agent: {agent} has {n} actions, {target.game} has {len(target.action_meanings)}"
            )
    session = PlaySession(target, policy=policy, record=None if record is None else Path(record))
    session.human = policy is None
    frames = _window_loop(session, scale=scale, fps=fps, max_frames=max_frames, events=events)
    return PlayResult(frames, session.steps, session.returns, session.recorded)


def _window_loop(
    session: PlaySession,
    *,
    scale: int,
    fps: int,
    max_frames: int | None,
    events: dict[int, list[tuple[str, str]]],
) -> int:
    """The pygame loop: input -> ``session.tick`` -> draw; returns the frames drawn."""
    import pygame

    pygame.display.init()
    pygame.font.init()
    try:
        size = 64 * scale
        screen = pygame.display.set_mode((size, size + HEADER))
        pygame.display.set_caption(f"diamond-env play: {session.game.game}")
        font, clock = pygame.font.Font(None, 18), pygame.time.Clock()
        held: set[str] = set()
        frame = 0
        while not session.quit and (max_frames is None or frame < max_frames):
            for kind, key in events.get(frame, []):
                event_type = pygame.KEYDOWN if kind == "down" else pygame.KEYUP
                pygame.event.post(pygame.event.Event(event_type, key=pygame.key.key_code(key)))
            for event in pygame.event.get():
                name = pygame.key.name(event.key) if hasattr(event, "key") else ""
                if event.type == pygame.QUIT:
                    session.command("quit")
                elif event.type == pygame.KEYDOWN and name in BUTTONS:
                    held.add(name)
                elif event.type == pygame.KEYDOWN and name in COMMANDS:
                    session.command(COMMANDS[name])
                elif event.type == pygame.KEYUP:
                    held.discard(name)
            if session.quit:
                break
            session.tick(held)
            image = pygame.surfarray.make_surface(
                np.ascontiguousarray(session.frame.swapaxes(0, 1))
            )
            screen.fill((0, 0, 0))
            screen.blit(pygame.transform.scale(image, (size, size)), (0, HEADER))
            for i, line in enumerate(session.status()):
                screen.blit(font.render(line, True, (255, 255, 255)), (4, 3 + 16 * i))
            pygame.display.flip()
            frame += 1
            if fps > 0:
                clock.tick(fps)
        if not session.quit:
            session.finish(ended=False)
    finally:
        pygame.display.quit()
    return frame
