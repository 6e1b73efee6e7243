"""diamond_env: DIAMOND diffusion world models of Atari games, served as Gymnasium environments.

Importing the package registers ``DiamondDream-<Game>-v0`` for the 26 Atari 100k games
(``gym.make`` for one env, ``gym.make_vec`` for a batch over one world model). Heavy names
(``WorldModel``, ``DreamSimulator``, ``make_sb3_env``, ...) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from diamond_env._version import __version__  # noqa: E402
from diamond_env.atari import GAMES, make_atari_env  # noqa: E402
from diamond_env.dream.registration import env_id, register_envs, register_generic  # noqa: E402

register_envs(GAMES)
register_generic()

_LAZY = {
    "WorldModel": "diamond_env.world_model.model",
    "Config": "diamond_env.config",
    "get_preset": "diamond_env.config",
    "DreamSimulator": "diamond_env.dream.simulator",
    "make_simulator": "diamond_env.dream.simulator",
    "DreamSettings": "diamond_env.dream.settings",
    "DreamEnv": "diamond_env.dream.gym_env",
    "DreamVectorEnv": "diamond_env.dream.gym_env",
    "DreamSB3VecEnv": "diamond_env.dream.sb3",
    "make_sb3_env": "diamond_env.dream.sb3",
    "import_diamond": "diamond_env.training.import_diamond",
    "pretrained": "diamond_env.run.paths",
    "tune_allocator": "diamond_env.devices",
}

__all__ = ["GAMES", "__version__", "env_id", "make_atari_env", "register_envs", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diamond_env' has no attribute {name!r}")
