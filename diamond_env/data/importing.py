"""``diamond-env import-data``: episodes recorded elsewhere become a dataset ``train-wm`` trains on.

Two sources:

- a folder of **plain episode files**, one ``.npz`` per episode (read with ``allow_pickle=False``):
  ``observations`` uint8 ``(T+1, H, W, 3)`` or ``(T+1, H, W)`` (grey), ``actions`` int ``(T,)``,
  ``rewards`` ``(T,)``, ``terminations`` and ``truncations`` bool ``(T,)`` (True at most at the
  last step), optional ``lives`` int ``(T+1,)`` (a life is lost on a step where they drop);
- a **Minari** dataset, by id (in ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``, or the
  ``root`` given), read with the ``minari`` library; ``infos["lives"]`` when recorded.

Frames get our collection's preprocessing: 64 x 64 RGB by area interpolation (grey frames are
repeated over the three channels). Frame skip and max-pooling are the source's: its frames are
taken as the frames an agent acted on, and what the source applied is recorded in the dataset's
settings as the user states it. Every episode is read and checked before anything is written:
shapes, dtypes, lengths, actions inside the game's action set, the action count of a Minari
dataset; a refusal is one line naming the episode and the field.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from diamond_env.config import IMG_SIZE
from diamond_env.data.dataset import INDEX_NAME, EpisodeDataset
from diamond_env.data.episode import Episode
from diamond_env.run.safe_io import PART_MAX_BYTES, InputError, read_regular

NPZ_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
MAX_SIDE = 4096
"""The largest frame side accepted from a source (Atari frames are 210 x 160)."""

RawEpisode = dict[str, np.ndarray]


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote."""

    episodes: int
    steps: int
    rewards: int
    life_losses: int
    source: str


def to_frames(obs: np.ndarray, where: str) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` or ``(N, H, W)`` -> uint8 ``(N, 64, 64, 3)`` by area interpolation."""
    if obs.dtype != np.uint8:
        raise InputError(f"{where}: observations: expected uint8 frames, got {obs.dtype}")
    if obs.ndim == 3:
        obs = np.repeat(obs[..., None], 3, axis=-1)
    if obs.ndim != 4 or obs.shape[-1] != 3:
        raise InputError(
            f"{where}: observations: expected (T+1, H, W, 3) or (T+1, H, W), got {obs.shape}"
        )
    h, w = obs.shape[1:3]
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise InputError(
            f"{where}: observations: frames of {h} x {w}, expected sides <= {MAX_SIDE}"
        )
    if (h, w) == (IMG_SIZE, IMG_SIZE):
        return np.ascontiguousarray(obs)
    size = (IMG_SIZE, IMG_SIZE)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in obs])


def to_episode(raw: RawEpisode, num_actions: int, where: str) -> Episode:
    """Check one source episode and convert it (see the module docstring); ``InputError``
    naming ``where`` and the field otherwise."""
    missing = [k for k in NPZ_FIELDS if k not in raw]
    if missing:
        raise InputError(f"{where}: missing {missing}; expected {list(NPZ_FIELDS)} (+ lives)")
    obs, act = np.asarray(raw["observations"]), np.asarray(raw["actions"])
    if act.ndim != 1 or act.dtype.kind not in "iu":
        raise InputError(
            f"{where}: actions: expected integers of shape (T,), got {act.dtype} {act.shape}"
        )
    steps = len(act)
    if steps < 1 or len(obs) == 0:
        raise InputError(f"{where}: no steps (an episode needs at least two frames and one action)")
    if len(obs) != steps + 1:
        raise InputError(
            f"{where}: observations: expected T+1 = {steps + 1} frames for {steps} actions, got "
            f"{len(obs)}"
        )
    if act.min() < 0 or act.max() >= num_actions:
        raise InputError(
            f"{where}: actions: expected values in [0, {num_actions}), got {int(act.min())} to "
            f"{int(act.max())}"
        )
    flags = {}
    for name in ("rewards", "terminations", "truncations"):
        value = np.asarray(raw[name])
        if value.shape != (steps,):
            raise InputError(f"{where}: {name}: expected shape ({steps},), got {value.shape}")
        if name == "rewards" and (value.dtype.kind not in "iuf" or not np.isfinite(value).all()):
            raise InputError(f"{where}: rewards: expected finite numbers, got {value.dtype}")
        if name != "rewards" and value.dtype.kind not in "biu":
            raise InputError(f"{where}: {name}: expected booleans, got {value.dtype}")
        flags[name] = value
    term, trunc = flags["terminations"].astype(bool), flags["truncations"].astype(bool)
    for name, value in (("terminations", term), ("truncations", trunc)):
        if value[:-1].any():
            raise InputError(f"{where}: {name}: True before the last step (split the episode)")
    life_loss = np.zeros(steps, dtype=bool)
    if "lives" in raw:
        lives = np.asarray(raw["lives"])
        if lives.shape != (steps + 1,) or lives.dtype.kind not in "iu":
            raise InputError(
                f"{where}: lives: expected integers of shape ({steps + 1},), got "
                f"{lives.dtype} {lives.shape}"
            )
        life_loss = (np.diff(lives.astype(np.int64)) < 0) & ~term
    return Episode(
        obs=to_frames(obs, where),
        act=act.astype(np.int64),
        rew=flags["rewards"].astype(np.float32),
        term=term,
        trunc=trunc,
        life_loss=life_loss,
    )


def npz_episodes(folder: Path) -> Iterator[tuple[str, Callable[[], RawEpisode]]]:
    """``(where, load)`` for each ``*.npz`` of ``folder`` in name order; ``load()`` reads it."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--npz: no folder {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".npz")
    if not files:
        raise InputError(f"--npz: {folder} holds no .npz episode files")
    for path in files:
        yield str(path), functools.partial(read_npz, path, folder)


def read_npz(path: Path, folder: Path) -> RawEpisode:
    """The arrays of one episode file: a regular file in ``folder``, bounded, no pickles."""
    data = read_regular(path, PART_MAX_BYTES, within=folder)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable .npz of arrays ({err})") from None


def minari_episodes(
    dataset_id: str, num_actions: int, root: Path | None = None
) -> Iterator[tuple[str, Callable[[], RawEpisode]]]:
    """``(where, load)`` for each episode of the Minari dataset ``dataset_id``."""
    try:
        import minari
    except ImportError:
        raise InputError(
            "--minari needs the minari library: pip install 'diamond_env[minari]'"
        ) from None
    before = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:  # minari reads its root from the environment when a dataset is opened
        os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        dataset = minari.load_dataset(dataset_id, download=False)  # never from the network
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise InputError(f"--minari {dataset_id}: cannot be opened ({err})") from None
    finally:
        if root is not None:
            if before is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = before
    space = dataset.action_space
    n = getattr(space, "n", None)
    if n is None:
        raise InputError(f"--minari {dataset_id}: actions are {space}, expected Discrete")
    if int(n) != num_actions:
        raise InputError(
            f"--minari {dataset_id}: {int(n)} actions, but the game has {num_actions}; is it "
            "another game, or the full action set (we use the minimal one)?"
        )
    for index in dataset.episode_indices:  # read one at a time, when asked
        where = f"--minari {dataset_id}: episode {int(index)}"
        yield where, functools.partial(_minari_raw, dataset, int(index))


def _minari_raw(dataset: Any, index: int) -> RawEpisode:
    episode = next(iter(dataset.iterate_episodes([index])))
    raw: RawEpisode = {
        "observations": np.asarray(episode.observations),
        "actions": np.asarray(episode.actions).reshape(-1),
        "rewards": np.asarray(episode.rewards),
        "terminations": np.asarray(episode.terminations),
        "truncations": np.asarray(episode.truncations),
    }
    infos = episode.infos if isinstance(episode.infos, dict) else {}
    if "lives" in infos:
        raw["lives"] = np.asarray(infos["lives"])
    return raw


def import_episodes(
    episodes: list[tuple[str, Callable[[], RawEpisode]]],
    out: Path,
    *,
    game: str,
    action_meanings: list[str],
    settings: dict[str, Any],
) -> ImportSummary:
    """Check every episode, then append them all to the dataset in ``out`` (created, or one of
    the same game and settings); nothing is written when any episode is refused."""
    if (out / INDEX_NAME).exists():
        existing = EpisodeDataset.open(out)
        if existing.game != game or existing.num_actions != len(action_meanings):
            raise InputError(
                f"--out {out}: holds {existing.game} ({existing.num_actions} actions), not "
                f"{game} ({len(action_meanings)})"
            )
    steps = rewards = losses = 0
    for where, load in episodes:  # first pass: check everything, keep nothing
        episode = to_episode(load(), len(action_meanings), where)
        steps += episode.num_steps
        rewards += int(np.count_nonzero(episode.rew))
        losses += int(episode.life_loss.sum())
    dataset = EpisodeDataset.open_or_create(
        out,
        game=game,
        settings=settings,
        num_actions=len(action_meanings),
        action_meanings=action_meanings,
        lock=True,
    )
    try:
        for where, load in episodes:
            dataset.append(to_episode(load(), len(action_meanings), where))
    finally:
        dataset.close()
    return ImportSummary(len(episodes), steps, rewards, losses, str(settings.get("source")))
