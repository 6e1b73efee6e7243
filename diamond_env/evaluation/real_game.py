"""Evaluation of agents in the real game with the test settings of docs/method.md §1.

Full games (no life-loss termination, 108k-frame cap), ε = 0 by default, exactly ``episodes``
finished games: with several envs no more than ``episodes`` games are ever started, so short games
are not over-represented. Scores are reported raw and human-normalised (docs/method.md §6).

Every agent is driven through one protocol (:class:`diamond_env.data.collect.Policy`):
``reset(mask)`` at each game start, ``__call__(obs)`` with uint8 ``(N, 64, 64, 3)`` frames
returning int64 actions ``(N,)``. :class:`ActorCriticPolicy` wraps the project's agent,
:class:`SB3Policy` a stable-baselines3 model, fed frames stacked and laid out exactly as SB3's
``VecFrameStack`` / ``VecTransposeImage`` served them in training.

Agent directories (:func:`load_agent`): ``actor_critic.json`` + ``actor_critic.safetensors``
(:meth:`ActorCritic.save`; directly or in an ``actor_critic/`` subfolder), or an SB3 policy saved
without pickle by :func:`~diamond_env.evaluation.agent_files.save_sb3_agent` (what ``train-agent``
writes). A foreign SB3 ``model.zip`` with an ``agent.json`` beside it (``{"kind": "sb3", "algo":
"ppo", "n_stack": 4, "game": "Breakout"}``; optional keys ``model``, the zip's name, and
``deterministic``) is loaded only with ``trust_pickle=True``: SB3 unpickles parts of the zip, so a
crafted file runs code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from diamond_env.atari import RealAtariVectorEnv, action_meanings, canonical_game, make_atari_env
from diamond_env.config import IMG_SIZE
from diamond_env.data.collect import Policy, RandomPolicy
from diamond_env.evaluation.agent_files import load_sb3_policy, sb3_algorithms
from diamond_env.models.actor_critic import CONFIG_FILE, ActorCritic, State
from diamond_env.real_env import EnvSpec, PixelVectorEnv
from diamond_env.run.checkpoint import atomic_write_json
from diamond_env.run.safe_io import confined, read_json

__all__ = ["ActionFrequencyPolicy", "ActorCriticPolicy", "EvalResult", "FrameStacker"]
__all__ += ["RandomPolicy", "SB3Policy", "baseline_margins", "cmd_evaluate", "evaluate"]
__all__ += ["human_normalized_score", "load_agent", "reference_scores"]

SCORES_FILE = "atari100k_scores.json"
AGENT_FILE = "agent.json"
SB3_MODEL_FILE = "model.zip"
VIDEO_SUFFIXES = (".mp4", ".gif")
BASELINE_LABELS = {
    "random": "random policy",
    "action_frequency": "the agent's action shares, blind to the screen",
}
"""What :func:`baseline_margins` plays, as ``diamond-env evaluate --baselines`` names them."""
GIF_MAX_FRAMES = 9000
"""A GIF is built in memory: longer first games are cut after 10 minutes (15 fps)."""


def reference_scores(game: str) -> dict[str, float]:
    """``{"random", "human", "diamond"}`` scores of an Atari 100k game (docs/method.md §6); ``game`` is
    matched ignoring case, ``_`` and ``-``. Raises ``ValueError`` for any other game."""
    data = json.loads(resources.files("diamond_env").joinpath(SCORES_FILE).read_text("utf-8"))
    tables = {"random": data["random"], "human": data["human"], "diamond": data["DIAMOND"]}
    names = {name.lower(): name for name in tables["random"]}
    key = game.replace("_", "").replace("-", "").lower() if isinstance(game, str) else None
    if key not in names:
        raise ValueError(
            f"game: expected one of the 26 Atari 100k games {sorted(names.values())}, got {game!r}"
        )
    return {table: float(scores[names[key]]) for table, scores in tables.items()}


def human_normalized_score(game: str, score: float) -> float:
    """``(score - random) / (human - random)``: 0 plays like a random agent, 1 like a human."""
    ref = reference_scores(game)
    return (float(score) - ref["random"]) / (ref["human"] - ref["random"])


class ActionFrequencyPolicy:
    """A baseline blind to the screen: every action is drawn independently, with fixed shares
    (an agent's own, from :attr:`EvalResult.action_shares`), from a seeded generator.

    In Breakout, pressing FIRE more and moving less than the uniform random policy already scores
    more than it; an agent that does no better than this policy with its own shares has learnt how
    often to press each button, not when."""

    def __init__(self, shares: Sequence[float], seed: int | None = None) -> None:
        p = np.asarray(shares, dtype=np.float64)
        if p.ndim != 1 or len(p) < 1 or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
            raise ValueError(
                f"shares: expected non-negative numbers with a positive sum, got {shares!r}"
            )
        self.shares = p / p.sum()
        self.num_actions = len(p)
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.choice(self.num_actions, size=len(obs), p=self.shares).astype(np.int64)

    def reset(self, mask: np.ndarray) -> None:
        return None


class ActorCriticPolicy:
    """The project's :class:`ActorCritic` as a :class:`Policy`, one LSTM state per env.

    The state is zeroed where ``reset(mask)`` says a game starts. Actions are **sampled** from the
    policy by default, as DIAMOND does at test time (its test collector draws from the categorical
    with ε = 0); ``deterministic=True`` takes the argmax (an untrained model has zero logits, so
    its argmax is always action 0, NOOP, which never serves the ball in Breakout). ``seed`` seeds
    a private generator on the model's device; no global RNG is touched.
    """

    def __init__(
        self, model: ActorCritic, *, deterministic: bool = False, seed: int | None = None
    ) -> None:
        if not isinstance(model, ActorCritic):
            raise TypeError(f"model: expected an ActorCritic, got {type(model).__name__}")
        self.model = model.eval()
        self.num_actions = model.num_actions
        self.deterministic = deterministic
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=model.device)
            self.generator.manual_seed(seed)
        self.state: State | None = None

    def reset(self, mask: np.ndarray) -> None:
        """Zero the LSTM state of the envs where ``mask`` (bool ``(N,)``) is True."""
        mask = np.asarray(mask, dtype=bool)
        if self.state is None or self.state[0].shape[0] != len(mask):
            self.state = self.model.initial_state(len(mask))
        else:
            self.state = self.model.reset_state(self.state, torch.from_numpy(mask))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """uint8 ``(N, 64, 64, 3)`` -> int64 actions ``(N,)``."""
        if self.state is None:
            self.state = self.model.initial_state(len(obs))
        if self.state[0].shape[0] != len(obs):
            raise ValueError(f"obs: expected {self.state[0].shape[0]} envs, got {len(obs)}")
        actions, self.state = self.model.act(
            obs, self.state, deterministic=self.deterministic, generator=self.generator
        )
        return actions.cpu().numpy().astype(np.int64)


class FrameStacker:
    """The last ``n_stack`` frames of each env, laid out as SB3's ``VecFrameStack`` lays them out.

    ``push`` takes uint8 ``(N, 64, 64, 3)`` and returns uint8 ``(N, 3*n_stack, 64, 64)``
    (``channels_first``) or ``(N, 64, 64, 3*n_stack)``: oldest frame first, newest in the last 3
    channels. After ``reset(mask)`` the older slots of those envs are zeros, as ``VecFrameStack``
    pads at reset and after every episode end.
    """

    def __init__(self, n_stack: int, *, channels_first: bool) -> None:
        if isinstance(n_stack, bool) or not isinstance(n_stack, int) or n_stack < 1:
            raise ValueError(f"n_stack: expected a positive int, got {n_stack!r}")
        self.n_stack = n_stack
        self.channels_first = channels_first
        self.stack: np.ndarray | None = None

    def reset(self, mask: np.ndarray) -> None:
        """Forget the frames of the envs where ``mask`` (bool ``(N,)``) is True."""
        mask = np.asarray(mask, dtype=bool)
        if self.stack is not None and len(self.stack) == len(mask):
            self.stack[mask] = 0
        else:
            self.stack = None

    def push(self, obs: np.ndarray) -> np.ndarray:
        """Append one frame per env; return a copy of the stacks."""
        obs = np.asarray(obs)
        if obs.ndim != 4 or obs.shape[1:] != (IMG_SIZE, IMG_SIZE, 3) or obs.dtype != np.uint8:
            raise ValueError(
                f"obs: expected uint8 (N, {IMG_SIZE}, {IMG_SIZE}, 3), got {obs.dtype} {obs.shape}"
            )
        frames = obs.transpose(0, 3, 1, 2) if self.channels_first else obs
        axis = 1 if self.channels_first else 3
        if self.stack is None or len(self.stack) != len(obs):
            shape = list(frames.shape)
            shape[axis] *= self.n_stack
            self.stack = np.zeros(shape, dtype=np.uint8)
        self.stack = np.roll(self.stack, -3, axis=axis)
        index = (slice(None), slice(-3, None)) if self.channels_first else (..., slice(-3, None))
        self.stack[index] = frames
        return self.stack.copy()


class SB3Policy:
    """A stable-baselines3 model (an algorithm such as ``PPO``, or its ``.policy``) as a
    :class:`Policy`, fed the observations it was trained on.

    The layout comes from ``model.observation_space``: ``(3k, 64, 64)`` (channel-first; also what
    SB3 stores after auto-wrapping a channel-last env in ``VecTransposeImage``) or
    ``(64, 64, 3k)``, ``k`` frames stacked as ``VecFrameStack(n_stack=k)`` stacks them.
    ``n_stack=None`` infers ``k``; a given value must agree. ``deterministic`` defaults to True,
    as in SB3's ``evaluate_policy``. Recurrent models (sb3-contrib) get their state and
    ``episode_start`` carried per env. ``seed`` calls ``model.set_random_seed`` (SB3 samples
    from the global Python, NumPy and torch generators).
    """

    def __init__(
        self,
        model: Any,
        *,
        n_stack: int | None = None,
        deterministic: bool = True,
        seed: int | None = None,
    ) -> None:
        shape = tuple(getattr(model.observation_space, "shape", None) or ())
        side = (IMG_SIZE, IMG_SIZE)
        channels_first = len(shape) == 3 and shape[1:] == side
        if not channels_first and not (len(shape) == 3 and shape[:2] == side):
            raise ValueError(
                f"model.observation_space: expected RGB frames (3k, {IMG_SIZE}, {IMG_SIZE}) or "
                f"({IMG_SIZE}, {IMG_SIZE}, 3k), got {model.observation_space}"
            )
        channels = int(shape[0] if channels_first else shape[2])
        k = n_stack if n_stack is not None else channels // 3
        if channels % 3 != 0 or k * 3 != channels:
            raise ValueError(
                f"n_stack: expected {channels} / 3 RGB frames for a model trained on shape "
                f"{shape}, got n_stack={n_stack!r}"
            )
        if getattr(model.action_space, "n", None) is None:
            raise ValueError(f"model.action_space: expected Discrete, got {model.action_space}")
        self.model = model
        self.num_actions = int(model.action_space.n)
        self.obs_shape: tuple[int, ...] = shape
        self.deterministic = deterministic
        self.stacker = FrameStacker(k, channels_first=channels_first)
        self.rnn_state: Any = None
        self.episode_start: np.ndarray | None = None
        if seed is not None:
            if hasattr(model, "set_random_seed"):
                model.set_random_seed(seed)
            else:  # a bare policy (load_agent's): SB3 samples from the global generators
                from stable_baselines3.common.utils import set_random_seed

                set_random_seed(seed)

    def reset(self, mask: np.ndarray) -> None:
        """Empty the frame stacks (and flag ``episode_start``) of the envs where ``mask`` is True."""
        mask = np.asarray(mask, dtype=bool)
        self.stacker.reset(mask)
        if self.episode_start is None or len(self.episode_start) != len(mask):
            self.episode_start, self.rnn_state = np.ones(len(mask), dtype=bool), None
        else:
            self.episode_start |= mask

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """uint8 ``(N, 64, 64, 3)`` -> int64 actions ``(N,)``."""
        stacked = self.stacker.push(obs)
        if self.episode_start is None or len(self.episode_start) != len(obs):
            self.episode_start = np.ones(len(obs), dtype=bool)
        actions, self.rnn_state = self.model.predict(
            stacked,
            state=self.rnn_state,
            episode_start=self.episode_start,
            deterministic=self.deterministic,
        )
        self.episode_start = np.zeros(len(obs), dtype=bool)
        return np.asarray(actions, dtype=np.int64).reshape(len(obs))


@dataclasses.dataclass
class EvalResult:
    """Scores of ``episodes`` full real games, in the order the games were started.

    ``returns`` are raw game scores, ``lengths`` agent steps (4 frames each); ``std`` is the
    population standard deviation; ``hns`` the human-normalised mean (None for a game outside
    Atari 100k); ``truncated`` marks games cut by the 108k-frame cap; ``action_counts`` how often
    each action was taken over these games (they sum to the lengths).
    """

    game: str
    episodes: int
    seed: int
    returns: list[float]
    lengths: list[int]
    truncated: list[bool]
    mean: float
    std: float
    min: float
    max: float
    mean_length: float
    hns: float | None
    seconds: float
    action_counts: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def from_games(
        cls,
        game: str,
        seed: int,
        returns: np.ndarray,
        lengths: np.ndarray,
        truncated: np.ndarray,
        seconds: float,
        action_counts: np.ndarray | None = None,
    ) -> EvalResult:
        """Summarise per-game returns, lengths, truncation flags and action counts."""
        try:
            hns: float | None = human_normalized_score(game, float(returns.mean()))
        except ValueError:
            hns = None
        return cls(
            game=game,
            episodes=len(returns),
            seed=seed,
            returns=returns.tolist(),
            lengths=lengths.tolist(),
            truncated=truncated.tolist(),
            mean=float(returns.mean()),
            std=float(returns.std()),
            min=float(returns.min()),
            max=float(returns.max()),
            mean_length=float(lengths.mean()),
            hns=hns,
            seconds=seconds,
            action_counts=[] if action_counts is None else [int(c) for c in action_counts],
        )

    @property
    def standard_error(self) -> float:
        """Standard error of the mean return (``std`` over the square root of the games)."""
        return self.std / math.sqrt(self.episodes)

    @property
    def action_shares(self) -> list[float]:
        """The share of each action among the steps played (empty when not counted)."""
        total = sum(self.action_counts)
        return [c / total for c in self.action_counts] if total else []

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One human-readable line."""
        hns = "n/a" if self.hns is None else f"{self.hns:.3f}"
        cut = f" ({sum(self.truncated)} cut at 108k frames)" if any(self.truncated) else ""
        shares = "/".join(f"{100 * s:.0f}" for s in self.action_shares)
        return (
            f"{self.game}: {self.episodes} games, return {self.mean:.2f} ± {self.std:.2f} "
            f"(standard error {self.standard_error:.2f}; min {self.min:g}, max {self.max:g}), "
            f"length {self.mean_length:.0f} steps{cut}, HNS {hns}"
            + (f", action shares {shares} %" if shares else "")
        )


class _VideoWriter:
    """RGB uint8 ``(H, W, 3)`` frames to ``.mp4`` (OpenCV mp4v, streamed) or ``.gif`` (Pillow,
    in memory, at most :data:`GIF_MAX_FRAMES`); the file appears atomically on ``close(True)``."""

    def __init__(self, path: Path, fps: int) -> None:
        self.path, self.fps = path, fps
        self.tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
        self.mp4: cv2.VideoWriter | None = None
        self.gif: list[Any] = []

    def add(self, frame: np.ndarray) -> None:
        if self.path.suffix == ".gif":
            from PIL import Image

            if len(self.gif) < GIF_MAX_FRAMES:
                self.gif.append(Image.fromarray(frame).quantize())
            return
        if self.mp4 is None:
            size = (frame.shape[1], frame.shape[0])
            self.mp4 = cv2.VideoWriter(
                str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, size
            )
            if not self.mp4.isOpened():
                raise RuntimeError(f"video: OpenCV cannot write mp4v to {self.tmp}")
        self.mp4.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self, commit: bool) -> None:
        if self.mp4 is not None:
            self.mp4.release()
        if commit and self.gif:
            ms = round(1000 / self.fps)
            self.gif[0].save(
                self.tmp, save_all=True, append_images=self.gif[1:], duration=ms, loop=0
            )
        if commit and self.tmp.exists():
            os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def evaluate(
    policy: Policy,
    game: str,
    episodes: int,
    *,
    seed: int = 0,
    num_envs: int = 1,
    epsilon: float = 0.0,
    video_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    env: EnvSpec | None = None,
) -> EvalResult:
    """Play ``episodes`` full real games of ``game`` with ``policy`` and report their scores.

    ``env``: play that Gymnasium env instead of an ALE game (``game`` is its id; no video).

    Env ``i`` is seeded ``seed + i``; ``min(num_envs, episodes)`` envs play in lock-step and an env
    whose game ends starts another only while fewer than ``episodes`` have been started. With
    probability ``epsilon`` an env takes a uniform random action (generator seeded ``seed``).
    ``video_path`` (``.mp4`` or ``.gif``) records the first game at full resolution (210x160,
    15 fps; its very last frame is lost to the same-step autoreset).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected a positive int, got {episodes!r}")
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon: expected a float in [0, 1], got {epsilon!r}")
    video = None if video_path is None else Path(video_path)
    if video is not None and video.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video_path: expected a name ending in {VIDEO_SUFFIXES}, got {video}")
    real: RealAtariVectorEnv | PixelVectorEnv
    if env is not None:
        if video is not None:
            raise ValueError("video_path: videos are recorded for ALE games only")
        game = env.id
        real = PixelVectorEnv(env, min(num_envs, episodes), train=False)
    else:
        game = canonical_game(game)
        render_mode = None if video is None else "rgb_array"
        real = make_atari_env(game, min(num_envs, episodes), train=False, render_mode=render_mode)
    writer = None if video is None else _VideoWriter(video, fps=real.metadata["render_fps"])
    start = time.perf_counter()
    ok = False
    try:
        n_act = int(real.single_action_space.n)  # type: ignore[attr-defined]
        if getattr(policy, "num_actions", n_act) != n_act:
            got = getattr(policy, "num_actions", None)
            raise ValueError(f"policy: {game} has {n_act} actions, the policy has {got}")
        games = _play(real, policy, episodes, seed, epsilon, writer, progress)
        ok = True
    finally:
        real.close()
        if writer is not None:
            writer.close(commit=ok)
    returns, lengths, truncated, counts = games
    return EvalResult.from_games(
        game,
        seed,
        returns,
        lengths,
        truncated,
        seconds=time.perf_counter() - start,
        action_counts=counts,
    )


def _play(
    env: RealAtariVectorEnv | PixelVectorEnv,
    policy: Policy,
    episodes: int,
    seed: int,
    epsilon: float,
    writer: _VideoWriter | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The game loop of :func:`evaluate`: returns (float64), lengths (int64) and truncation
    flags (bool), each ``(episodes,)`` in the order the games started, and how often each action
    was taken in the games that count (int64 ``(num_actions,)``)."""
    n, n_act = env.num_envs, int(env.single_action_space.n)  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    truncated = np.zeros(episodes, dtype=bool)
    action_counts = np.zeros(n_act, dtype=np.int64)
    game_of_env = np.arange(n)  # the game each env plays; -1 once its games no longer count
    started, finished = n, 0
    obs, _ = env.reset(seed=seed)
    policy.reset(np.ones(n, dtype=bool))
    if writer is not None:
        writer.add(env.envs[0].render())  # type: ignore[arg-type]
    with tqdm(total=episodes, unit="game", disable=not progress, desc="evaluate") as bar:
        while finished < episodes:
            actions = np.asarray(policy(obs))
            if actions.shape != (n,) or not np.issubdtype(actions.dtype, np.integer):
                raise ValueError(
                    f"policy: expected int actions of shape ({n},), got {actions.dtype} "
                    f"{actions.shape}"
                )
            if epsilon > 0.0:
                explore = rng.random(n) < epsilon
                actions = np.where(explore, rng.integers(0, n_act, size=n), actions)
            obs, rew, _, trunc, info = env.step(actions.astype(np.int64))
            live = game_of_env >= 0
            np.add.at(action_counts, actions[live], 1)
            returns[game_of_env[live]] += rew[live]
            lengths[game_of_env[live]] += 1
            over = info["game_over"]
            for i in np.flatnonzero(over & live):
                truncated[game_of_env[i]] = trunc[i]
                game_of_env[i] = started if started < episodes else -1
                started, finished = min(started + 1, episodes), finished + 1
                bar.update(1)
            if writer is not None and game_of_env[0] == 0:
                writer.add(env.envs[0].render())  # type: ignore[arg-type]
            policy.reset(over)
    return returns, lengths, truncated, action_counts


def baseline_margins(
    result: EvalResult, *, num_envs: int = 1, progress: bool = True, env: EnvSpec | None = None
) -> dict[str, dict[str, Any]]:
    """Play two baselines on the same games as ``result`` (its game, seed and number of games):
    the uniform random policy and :class:`ActionFrequencyPolicy` with the agent's own action
    shares, each seeded ``result.seed``. For each: its :meth:`EvalResult.to_dict`, the agent's
    mean minus the baseline's (``difference``), the standard error of that difference
    (``standard_error``, the two games' standard errors combined as independent) and their ratio
    (``z``; None when both standard errors are 0)."""
    if not result.action_counts:
        raise ValueError("result: has no action counts (an EvalResult from evaluate() has them)")
    baselines: dict[str, Policy] = {
        "random": RandomPolicy(len(result.action_counts), seed=result.seed),
        "action_frequency": ActionFrequencyPolicy(result.action_shares, seed=result.seed),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, policy in baselines.items():
        other = evaluate(
            policy,
            result.game,
            result.episodes,
            seed=result.seed,
            num_envs=num_envs,
            progress=progress,
            env=env,
        )
        difference = result.mean - other.mean
        se = math.hypot(result.standard_error, other.standard_error)
        out[name] = {
            "result": other.to_dict(),
            "difference": difference,
            "standard_error": se,
            "z": difference / se if se > 0 else None,
        }
    return out


def load_agent(
    directory: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    deterministic: bool | None = None,
    trust_pickle: bool = False,
) -> tuple[Policy, dict[str, Any]]:
    """Load the agent in ``directory`` as a :class:`Policy`, with what it says of itself.

    ``deterministic=None`` keeps agent.json's ``"deterministic"``, else each kind's default
    (actor-critic: sample, as DIAMOND; SB3: argmax, as ``evaluate_policy``). An SB3 agent is read
    from its safetensors policy; a bare ``model.zip`` (which SB3 unpickles: a crafted one runs
    code) only with ``trust_pickle=True``.

    Raises:
        FileNotFoundError: the directory, or a file agent.json names, is missing.
        ValueError: no agent this module knows is there, or agent.json is malformed.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"agent directory not found: {root}")
    meta = _read_agent_json(root / AGENT_FILE)
    kind = meta.get("kind", "actor_critic")
    if deterministic is None:
        deterministic = bool(meta.get("deterministic", kind == "sb3"))
    if kind == "sb3":
        if "weights" in meta:
            model = load_sb3_policy(root, meta, device)
        elif trust_pickle:
            model = _load_sb3_model(root, meta, device)
        else:
            zip_name = meta.get("model", SB3_MODEL_FILE)
            raise ValueError(
                f"{root}: an SB3 agent stored only as {zip_name}, which stable-baselines3 "
                "unpickles when loading: a crafted file runs arbitrary code on this machine. Pass "
                "--trust-pickle (trust_pickle=True) only if you trust where it came from, or save "
                "it without pickle with diamond_env.evaluation.agent_files.save_sb3_agent"
            )
        n_stack = meta.get("n_stack")
        policy: Policy = SB3Policy(model, n_stack=n_stack, deterministic=deterministic, seed=seed)
        return policy, {**meta, "observation_shape": list(model.observation_space.shape)}
    if kind != "actor_critic":
        raise ValueError(
            f"{root / AGENT_FILE}: kind: expected 'sb3' or 'actor_critic', got {kind!r}"
        )
    for where in (root, root / "actor_critic"):
        if (where / CONFIG_FILE).is_file():
            ac = ActorCritic.load(where, device=device)
            policy = ActorCriticPolicy(ac, deterministic=deterministic, seed=seed)
            info = {"kind": "actor_critic", "path": str(where), "num_actions": ac.num_actions}
            return policy, {**meta, **info, "config": dataclasses.asdict(ac.config)}
    found = sorted(p.name for p in root.iterdir())[:20]
    raise ValueError(
        f"{root}: expected an agent directory: {CONFIG_FILE} + actor_critic.safetensors "
        f"(ActorCritic.save), or {SB3_MODEL_FILE} with an {AGENT_FILE} such as "
        f'{{"kind": "sb3", "algo": "ppo", "n_stack": 4, "game": "Breakout"}}; found {found}'
    )


def _read_agent_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _load_sb3_model(root: Path, meta: dict[str, Any], device: str | torch.device) -> Any:
    """``<ALGO>.load`` from stable_baselines3 (or sb3_contrib when installed)."""
    algo = meta.get("algo")
    if not isinstance(algo, str):
        raise ValueError(f"{root / AGENT_FILE}: algo: expected a name such as 'ppo', got {algo!r}")
    path = confined(root, meta.get("model", SB3_MODEL_FILE), f"{root / AGENT_FILE}: model")
    if not path.is_file():
        raise FileNotFoundError(f"SB3 model not found: {path} (named by {root / AGENT_FILE})")
    known = sb3_algorithms()
    algos = sorted(known)
    if algo.lower() not in algos:
        raise ValueError(f"{root / AGENT_FILE}: algo: expected one of {algos}, got {algo!r}")
    return known[algo.lower()].load(str(path), device=device)


def load_collecting_agent(
    directory: str | os.PathLike[str],
    game: str,
    *,
    seed: int | None = None,
    trust_pickle: bool = False,
    env: EnvSpec | None = None,
) -> Policy:
    """The agent in ``directory`` as a policy that plays ``game`` (with ``env``: that
    Gymnasium env, ``game`` being its id) for ``diamond-env collect
    --agent`` (acting as it does in ``evaluate``: our actor-critic samples, SB3 takes the argmax).

    Raises:
        ValueError: the agent names another game, or its action count is not ``game``'s.
    """
    policy, meta = load_agent(directory, seed=seed, trust_pickle=trust_pickle)
    known = meta.get("game")
    if env is not None:
        play = env.id
        probe = env.make()
        wanted = int(probe.action_space.n)  # type: ignore[attr-defined]
        probe.close()
        same = known is None or str(known) == play
    else:
        play = canonical_game(game)
        wanted = len(action_meanings(play))
        same = known is None or canonical_game(str(known)) == play
    if not same:
        raise ValueError(f"--agent {directory}: trained on {known!r}, asked to collect {game!r}")
    have = policy.num_actions if isinstance(policy, SB3Policy) else meta.get("num_actions")
    if have != wanted:
        raise ValueError(
            f"--agent {directory}: {have} actions, but {play} has {wanted} (its minimal action set)"
        )
    return policy


def cmd_evaluate(
    agent_dir: str | os.PathLike[str],
    game: str | None,
    episodes: int,
    out: str | os.PathLike[str] | None,
    seed: int = 0,
    video: str | os.PathLike[str] | None = None,
    *,
    num_envs: int = 1,
    device: str = "cpu",
    progress: bool = True,
    deterministic: bool | None = None,
    trust_pickle: bool = False,
    baselines: bool = False,
) -> EvalResult:
    """What ``diamond-env evaluate`` does: load, play, print a summary, write ``out`` (JSON,
    atomically). ``game=None`` takes agent.json's game; when both are known they must agree.
    ``deterministic`` None keeps the agent's own choice, ``trust_pickle`` lets a bare SB3
    ``model.zip`` be unpickled (see :func:`load_agent`). ``baselines`` also plays
    :func:`baseline_margins` on the same games and prints the agent's margin over each (in the
    JSON under ``"baselines"``)."""
    policy, meta = load_agent(
        agent_dir, device=device, seed=seed, deterministic=deterministic, trust_pickle=trust_pickle
    )
    known: str | None = meta.get("game")
    name = game if game is not None else known
    if name is None:
        raise ValueError(f"game: {agent_dir} does not name its game; pass one (e.g. 'Breakout')")
    env = None
    if meta.get("env") is not None:  # an agent of a non-ALE Gymnasium env: that env, as recorded
        env = EnvSpec.from_dict(meta["env"], f"{agent_dir}/{AGENT_FILE}: env")
        play = env.id
        if game is not None and game != env.id:
            raise ValueError(f"game: {agent_dir} was trained on {env.id!r}, asked to play {game!r}")
    else:
        play = canonical_game(name)
        if known is not None and canonical_game(known) != play:
            raise ValueError(f"game: {agent_dir} was trained on {known!r}, asked to play {game!r}")
    result = evaluate(
        policy,
        play,
        episodes,
        seed=seed,
        num_envs=num_envs,
        video_path=video,
        progress=progress,
        env=env,
    )
    print(result.summary())
    try:
        ref: dict[str, float] | None = reference_scores(play)
    except ValueError:
        ref = None
    if ref is not None:
        print(
            f"reference: random {ref['random']:g}, human {ref['human']:g}, DIAMOND {ref['diamond']:g}"
        )
    margins = (
        baseline_margins(result, num_envs=num_envs, progress=progress, env=env)
        if baselines
        else None
    )
    for key, m in (margins or {}).items():
        z = "n/a" if m["z"] is None else f"{m['z']:+.1f}"
        print(
            f"baseline, {BASELINE_LABELS[key]}: {m['result']['mean']:.2f} ± "
            f"{m['result']['std']:.2f} on the same games; agent minus baseline "
            f"{m['difference']:+.2f} (standard error {m['standard_error']:.2f}, {z} standard "
            "errors)"
        )
    if out is not None:
        payload = {
            "agent": str(agent_dir),
            "agent_meta": meta,
            "reference": ref,
            **result.to_dict(),
        }
        if margins is not None:
            payload["baselines"] = margins
        path = Path(out)
        atomic_write_json(path, payload)
        print(f"wrote {path}")
    if video is not None:
        print(f"wrote {video}")
    return result
