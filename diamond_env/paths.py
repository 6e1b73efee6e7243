"""Where runs and checkpoints live by default.

``train_wm.py --game G`` writes to ``default_run_dir(G)`` unless given ``--run-dir``; the dream env
looks for ``default_checkpoint(G)`` when no ``checkpoint=`` is passed. The root is
``$DIAMOND_ENV_HOME`` when set, else ``runs`` under the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def runs_root() -> Path:
    """``$DIAMOND_ENV_HOME`` or ``./runs``."""
    return Path(os.environ.get("DIAMOND_ENV_HOME", "runs"))


def default_run_dir(game: str) -> Path:
    """The run directory ``train_wm.py --game <game>`` uses when no ``--run-dir`` is given."""
    return runs_root() / game


def default_checkpoint(game: str) -> Path:
    """The world-model checkpoint directory inside :func:`default_run_dir`."""
    return default_run_dir(game) / "world_model"


def resolve_checkpoint(game: str, checkpoint: str | os.PathLike[str] | None) -> Path:
    """The checkpoint directory to load: ``checkpoint`` if given, else the default location.

    Raises:
        FileNotFoundError: nothing is there; the message says which command creates one.
    """
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint(game)
    if not (path / "config.json").exists():
        where = "" if checkpoint is not None else " (the default location; pass checkpoint=...)"
        raise FileNotFoundError(
            f"no world-model checkpoint for {game} at {path}{where}. Create one with: "
            f"python train_wm.py --game {game} --run-dir {path.parent}"
        )
    return path
