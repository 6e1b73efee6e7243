"""Where runs and checkpoints live by default.

``train_wm.py --game G`` writes to ``default_run_dir(G)`` unless given ``--run-dir``: the root is
``$DIAMOND_ENV_HOME`` when set, else ``runs`` under the working directory. Without a
``checkpoint=``, the dream env loads the first of (:func:`checkpoint_candidates`)
``$DIAMOND_ENV_HOME/<Game>/world_model``, ``runs/<Game>/world_model`` and the world model shipped
inside the package for that game (:func:`pretrained`), and logs which one once.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from diamond_env.run.safe_io import InputError, read_json

logger = logging.getLogger("diamond_env")

PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"
"""Models shipped inside the package: ``<Game>/world_model`` and ``<Game>/agent``."""

_announced: set[Path] = set()


def runs_root() -> Path:
    """``$DIAMOND_ENV_HOME`` or ``./runs``."""
    return Path(os.environ.get("DIAMOND_ENV_HOME", "runs"))


GAME_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def game_dir_name(game: str) -> str:
    """``game`` when it can name a folder (letters, digits, ``_`` and ``-``; no path separator,
    no ``..``); ``InputError`` otherwise, before any path is made from it."""
    if not isinstance(game, str) or GAME_NAME.match(game) is None:
        raise InputError(f"game: {game!r} is not a game name (e.g. 'Breakout')")
    return game


def default_run_dir(game: str) -> Path:
    """The run directory ``train_wm.py --game <game>`` uses when no ``--run-dir`` is given."""
    return runs_root() / game_dir_name(game)


def default_checkpoint(game: str) -> Path:
    """The world-model checkpoint directory inside :func:`default_run_dir`."""
    return default_run_dir(game) / "world_model"


@dataclass(frozen=True)
class Pretrained:
    """A world model (and, when there is one, an agent) shipped inside the package."""

    game: str
    world_model: Path
    agent: Path | None
    card: dict[str, object]
    """What ``card.json`` beside them records: training command, data, steps, minutes, machine,
    held-out fidelity and real scores."""


def pretrained() -> dict[str, Pretrained]:
    """The shipped models by game name (``{}`` when none ships)."""
    found = {}
    for wm in sorted(PRETRAINED_ROOT.glob("*/world_model/config.json")):
        root = wm.parent.parent
        card = root / "card.json"
        agent = root / "agent"
        found[root.name] = Pretrained(
            game=root.name,
            world_model=wm.parent,
            agent=agent if (agent / "agent.json").exists() else None,
            card=read_json(card) if card.exists() else {},
        )
    return found


def checkpoint_candidates(game: str) -> list[Path]:
    """Where a checkpoint of ``game`` is looked for when none is given, in order."""
    game_dir_name(game)
    places = []
    if "DIAMOND_ENV_HOME" in os.environ:
        places.append(Path(os.environ["DIAMOND_ENV_HOME"]) / game / "world_model")
    places.append(Path("runs") / game / "world_model")
    shipped = PRETRAINED_ROOT / game / "world_model"
    if (shipped / "config.json").exists():
        places.append(shipped)
    return places


def resolve_checkpoint(game: str, checkpoint: str | os.PathLike[str] | None) -> Path:
    """The checkpoint directory to load: ``checkpoint`` if given, else the first of
    :func:`checkpoint_candidates` that holds one (logged once per path).

    Raises:
        FileNotFoundError: nothing is there; the message says which command creates one.
    """
    if checkpoint is not None:
        path = Path(checkpoint)
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"no world-model checkpoint for {game} at {path}. Create one with: "
                f"diamond-env train-wm --game {game} --run-dir {path.parent}"
            )
        return path
    places = checkpoint_candidates(game)
    for path in places:
        if (path / "config.json").exists():
            if path not in _announced:
                _announced.add(path)
                if path.resolve().is_relative_to(PRETRAINED_ROOT):
                    logger.info("DiamondDream-%s: world model %s", game, path)
                else:  # a folder of the user's, found by name: say so where it is seen
                    logger.warning(
                        "DiamondDream-%s: world model %s (found before the shipped one; pass "
                        "checkpoint=... to choose)",
                        game,
                        path,
                    )
            return path
    tried = ", ".join(str(p) for p in places)
    raise FileNotFoundError(
        f"no world-model checkpoint for {game} (looked in {tried}; no model of {game} ships "
        f"with the package; pass checkpoint=...). Create one with: "
        f"diamond-env train-wm --game {game} --run-dir {default_run_dir(game)}"
    )
