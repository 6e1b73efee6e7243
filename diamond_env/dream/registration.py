"""Registration of ``DiamondDream-<Game>-v0`` with Gymnasium.

Gymnasium 1.x loads no plugins, so ``import diamond_env`` calls :func:`register_envs`. Entry
points are strings (nothing heavy is imported until an env is made) and the registered kwargs
hold only the game name: they are deep-copied on every ``make``, so models never go there. The
class names avoid the substring ``AtariEnv`` (rl-zoo3 would otherwise wrap the dream env in
``AtariWrapper``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import gymnasium as gym

ENTRY_POINT = "diamond_env.dream.gym_env:DreamEnv"
VECTOR_ENTRY_POINT = "diamond_env.dream.gym_env:DreamVectorEnv"
_GAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def env_id(game: str) -> str:
    """``"Breakout"`` -> ``"DiamondDream-Breakout-v0"``."""
    if not isinstance(game, str) or not _GAME_RE.match(game):
        raise ValueError(f"game: expected a CamelCase name such as 'Breakout', got {game!r}")
    return f"DiamondDream-{game}-v0"


def register_envs(games: Iterable[str]) -> list[str]:
    """Register ``DiamondDream-<Game>-v0`` for each game (idempotent); returns the ids."""
    ids = []
    for game in games:
        name = env_id(game)
        spec = gym.registry.get(name)
        same = (
            spec is not None
            and spec.entry_point == ENTRY_POINT
            and spec.vector_entry_point == VECTOR_ENTRY_POINT
            and spec.kwargs == {"game": game}
        )
        if not same:
            gym.register(
                id=name,
                entry_point=ENTRY_POINT,
                vector_entry_point=VECTOR_ENTRY_POINT,
                kwargs={"game": game},
                nondeterministic=False,
            )
        ids.append(name)
    return ids


GENERIC_ID = "Dream-v0"
"""The dream of whatever a checkpoint models: ``gym.make("diamond_env:Dream-v0", checkpoint=...)``
(an ALE game or a Gymnasium env recorded with ``collect --env-id``)."""


def register_generic() -> str:
    """Register :data:`GENERIC_ID` (idempotent)."""
    if GENERIC_ID not in gym.registry:
        gym.register(
            id=GENERIC_ID,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs={"game": None},
            nondeterministic=False,
        )
    return GENERIC_ID
