"""stable-baselines3 face of the dream simulator.

SB3 cannot consume a Gymnasium ``VectorEnv``, so :class:`DreamSB3VecEnv` implements SB3's own
``VecEnv`` over one :class:`~diamond_env.dream.simulator.DreamSimulator` (one model for all N
envs). Like ``DummyVecEnv`` it autoresets in the same step, puts the frame an env ended on in
``infos[i]["terminal_observation"]`` and sets ``infos[i]["TimeLimit.truncated"]`` every step.

Observations are **channel-first** uint8 ``(3, 64, 64)``: SB3 uses channel-first images as they
are, while channel-last ones get a ``VecTransposeImage`` (a numpy transpose on the CPU every step).
They hold the same pixels as the Gymnasium env's ``(64, 64, 3)``:
``sb3_obs == gym_obs.transpose(2, 0, 1)``.

:func:`make_sb3_env` is the efficient path (one simulator, wrapped in ``VecMonitor``).
``stable_baselines3.common.env_util.make_vec_env("DiamondDream-<Game>-v0", n_envs=N)`` also works,
but by SB3's design it builds N single ``DreamEnv`` (N simulators, and N model loads unless
``env_kwargs`` carries ``world_model=``), with channel-last frames.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from diamond_env.dream.gym_env import check_render_mode, frames_to_numpy, vector_actions
from diamond_env.dream.registration import VECTOR_ENTRY_POINT
from diamond_env.dream.simulator import DreamSimulator, make_simulator


class DreamSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over one dream simulator; observations uint8 (3, 64, 64).

    ``seed(s)`` and ``set_options(...)`` apply at the next ``reset()``; the only option is
    ``{"context_index": k}`` (start that env from context ``k`` of the checkpoint's bank).
    Attributes and methods are shared by all N envs (``get_attr`` returns N copies).
    """

    def __init__(self, simulator: DreamSimulator, render_mode: str | None = None) -> None:
        if not isinstance(simulator, DreamSimulator):
            raise TypeError(f"simulator: expected a DreamSimulator, got {type(simulator).__name__}")
        if not simulator.autoreset:
            raise ValueError("simulator: expected autoreset=True (SB3 envs reset in the same step)")
        self.simulator = simulator
        self.render_mode = check_render_mode(render_mode)
        channels, height, width = simulator.frame_shape
        obs_space = spaces.Box(0, 255, (channels, height, width), dtype=np.uint8)
        super().__init__(simulator.num_envs, obs_space, spaces.Discrete(simulator.num_actions))
        self._actions: torch.Tensor | None = None

    def get_action_meanings(self) -> list[str]:
        return self.simulator.action_meanings

    def reset(self) -> np.ndarray:
        """Reset every env with the stored seeds/options; obs uint8 (N, 3, 64, 64)."""
        context_index: list[int | None] = []
        for i, options in enumerate(self._options):
            unknown = sorted(set(options) - {"context_index"})
            if unknown:
                raise ValueError(
                    f"options[{i}]: unknown keys {unknown}; expected a subset of ['context_index']"
                )
            context_index.append(options.get("context_index"))
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        obs = self.simulator.reset(seed=seeds, context_index=context_index)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._actions = None
        return frames_to_numpy(obs, channels_last=False)

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions (int array (N,) or (N, 1)); the simulator checks them at step_wait."""
        act = vector_actions(actions)
        self._actions = act[:, 0] if act.ndim == 2 and act.shape[1] == 1 else act

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async(actions)")
        actions, self._actions = self._actions, None
        out = self.simulator.step(actions)
        terminated = out.terminated.cpu().numpy()
        truncated = out.truncated.cpu().numpy()
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [
            {"TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
            for i in range(self.num_envs)
        ]
        rows = np.flatnonzero(dones)
        if rows.size:
            index = torch.from_numpy(rows).to(out.final_obs.device)
            finals = frames_to_numpy(out.final_obs[index], channels_last=False)
            for j, i in enumerate(rows):
                infos[i]["terminal_observation"] = finals[j]
                self.reset_infos[i] = {}
        obs = frames_to_numpy(out.obs, channels_last=False)
        return obs, out.reward.cpu().numpy().astype(np.float32), dones, infos

    def close(self) -> None:
        self._actions = None

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The N current frames, uint8 (64, 64, 3) (channel-last, for display)."""
        return list(frames_to_numpy(self.simulator.obs))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(
                f"set_attr({attr_name!r}): the {self.num_envs} envs share one simulator; "
                "expected indices=None (all envs)"
            )
        setattr(self, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call the shared method once; its result is repeated for each index."""
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_sb3_env(env_id: str, num_envs: int = 1, **kwargs: Any) -> VecMonitor:
    """A ``VecMonitor``-wrapped :class:`DreamSB3VecEnv` for a registered dream env id.

    ``env_id`` may carry a module prefix (``"diamond_env:DiamondDream-Breakout-v0"``). ``kwargs``
    are those of :class:`~diamond_env.dream.gym_env.DreamVectorEnv` (``checkpoint``, ``device``,
    ``horizon``, ``world_model``, ``render_mode``, ...). One world model serves all envs.
    """
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        importlib.import_module(module)
    spec = gym.spec(env_id)
    if spec.vector_entry_point != VECTOR_ENTRY_POINT:
        raise ValueError(
            f"env_id: expected a DiamondDream-<Game>-v0 id or Dream-v0, got {env_id!r} "
            f"(vector entry point {spec.vector_entry_point!r})"
        )
    merged = {**spec.kwargs, **kwargs}
    render_mode = merged.pop("render_mode", None)
    game = merged.pop("game")
    simulator = make_simulator(game, num_envs, **merged)
    return VecMonitor(DreamSB3VecEnv(simulator, render_mode=render_mode))
