"""Gymnasium faces of the dream simulator: ``DreamVectorEnv`` (``gym.make_vec``) and ``DreamEnv``
(``gym.make``, one env).

Both hold exactly one :class:`~diamond_env.dream.simulator.DreamSimulator` (so one world model,
whatever ``num_envs``) and speak numpy at the boundary: observations uint8 ``(64, 64, 3)`` per
env, like the real ALE env; rewards float32; actions integers in ``[0, n)``.

The vector env autoresets in the same step (``AutoresetMode.SAME_STEP``): when env ``i`` ends,
``obs[i]`` is already the first frame of its next episode, the reward and flags belong to the
finished step, and ``infos["final_obs"][i]`` (object array, mask ``infos["_final_obs"]``) holds the
frame it ended on, with ``infos["final_info"]`` / ``infos["_final_info"]`` as in
:class:`gymnasium.vector.SyncVectorEnv`. Termination takes precedence over truncation (at most
one flag is set).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from diamond_env.dream.settings import DreamSettings
from diamond_env.dream.simulator import DreamSimulator, SeedArg, make_simulator
from diamond_env.dream.window import HumanWindow
from diamond_env.frames import to_uint8
from diamond_env.world_model.model import WorldModel

RENDER_MODES = ["rgb_array", "human"]
RENDER_FPS = 15
VECTOR_OPTIONS = ("reset_mask", "context_index")


def frames_to_numpy(frames: torch.Tensor, channels_last: bool = True) -> np.ndarray:
    """Float frames ``(..., C, H, W)`` in [-1, 1] -> a fresh uint8 numpy array, ``(..., H, W, C)``
    (or ``(..., C, H, W)`` with ``channels_last=False``). Exact for quantised frames."""
    u8 = to_uint8(frames)
    if not channels_last:
        u8 = u8.movedim(-1, -3)
    return u8.contiguous().cpu().numpy()


def _window_for(render_mode: str | None, game: str) -> HumanWindow | None:
    return HumanWindow(f"diamond-env dream: {game}", RENDER_FPS) if render_mode == "human" else None


def check_render_mode(render_mode: str | None) -> str | None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(
            f"render_mode: expected None or one of {RENDER_MODES}, got {render_mode!r}"
        )
    return render_mode


def single_spaces(sim: DreamSimulator) -> tuple[spaces.Box, spaces.Discrete]:
    """Per-env observation space ``Box(0, 255, (H, W, C), uint8)`` and ``Discrete(n)``."""
    channels, height, width = sim.frame_shape
    obs_space = spaces.Box(0, 255, (height, width, channels), dtype=np.uint8)
    return obs_space, spaces.Discrete(sim.num_actions)


def vector_actions(actions: Any) -> torch.Tensor:
    """A batch of actions (numpy/list/torch) as an int64 tensor; shape and range are checked by
    the simulator. Non-integer input raises ``TypeError``."""
    if isinstance(actions, torch.Tensor):
        return actions
    array = np.asarray(actions)
    if array.dtype.kind not in "iu":
        raise TypeError(f"actions: expected an integer array, got dtype {array.dtype}")
    return torch.from_numpy(array.astype(np.int64, copy=True))


_BUTTON_KEYS = {"UP": "w", "DOWN": "s", "LEFT": "a", "RIGHT": "d", "FIRE": " "}


def keys_to_action(meanings: list[str]) -> dict[tuple[str, ...], int]:
    """ALE's keyboard mapping for ``gymnasium.utils.play``: w/a/s/d for the directions, space for
    FIRE, combinations for combined actions (``UPRIGHTFIRE`` = w + d + space), e for NOOP."""
    mapping: dict[tuple[str, ...], int] = {}
    for index, name in enumerate(meanings):
        rest, keys = name, []
        for button in ("UP", "DOWN", "LEFT", "RIGHT", "FIRE"):
            if button in rest:
                keys.append(_BUTTON_KEYS[button])
                rest = rest.replace(button, "", 1)
        if rest == "NOOP":
            mapping[("e",)] = index
        elif rest == "":
            mapping[tuple(keys)] = index
    return mapping


class _OneSimulator:
    """What both Gymnasium faces share: one simulator, its world model, the game's actions and
    keys, an optional window, and closing."""

    simulator: DreamSimulator
    render_mode: str | None
    _window: HumanWindow | None = None

    def _open(
        self,
        game: str | None,
        num_envs: int,
        checkpoint: str | os.PathLike[str] | None,
        world_model: WorldModel | None,
        render_mode: str | None,
        settings: DreamSettings,
        *,
        autoreset: bool,
    ) -> None:
        self.render_mode = check_render_mode(render_mode)
        self.simulator = make_simulator(
            game,
            num_envs,
            checkpoint=checkpoint,
            world_model=world_model,
            settings=settings,
            autoreset=autoreset,
        )
        self._window = _window_for(self.render_mode, self.simulator.world_model.game)

    @property
    def world_model(self) -> WorldModel:
        return self.simulator.world_model

    def get_action_meanings(self) -> list[str]:
        """The game's minimal action set, like ALE's ``get_action_meanings()``."""
        return self.simulator.action_meanings

    def get_keys_to_action(self) -> dict[tuple[str, ...], int]:
        """Keyboard mapping for ``gymnasium.utils.play``, as ALE's (see :func:`keys_to_action`)."""
        return keys_to_action(self.simulator.action_meanings)

    def _close_simulator(self) -> None:
        if self._window is not None:
            self._window.close()
        self.simulator.close()

    def _show(self) -> None:
        if self._window is not None:
            self._window.show(frames_to_numpy(self.simulator.obs))


class DreamVectorEnv(_OneSimulator, VectorEnv):  # type: ignore[type-arg]
    """``num_envs`` dream games of ``game`` over one world model (``gym.make_vec``'s entry point).

    Args:
        num_envs: number of parallel envs.
        game: CamelCase game name (``"Breakout"``); the checkpoint must be of this game. None
            (``Dream-v0``): the game of ``checkpoint`` (or ``world_model``), whatever it is: an
            ALE game or a Gymnasium env recorded with ``collect --env-id``.
        checkpoint: checkpoint directory; None = :func:`diamond_env.run.paths.resolve_checkpoint`'s lookup.
        device: torch device of the simulator; None = the model's (CPU when loading).
        horizon: truncation after this many steps (DIAMOND trains its agent with 15).
        num_denoising_steps: denoising steps per frame; None = the checkpoint's.
        sampler: "euler" or "heun"; None = the checkpoint's.
        reward_mode: "sample" (rewards in {-1, 0, 1}, sampled ends) or "mean".
        render_mode: None, "rgb_array" (``render()`` returns the N current frames) or "human"
            (the frames tiled in a pygame window after every reset and step).
        max_episode_steps: optional extra cap; truncation at ``min(horizon, max_episode_steps)``.
        world_model: an already-loaded model to use instead of loading ``checkpoint``.
        fastpath: speed options of :mod:`diamond_env.world_model.fastpath`, e.g. ``["channels_last", "bf16"]``;
            ``"auto"`` (default): those measured to pay on the device for a model loaded from
            ``checkpoint``, none for a ``world_model`` passed in; ``"plain"``: none (see
            docs/benchmarks.md for what each buys on which device).
    """

    metadata: dict[str, Any] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
    }
    _window: HumanWindow | None = None

    def __init__(
        self,
        num_envs: int,
        game: str | None,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        horizon: int = 15,
        num_denoising_steps: int | None = None,
        sampler: Literal["euler", "heun"] | None = None,
        reward_mode: Literal["sample", "mean"] = "sample",
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        world_model: WorldModel | None = None,
        fastpath: str | Sequence[str] | None = "auto",
    ) -> None:
        settings = DreamSettings(
            horizon=horizon,
            max_episode_steps=max_episode_steps,
            num_denoising_steps=num_denoising_steps,
            sampler=sampler,
            reward_mode=reward_mode,
            fastpath=fastpath,
            device=device,
        )
        self._open(game, num_envs, checkpoint, world_model, render_mode, settings, autoreset=True)
        self.metadata = {
            "autoreset_mode": AutoresetMode.SAME_STEP,
            "render_modes": list(RENDER_MODES),
            "render_fps": RENDER_FPS,
        }
        self.autoreset_mode = AutoresetMode.SAME_STEP  # as Gymnasium's own vector envs expose it
        self.num_envs = self.simulator.num_envs
        self.single_observation_space, self.single_action_space = single_spaces(self.simulator)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def close_extras(self, **kwargs: Any) -> None:
        """Free the simulator's buffers (and close the window); a later ``reset``/``step`` raises
        ``RuntimeError``."""
        self._close_simulator()

    def reset(
        self,
        *,
        seed: SeedArg = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all envs, or those in ``options["reset_mask"]`` (bool ndarray (N,)).

        ``seed`` int: env i is seeded with ``seed + i`` (a list gives one seed per env).
        ``options["context_index"]``: per env, a context-bank index (or None) to start from.
        Returns obs uint8 (N, 64, 64, 3) and an empty info dict.
        """
        super().reset(seed=seed if isinstance(seed, int) else None)
        options = dict(options or {})
        unknown = sorted(set(options) - set(VECTOR_OPTIONS))
        if unknown:
            raise ValueError(
                f"options: unknown keys {unknown}; expected a subset of {list(VECTOR_OPTIONS)}"
            )
        mask = options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_:
                raise TypeError(
                    f"options['reset_mask']: expected a bool ndarray, got dtype {mask.dtype}"
                )
            mask = torch.from_numpy(mask.copy())
        obs = self.simulator.reset(seed=seed, mask=mask, context_index=options.get("context_index"))
        self._show()
        return frames_to_numpy(obs), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One action per env (int array (N,)); same-step autoreset of ended envs."""
        out = self.simulator.step(vector_actions(actions))
        terminated = out.terminated.cpu().numpy()
        truncated = out.truncated.cpu().numpy()
        done = terminated | truncated
        infos: dict[str, Any] = {}
        if done.any():
            rows = np.flatnonzero(done)
            finals = frames_to_numpy(out.final_obs[torch.from_numpy(rows).to(out.final_obs.device)])
            final_obs = np.full(self.num_envs, None, dtype=object)
            for j, i in enumerate(rows):
                final_obs[i] = finals[j]
            infos = {
                "final_obs": final_obs,
                "_final_obs": done.copy(),
                "final_info": {},
                "_final_info": done.copy(),
            }
        self._show()
        return frames_to_numpy(out.obs), out.reward.cpu().numpy(), terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The N current frames, uint8 (64, 64, 3) each, in ``rgb_array`` mode; in ``human``
        mode they are shown tiled in a window (as after every reset and step) and None is
        returned."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'")
            return None
        if self._window is not None:
            self._show()
            return None
        return tuple(frames_to_numpy(self.simulator.obs))


class DreamEnv(_OneSimulator, gym.Env):  # type: ignore[type-arg]
    """One dream game (``gym.make``'s entry point): the same simulator with ``num_envs = 1``.

    Same arguments as :class:`DreamVectorEnv` without ``num_envs``. Observations uint8
    (64, 64, 3); ``step`` returns a float reward and Python bools. No autoreset: after an end,
    call ``reset()`` (stepping on continues the dream from the frame it ended on).
    ``reset(options={"context_index": k})`` starts from context ``k`` of the checkpoint's bank.
    """

    metadata: dict[str, Any] = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS}
    _window: HumanWindow | None = None

    def __init__(
        self,
        game: str | None,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        horizon: int = 15,
        num_denoising_steps: int | None = None,
        sampler: Literal["euler", "heun"] | None = None,
        reward_mode: Literal["sample", "mean"] = "sample",
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        world_model: WorldModel | None = None,
        fastpath: str | Sequence[str] | None = "auto",
    ) -> None:
        settings = DreamSettings(
            horizon=horizon,
            max_episode_steps=max_episode_steps,
            num_denoising_steps=num_denoising_steps,
            sampler=sampler,
            reward_mode=reward_mode,
            fastpath=fastpath,
            device=device,
        )
        # a single env resets when its caller says so
        self._open(game, 1, checkpoint, world_model, render_mode, settings, autoreset=False)
        self.metadata = {"render_modes": list(RENDER_MODES), "render_fps": RENDER_FPS}
        self.observation_space, self.action_space = single_spaces(self.simulator)

    def close(self) -> None:
        """Free the simulator's buffers (and close the window); a later ``reset``/``step`` raises
        ``RuntimeError``."""
        self._close_simulator()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start from a real context (drawn with the env's generator, seeded by ``seed``)."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"context_index"})
        if unknown:
            raise ValueError(
                f"options: unknown keys {unknown}; expected a subset of ['context_index']"
            )
        obs = self.simulator.reset(seed=seed, context_index=[options.get("context_index")])
        self._show()
        return frames_to_numpy(obs)[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """``action`` an int in [0, n). Returns (obs, reward, terminated, truncated, {})."""
        n = self.simulator.num_actions
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action[()]
        if isinstance(action, bool | np.bool_) or not isinstance(action, int | np.integer):
            raise TypeError(f"action: expected an int in [0, {n}), got {type(action).__name__}")
        if not 0 <= int(action) < n:
            raise ValueError(f"action: expected an int in [0, {n}), got {int(action)}")
        out = self.simulator.step(torch.tensor([int(action)], dtype=torch.int64))
        self._show()  # (without autoreset the simulator's frame is the one stepped to)
        obs = frames_to_numpy(out.final_obs)[0]
        return obs, float(out.reward[0]), bool(out.terminated[0]), bool(out.truncated[0]), {}

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The current frame, uint8 (64, 64, 3), in ``rgb_array`` mode; in ``human`` mode it is
        shown in a window (as after every reset and step) and None is returned."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'")
            return None
        if self._window is not None:
            self._show()
            return None
        return frames_to_numpy(self.simulator.obs)[0]
