"""Real environments other than the ALE: any registered Gymnasium env with image observations (or
seen through its rendered frames) and a ``Discrete`` action space, with the interface of
:class:`~diamond_env.atari.RealAtariVectorEnv` so that collection and evaluation treat it alike.

What identifies such an env travels with the data and the models as a small JSON object,
:class:`EnvSpec` (``{"id": ..., "kwargs": {...}, "render_obs": bool}``): a dataset's settings,
a world model's ``config.json`` and an agent's ``agent.json`` hold it, so ``evaluate`` rebuilds
the env the agent's world model was learnt from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from diamond_env.config import IMG_SIZE
from diamond_env.run.safe_io import InputError


@dataclass(frozen=True)
class EnvSpec:
    """A Gymnasium env as data: its registered id, the kwargs of ``gym.make`` and whether its
    observations are its rendered frames (``render_mode="rgb_array"``)."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    render_obs: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kwargs": dict(self.kwargs), "render_obs": self.render_obs}

    @classmethod
    def from_dict(cls, data: Any, where: str = "env") -> EnvSpec:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise InputError(
                f"{where}: expected {{'id': str, 'kwargs': {{...}}, 'render_obs': bool}}"
            )
        kwargs = data.get("kwargs", {})
        render_obs = data.get("render_obs", False)
        if not isinstance(kwargs, dict) or not isinstance(render_obs, bool):
            raise InputError(f"{where}: kwargs must be an object and render_obs a bool")
        return cls(data["id"], kwargs, render_obs)

    def make(self) -> gym.Env:  # type: ignore[type-arg]
        """One env, checked: image observations and ``Discrete`` actions."""
        if self.id not in gym.registry:
            raise InputError(f"env: {self.id!r} is not a registered Gymnasium env id")
        kwargs = dict(self.kwargs)
        if self.render_obs:
            kwargs["render_mode"] = "rgb_array"
        try:
            env = gym.make(self.id, **kwargs)
        except (TypeError, ValueError, gym.error.Error) as err:
            raise InputError(f"env: gym.make({self.id!r}, **{kwargs}) failed ({err})") from None
        if self.render_obs:
            env = gym.wrappers.AddRenderObservation(env, render_only=True)
        space = env.observation_space
        if not (
            isinstance(space, gym.spaces.Box)
            and space.dtype == np.uint8
            and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[2] in (1, 3)))
        ):
            env.close()
            raise InputError(
                f"env {self.id}: observations are {space}, expected uint8 images (H, W), (H, W, 1) "
                "or (H, W, 3); for an env that only renders pixels, use render_obs (--render-obs)"
            )
        if not isinstance(env.action_space, gym.spaces.Discrete):
            env.close()
            raise InputError(f"env {self.id}: actions are {env.action_space}, expected Discrete")
        return env


def parse_env_kwargs(text: str | None) -> dict[str, Any]:
    """``--env-kwargs`` JSON -> a dict (``InputError`` for anything else)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise InputError(f"--env-kwargs: not JSON ({err})") from None
    if not isinstance(value, dict):
        raise InputError(f"--env-kwargs: expected a JSON object, got {text!r}")
    return value


def to_model_frame(obs: np.ndarray) -> np.ndarray:
    """An env's image ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` -> uint8 ``(64, 64, 3)`` by
    area interpolation (the preprocessing of the Atari collection)."""
    if obs.ndim == 3 and obs.shape[2] == 1:
        obs = obs[..., 0]
    if obs.shape[:2] != (IMG_SIZE, IMG_SIZE):
        obs = cv2.resize(obs, (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_AREA)
    if obs.ndim == 2:
        obs = np.repeat(obs[..., None], 3, axis=-1)
    return np.ascontiguousarray(obs, dtype=np.uint8)


class PixelVectorEnv(gym.vector.VectorEnv):  # type: ignore[type-arg]
    """N copies of the env of ``spec``, frames 64 x 64 RGB, same-step autoreset: the interface of
    :class:`~diamond_env.atari.RealAtariVectorEnv` (``info`` has ``life_loss``, always False,
    ``game_over`` and ``final_obs``). ``game`` is the env id."""

    def __init__(self, spec: EnvSpec, num_envs: int = 1, *, train: bool = True) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs: expected an int >= 1, got {num_envs!r}")
        self.spec_data = spec
        self.game = spec.id
        self.train = train
        self.num_envs = num_envs
        self.envs = [spec.make() for _ in range(num_envs)]
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
        self.single_observation_space = gym.spaces.Box(0, 255, (IMG_SIZE, IMG_SIZE, 3), np.uint8)
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._obs = np.zeros((num_envs, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)

    def get_action_meanings(self) -> list[str]:
        """``action 0`` ... (a generic env names no actions; ALE-backed ones do)."""
        unwrapped = self.envs[0].unwrapped
        if hasattr(unwrapped, "get_action_meanings"):
            return list(unwrapped.get_action_meanings())
        return [f"action {i}" for i in range(int(self.single_action_space.n))]  # type: ignore[attr-defined]

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; an int seed gives env i the seed ``seed + i``."""
        if isinstance(seed, int):
            seeds: list[int | None] = [seed + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = [None] * self.num_envs
        else:
            seeds = list(seed)
        if seed is not None and seeds[0] is not None:
            self.action_space.seed(seeds[0])
        for i, env in enumerate(self.envs):
            obs, _ = env.reset(seed=seeds[i])
            self._obs[i] = to_model_frame(obs)
        return self._obs.copy(), {"lives": np.zeros(self.num_envs, dtype=np.int64)}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        arr = np.asarray(actions)
        n_act = int(self.single_action_space.n)  # type: ignore[attr-defined]
        if arr.shape != (self.num_envs,) or arr.dtype.kind not in "iu":
            raise ValueError(
                f"actions: expected integers of shape ({self.num_envs},), got {arr.shape}"
            )
        if arr.min() < 0 or arr.max() >= n_act:
            raise ValueError(f"actions: expected values in [0, {n_act - 1}], got {arr.tolist()}")
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float32)
        terms, truncs = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        final_obs = np.full(n, None, dtype=object)
        for i, env in enumerate(self.envs):
            obs, rew, term, trunc, _ = env.step(int(arr[i]))
            rewards[i] = float(rew)
            terms[i], truncs[i] = bool(term), bool(trunc) and not term
            frame = to_model_frame(obs)
            if terms[i] or truncs[i]:
                final_obs[i] = frame
                frame = to_model_frame(env.reset()[0])
            self._obs[i] = frame
        done = terms | truncs
        infos: dict[str, Any] = {
            "lives": np.zeros(n, dtype=np.int64),
            "life_loss": np.zeros(n, dtype=bool),
            "game_over": done.copy(),
        }
        if done.any():
            infos["final_obs"] = final_obs
            infos["_final_obs"] = done
        return self._obs.copy(), rewards, terms, truncs, infos

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def make_real_env(
    game: str, num_envs: int = 1, *, train: bool = True, env: EnvSpec | None = None
) -> Any:
    """The real env of ``game``: the ALE game (docs/method.md §1 settings), or, with ``env``, that
    Gymnasium env (its id is the game's name)."""
    if env is not None:
        return PixelVectorEnv(env, num_envs, train=train)
    from diamond_env.atari import make_atari_env

    return make_atari_env(game, num_envs, train=train)


def check_game(game: str) -> str:
    """``game`` as the package names it: an ALE game's canonical name, or a registered Gymnasium
    env id (a dataset collected with ``--env-id`` is of that game); ``InputError`` otherwise."""
    from diamond_env.atari import canonical_game
    from diamond_env.run.paths import game_dir_name

    try:
        return canonical_game(game)
    except ValueError as err:
        if isinstance(game, str) and game in gym.registry and not game.startswith("ALE/"):
            return game_dir_name(game)
        raise InputError(f"{err}; or a registered Gymnasium env id (collect --env-id)") from None


def is_ale_game(game: str) -> bool:
    """Whether ``game`` names an ALE game (else a Gymnasium env id, see :func:`check_game`)."""
    from diamond_env.atari import canonical_game

    try:
        canonical_game(game)
    except ValueError:
        return False
    return True
