"""Append-only episode storage on disk.

Layout of a dataset directory ``root``::

    root/dataset.json                 the index: what the dataset holds (see EpisodeDataset.info)
    root/parts/<episode>_<part>.npz   one immutable chunk of a game (uncompressed np.savez)

A game collected over several calls is one logical episode made of several parts; a continuation
part's first frame repeats the previous part's last frame and is dropped when parts are joined.

Writes are atomic: a part is written to a temporary file, fsynced and renamed, then the index is
rewritten the same way. A crash between the two leaves an orphan part that no index entry names: it
is never read, never overwritten and never deleted (a new part takes a free file name); writers
report orphans, and ``diamond-env dataset verify|repair`` lists them, moves them aside or rebuilds a
lost index from the parts. Every read checks the part's crc32 and shapes against the index and
raises :class:`DatasetCorruptError` naming the file on mismatch.

One writer at a time: the first write (or :meth:`EpisodeDataset.lock`) takes an exclusive OS lock
on ``root/.writer.lock``, held until the dataset object is closed or collected, or its process ends
(a killed writer releases it); a second writer gets :class:`DatasetLockedError` naming the holder's
pid. Readers need no lock.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diamond_env.config import IMG_SIZE
from diamond_env.data.episode import FIELD_DTYPES, STEP_FIELDS, Episode, FlatData
from diamond_env.run.checkpoint import atomic_write_bytes
from diamond_env.run.safe_io import (
    INDEX_MAX_BYTES,
    PART_MAX_BYTES,
    InputError,
    check_int,
    read_json,
    read_regular,
)

FORMAT_VERSION = 1
INDEX_NAME = "dataset.json"
PARTS_DIR = "parts"
LOCK_NAME = ".writer.lock"
PART_NAME = re.compile(r"^(\d{6})_(\d{5})(?:\.\d+)?\.npz$")


class DatasetCorruptError(ValueError):
    """A dataset file does not match its index (bad crc32, shape, missing file, unreadable)."""


class DatasetLockedError(ValueError):
    """Another process is writing to the dataset."""


_HELD: dict[Path, list[Any]] = {}
"""Writer locks this process holds, by resolved dataset root: [open lock file, users]."""


def _take_writer_lock(root: Path) -> Path | None:
    """Lock ``root/.writer.lock`` exclusively (our pid in it) for one more user in this process;
    returns the key to give :func:`_release_writer_lock` (None where there is no OS lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no OS lock available
        return None
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:  # never through a symlink, and only a regular file: the lock is ours to write
        fd = os.open(root / LOCK_NAME, flags, 0o644)
    except OSError as err:
        raise InputError(
            f"{root / LOCK_NAME}: cannot be used as the writer lock ({err.strerror}; a symlink "
            "is refused): remove it"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{root / LOCK_NAME}: not a regular file; remove it")
    handle = os.fdopen(fd, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DatasetLockedError(
            f"dataset {root} is being written by process {holder} (lock {root / LOCK_NAME}); "
            "wait until it ends or stop it: two writers would lose episodes"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[key] = [handle, 1]
    return key


def _release_writer_lock(key: Path | None) -> None:
    if key is None or key not in _HELD:
        return
    _HELD[key][1] -= 1
    if _HELD[key][1] == 0:
        _HELD.pop(key)[0].close()  # closing the file releases the flock


@dataclass(frozen=True)
class PartInfo:
    """Index entry of one part file."""

    file: str
    num_steps: int
    crc32: int
    finished: bool


def _identity(
    game: str,
    settings: dict[str, Any],
    num_actions: int,
    action_meanings: Sequence[str],
    frame_shape: tuple[int, int, int],
) -> dict[str, Any]:
    """The index fields that say which game and settings a dataset holds (validated)."""
    if not isinstance(num_actions, int) or num_actions < 1:
        raise ValueError(f"num_actions: expected a positive int, got {num_actions!r}")
    if len(action_meanings) != num_actions:
        raise ValueError(
            f"action_meanings: expected {num_actions} names, got {len(action_meanings)}"
        )
    if len(frame_shape) != 3 or frame_shape[2] != 3:
        raise ValueError(f"frame_shape: expected (H, W, 3), got {frame_shape}")
    try:
        settings = json.loads(json.dumps(settings))  # tuples become lists, as in the index
    except (TypeError, ValueError) as e:
        raise TypeError(f"settings: expected JSON-serialisable values, got {settings!r:.80}") from e
    return {
        "game": str(game),
        "settings": settings,
        "num_actions": num_actions,
        "action_meanings": [str(m) for m in action_meanings],
        "frame_shape": [int(s) for s in frame_shape],
    }


PART_MAX_UNPACKED = 8 * (1 << 30)
"""What the arrays of one part may unpack to (a 1,000-step part of 64 x 64 frames is 12 MB)."""


def read_part_bytes(path: Path, root: Path) -> bytes:
    """The bytes of a part file under ``root``: a regular file (no FIFO, device or symlink out
    of the dataset), at most :data:`~diamond_env.run.safe_io.PART_MAX_BYTES`;
    :class:`DatasetCorruptError` otherwise."""
    try:
        return read_regular(path, PART_MAX_BYTES, within=root)
    except (OSError, ValueError) as e:
        reason = str(e).removeprefix(f"{path}: ")
        raise DatasetCorruptError(
            f"{path}: part named in the index cannot be read ({reason})"
        ) from e


def load_part_arrays(data: bytes, path: Path) -> Episode:
    """The episode piece in a part's bytes: exactly the fields of an episode, unpacking to at
    most :data:`PART_MAX_UNPACKED` bytes, no pickled objects; :class:`DatasetCorruptError`
    naming ``path`` otherwise."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
        if unpacked > PART_MAX_UNPACKED:
            raise ValueError(f"its arrays unpack to {unpacked:,} bytes, more than allowed")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(FIELD_DTYPES):
                raise ValueError(
                    f"arrays: expected {sorted(FIELD_DTYPES)}, got {sorted(npz.files)}"
                )
            return Episode(**{name: npz[name] for name in FIELD_DTYPES})
    except (ValueError, TypeError, OSError, zipfile.BadZipFile) as e:
        raise DatasetCorruptError(f"{path}: unreadable part ({e})") from e


def _read_part(path: Path, info: PartInfo, frame_shape: tuple[int, ...], root: Path) -> Episode:
    """Read and verify one part file against its index entry."""
    data = read_part_bytes(path, root)
    crc = zlib.crc32(data)
    if crc != info.crc32:
        raise DatasetCorruptError(
            f"{path}: crc32 is {crc:#010x}, the index says {info.crc32:#010x}"
        )
    part = load_part_arrays(data, path)
    got = (part.num_steps, part.obs.shape[1:], part.finished)
    expected = (info.num_steps, frame_shape, info.finished)
    if got != expected:
        raise DatasetCorruptError(
            f"{path}: expected (steps, frame shape, finished) {expected}, got {got}"
        )
    return part


class EpisodeDataset:
    """Episodes of one game on disk; build with :meth:`create`, :meth:`open` or
    :meth:`open_or_create`."""

    def __init__(self, root: Path, index: dict[str, Any]) -> None:
        self.root = root
        self._meta = {k: v for k, v in index.items() if k != "episodes"}
        self._episodes: list[list[PartInfo]] = [
            [PartInfo(**p) for p in ep["parts"]] for ep in index["episodes"]
        ]
        self._last_frames: dict[int, np.ndarray] = {}
        self._lock: Path | None = None
        self._reported = False

    def close(self) -> None:
        """Give up the writer lock, if this object holds it (reading goes on working)."""
        lock, self._lock = self._lock, None
        _release_writer_lock(lock)

    def __enter__(self) -> EpisodeDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        game: str,
        settings: dict[str, Any],
        num_actions: int,
        action_meanings: Sequence[str],
        frame_shape: tuple[int, int, int] = (IMG_SIZE, IMG_SIZE, 3),
    ) -> EpisodeDataset:
        """Start an empty dataset in ``root`` (created if needed; must not hold a dataset, nor
        part files without an index: those are kept for ``diamond-env dataset repair``)."""
        path = Path(root)
        if (path / INDEX_NAME).exists():
            raise FileExistsError(f"root: {path} already holds a dataset ({INDEX_NAME})")
        parts = path / PARTS_DIR
        if parts.is_dir() and any(PART_NAME.match(p.name) for p in parts.iterdir()):
            raise FileExistsError(
                f"root: {parts} holds part files but {path / INDEX_NAME} is missing; nothing was "
                f"changed. Rebuild the index with `diamond-env dataset repair {path} --game <Game>` "
                "or move the folder away"
            )
        index = {
            "format_version": FORMAT_VERSION,
            **_identity(game, settings, num_actions, action_meanings, frame_shape),
            "num_steps": 0,
            "num_episodes": 0,
            "reward_counts": {"-1": 0, "0": 0, "1": 0},
            "episodes": [],
        }
        (path / PARTS_DIR).mkdir(parents=True, exist_ok=True)
        dataset = cls(path, index)
        dataset._write_index(index)
        return dataset

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> EpisodeDataset:
        """Open an existing dataset; a malformed index raises :class:`DatasetCorruptError`."""
        path = Path(root)
        index_path = path / INDEX_NAME
        if not index_path.exists():
            raise FileNotFoundError(f"root: no dataset in {path} ({INDEX_NAME} is missing)")
        try:
            index = read_json(index_path, max_bytes=INDEX_MAX_BYTES)
        except InputError as e:
            raise DatasetCorruptError(str(e)) from e
        try:
            if index.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"format_version: expected {FORMAT_VERSION}, got {index.get('format_version')}"
                )
            dataset = cls(path, index)
            dataset._check_totals()
        except (ValueError, TypeError, KeyError) as e:
            raise DatasetCorruptError(f"{index_path}: malformed index ({e!r})") from e
        return dataset

    @classmethod
    def open_or_create(
        cls,
        root: str | os.PathLike[str],
        *,
        game: str,
        settings: dict[str, Any],
        num_actions: int,
        action_meanings: Sequence[str],
        frame_shape: tuple[int, int, int] = (IMG_SIZE, IMG_SIZE, 3),
        lock: bool = False,
    ) -> EpisodeDataset:
        """Open ``root`` if it holds a dataset with the same game and settings, else create one.

        A dataset of another game, settings, action set or frame shape raises ``ValueError``.
        With ``lock=True`` the writer lock is taken first (:meth:`lock`), so what is read is
        what this writer will extend.
        """
        lock_key = _take_writer_lock(Path(root)) if lock else None
        try:
            if not (Path(root) / INDEX_NAME).exists():
                dataset = cls.create(
                    root, game, settings, num_actions, action_meanings, frame_shape
                )
            else:
                dataset = cls.open(root)
                wanted = _identity(game, settings, num_actions, action_meanings, frame_shape)
                for key, value in wanted.items():
                    if dataset._meta[key] != value:
                        raise ValueError(
                            f"{key}: dataset in {dataset.root} holds {dataset._meta[key]!r}, "
                            f"requested {value!r}"
                        )
        except BaseException:
            _release_writer_lock(lock_key)
            raise
        dataset._lock = lock_key
        if lock:
            dataset.report_orphans()
        return dataset

    @property
    def game(self) -> str:
        return str(self._meta["game"])

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self._meta["settings"])

    @property
    def num_actions(self) -> int:
        return int(self._meta["num_actions"])

    @property
    def action_meanings(self) -> list[str]:
        return list(self._meta["action_meanings"])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        h, w, c = self._meta["frame_shape"]
        return int(h), int(w), int(c)

    @property
    def num_steps(self) -> int:
        return int(self._meta["num_steps"])

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def reward_counts(self) -> dict[int, int]:
        """Number of steps whose raw reward has sign -1, 0 and +1."""
        return {int(k): int(v) for k, v in self._meta["reward_counts"].items()}

    @property
    def episode_lengths(self) -> np.ndarray:
        """int64 ``(E,)`` steps of each episode, in chronological (id) order."""
        return np.asarray([sum(p.num_steps for p in ep) for ep in self._episodes], dtype=np.int64)

    def is_finished(self, episode_id: int) -> bool:
        """Whether the episode's last part ends with a termination or truncation."""
        return self._parts(episode_id)[-1].finished

    def info(self) -> dict[str, Any]:
        """JSON-able summary: game, settings, actions, frame shape and counts."""
        meta = {k: v for k, v in self._meta.items()}
        meta["reward_counts"] = self.reward_counts
        meta["num_parts"] = sum(len(ep) for ep in self._episodes)
        meta["num_finished_episodes"] = sum(ep[-1].finished for ep in self._episodes)
        meta["root"] = str(self.root)
        return meta

    def __repr__(self) -> str:
        return (
            f"EpisodeDataset(root={str(self.root)!r}, game={self.game!r}, "
            f"num_episodes={self.num_episodes}, num_steps={self.num_steps})"
        )

    def append(self, part: Episode, episode_id: int | None = None) -> int:
        """Store ``part`` atomically and return its episode id.

        ``episode_id=None`` starts a new episode; an id continues that (unfinished) episode, and then
        ``part.obs[0]`` must equal the episode's last stored frame.
        """
        if not isinstance(part, Episode):
            raise TypeError(f"part: expected an Episode, got {type(part).__name__}")
        if part.obs.shape[1:] != self.frame_shape:
            raise ValueError(
                f"part.obs: expected frames {self.frame_shape}, got {part.obs.shape[1:]}"
            )
        if part.act.min() < 0 or part.act.max() >= self.num_actions:
            raise ValueError(
                f"part.act: expected actions in [0, {self.num_actions}), "
                f"got [{part.act.min()}, {part.act.max()}]"
            )
        if episode_id is None:
            episode_id, part_no = self.num_episodes, 0
        else:
            self._check_continuation(part, episode_id)
            part_no = len(self._episodes[episode_id])
        self.lock()
        buffer = io.BytesIO()
        np.savez(buffer, **{name: getattr(part, name) for name in FIELD_DTYPES})
        data = buffer.getvalue()
        name = self._free_name(episode_id, part_no)
        atomic_write_bytes(self.root / PARTS_DIR / name, data)
        info = PartInfo(name, part.num_steps, zlib.crc32(data), part.finished)
        episodes = [list(ep) for ep in self._episodes]
        if part_no == 0:
            episodes.append([info])
        else:
            episodes[episode_id].append(info)
        meta = dict(self._meta, num_steps=self.num_steps + part.num_steps)
        meta["num_episodes"] = len(episodes)
        counts = part.reward_counts()
        meta["reward_counts"] = {
            k: v + counts[int(k)] for k, v in self._meta["reward_counts"].items()
        }
        self._write_index(dict(meta, episodes=self._episode_entries(episodes)))
        self._meta, self._episodes = meta, episodes
        self._last_frames[episode_id] = part.obs[-1].copy()
        return episode_id

    def lock(self) -> None:
        """Become the dataset's one writer (held until the process ends); raises
        :class:`DatasetLockedError` naming the holder, or :class:`DatasetCorruptError` when
        another writer changed the dataset since it was opened here."""
        if self._lock is not None:
            return
        key = _take_writer_lock(self.root)
        on_disk = read_json(self.root / INDEX_NAME, max_bytes=INDEX_MAX_BYTES)
        if (on_disk["num_steps"], len(on_disk["episodes"])) != (self.num_steps, self.num_episodes):
            _release_writer_lock(key)
            raise DatasetCorruptError(
                f"{self.root / INDEX_NAME}: another writer changed the dataset since it was "
                "opened here; open it again"
            )
        self._lock = key
        self.report_orphans()

    def orphans(self) -> list[Path]:
        """Files in ``parts/`` that the index does not name (a crashed write, or foreign files)."""
        named = {p.file for ep in self._episodes for p in ep}
        parts = self.root / PARTS_DIR
        if not parts.is_dir():
            return []
        return sorted(p for p in parts.iterdir() if p.name not in named)

    def report_orphans(self) -> None:
        """Warn (once) about :meth:`orphans`; they are left where they are."""
        found = self.orphans()
        if found and not self._reported:
            warnings.warn(
                f"dataset {self.root}: {len(found)} file(s) in parts/ that the index does not name "
                f"(e.g. {found[0].name}; a write that was interrupted?). They are never read or "
                f"deleted; `diamond-env dataset verify {self.root}` lists them, `repair "
                "--move-orphans` moves them to orphans/",
                stacklevel=3,
            )
        self._reported = True

    def _free_name(self, episode_id: int, part_no: int) -> str:
        """The part's file name, with a suffix when an orphan already has it (never overwritten)."""
        name = f"{episode_id:06d}_{part_no:05d}.npz"
        n = 0
        while (self.root / PARTS_DIR / name).exists():
            n += 1
            name = f"{episode_id:06d}_{part_no:05d}.{n}.npz"
        return name

    def _check_continuation(self, part: Episode, episode_id: int) -> None:
        parts = self._parts(episode_id)
        if parts[-1].finished:
            raise ValueError(f"episode_id: episode {episode_id} is finished, it cannot continue")
        if episode_id not in self._last_frames:
            self._last_frames[episode_id] = self._read(parts[-1]).obs[-1].copy()
        last = self._last_frames[episode_id]
        if not np.array_equal(part.obs[0], last):
            raise ValueError(
                f"part.obs[0]: expected the last stored frame of episode {episode_id}, got another"
            )

    @staticmethod
    def _episode_entries(episodes: list[list[PartInfo]]) -> list[dict[str, Any]]:
        return [
            {
                "num_steps": sum(p.num_steps for p in ep),
                "finished": ep[-1].finished,
                "parts": [vars(p) for p in ep],
            }
            for ep in episodes
        ]

    def _write_index(self, index: dict[str, Any]) -> None:
        text = json.dumps(index, indent=1).encode()
        atomic_write_bytes(self.root / INDEX_NAME, text)

    def _check_totals(self) -> None:
        """Check the index's sizes and names (every part a plain file name of ``parts/``, step
        counts and the frame shape in range) and cross-check its totals against its episode
        list (raises ValueError)."""
        shape = self._meta.get("frame_shape")
        if not (
            isinstance(shape, list)
            and len(shape) == 3
            and shape[2] == 3
            and all(isinstance(n, int) and 1 <= n <= 1024 for n in shape)
        ):
            raise ValueError(
                f"frame_shape: expected [H, W, 3] with H, W in [1, 1024], got {shape!r}"
            )
        for parts in self._episodes:
            for info in parts:
                if not isinstance(info.file, str) or PART_NAME.match(info.file) is None:
                    raise ValueError(
                        f"parts: {info.file!r} is not a part file name of {PARTS_DIR}/"
                    )
                check_int(info.num_steps, f"parts: {info.file}: num_steps", 0, 10_000_000)
        steps = int(self.episode_lengths.sum())
        counted = sum(self._meta["reward_counts"].values())
        got = (self._meta["num_steps"], counted, self._meta["num_episodes"])
        if got != (steps, steps, self.num_episodes) or any(not ep for ep in self._episodes):
            raise ValueError(
                f"totals: (num_steps, reward counts, num_episodes) are {got}, the episode list "
                f"holds {steps} steps in {self.num_episodes} episodes"
            )

    def _parts(self, episode_id: int) -> list[PartInfo]:
        if not isinstance(episode_id, (int, np.integer)) or not 0 <= episode_id < self.num_episodes:
            raise ValueError(
                f"episode_id: expected an int in [0, {self.num_episodes}), got {episode_id!r}"
            )
        return self._episodes[int(episode_id)]

    def _read(self, info: PartInfo) -> Episode:
        return _read_part(self.root / PARTS_DIR / info.file, info, self.frame_shape, self.root)

    def load_episode(self, episode_id: int) -> Episode:
        """The whole logical episode (its parts joined), verified against the index."""
        return self.load_all([episode_id]).episode(0)

    def load_all(
        self, episodes: Sequence[int] | None = None, reuse: FlatData | None = None
    ) -> FlatData:
        """Episodes (all, or the given ids in the given order) in RAM as one :class:`FlatData`.

        ``reuse``: an earlier ``load_all`` result of this same dataset; the steps it already holds
        are copied from RAM and only newer parts are read from disk (parts are immutable).
        """
        ids = list(range(self.num_episodes)) if episodes is None else [int(e) for e in episodes]
        plans = [self._parts(e) for e in ids]
        lengths = np.asarray([sum(p.num_steps for p in parts) for parts in plans], dtype=np.int64)
        total = int(lengths.sum())
        out = {name: np.empty(total, dtype=FIELD_DTYPES[name]) for name in STEP_FIELDS}
        obs = np.empty((total + len(ids), *self.frame_shape), dtype=np.uint8)
        rows = {} if reuse is None else {int(e): j for j, e in enumerate(reuse.episode_ids)}
        step = 0
        for rank, (e, parts) in enumerate(zip(ids, plans, strict=True)):
            skip, prefix = _reusable_prefix(parts, reuse, rows.get(e), self.frame_shape)
            pieces = itertools.chain(prefix, (self._read(p) for p in parts[skip:]))
            for k, piece in enumerate(pieces):
                n, first = piece.num_steps, (0 if k == 0 else 1)
                frame = step + rank  # global index of this piece's obs[0]
                obs[frame + first : frame + n + 1] = piece.obs[first:]
                for name in STEP_FIELDS:
                    out[name][step : step + n] = getattr(piece, name)
                step += n
        return FlatData(
            obs=obs, episode_ids=np.asarray(ids, dtype=np.int64), lengths=lengths, **out
        )


def _reusable_prefix(
    parts: list[PartInfo], reuse: FlatData | None, row: int | None, frame_shape: tuple[int, ...]
) -> tuple[int, list[Episode]]:
    """How many leading parts ``reuse`` (row ``row``) already holds, and them joined as one piece."""
    if reuse is None or row is None or reuse.obs.shape[1:] != frame_shape:
        return 0, []
    held = int(reuse.lengths[row])
    boundaries = np.cumsum([p.num_steps for p in parts]).tolist()
    if held not in boundaries:
        return 0, []
    return boundaries.index(held) + 1, [reuse.episode(row)]
