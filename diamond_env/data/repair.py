"""``diamond-env dataset verify|repair``: check a dataset, rebuild a lost index, set orphans aside.

Nothing here deletes a file: orphans (part files the index does not name) are moved to
``root/orphans/`` on request, and a rebuilt index names every part it could read.
"""

from __future__ import annotations

import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diamond_env.data.dataset import (
    FORMAT_VERSION,
    INDEX_NAME,
    PART_NAME,
    PARTS_DIR,
    DatasetCorruptError,
    EpisodeDataset,
    PartInfo,
    _identity,
    _release_writer_lock,
    _take_writer_lock,
    load_part_arrays,
    read_part_bytes,
)
from diamond_env.data.episode import Episode
from diamond_env.run.safe_io import InputError


@dataclass(frozen=True)
class DatasetReport:
    """What :func:`verify_dataset` found: the index's ``episodes`` and ``steps``, one message per
    damaged part (``corrupt``) and the names of files no index entry points to (``orphans``)."""

    episodes: int
    steps: int
    corrupt: tuple[str, ...]
    orphans: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No damaged part and no orphan."""
        return not self.corrupt and not self.orphans


def verify_dataset(root: str | Path) -> DatasetReport:
    """Read every part of the dataset in ``root`` against its index; list orphans."""
    dataset = EpisodeDataset.open(root)
    corrupt = []
    for e in range(dataset.num_episodes):
        try:
            dataset.load_episode(e)
        except DatasetCorruptError as err:
            corrupt.append(str(err))
    return DatasetReport(
        dataset.num_episodes,
        dataset.num_steps,
        tuple(corrupt),
        tuple(p.name for p in dataset.orphans()),
    )


def _read_loose_part(path: Path, root: Path) -> tuple[Episode, bytes]:
    data = read_part_bytes(path, root)
    return load_part_arrays(data, path), data


def rebuild_index(root: str | Path, game: str) -> tuple[EpisodeDataset, list[str]]:
    """Write ``dataset.json`` for the part files in ``root/parts`` (the index is missing), with the
    real-game settings of ``game``. Parts are joined by their episode and part numbers; a part
    that cannot be read or does not continue its episode is left out (and named in the returned
    list of skipped files), as are later parts of that episode."""
    path = Path(root)
    if (path / INDEX_NAME).exists():
        raise FileExistsError(f"root: {path / INDEX_NAME} exists; nothing to rebuild")
    key = _take_writer_lock(path)
    try:
        return _rebuild(path, game)
    finally:
        _release_writer_lock(key)


def _rebuild(path: Path, game: str) -> tuple[EpisodeDataset, list[str]]:
    from diamond_env.atari import ATARI_SETTINGS, action_meanings, canonical_game

    by_episode: dict[int, list[tuple[int, Path]]] = {}
    skipped = []
    for file in sorted((path / PARTS_DIR).iterdir()):
        match = PART_NAME.match(file.name)
        if match is None or file.name.count(".") > 1:  # foreign files and renamed duplicates
            skipped.append(file.name)
            continue
        by_episode.setdefault(int(match.group(1)), []).append((int(match.group(2)), file))
    meanings = action_meanings(game)
    episodes: list[list[PartInfo]] = []
    steps, counts = 0, {"-1": 0, "0": 0, "1": 0}
    frame_shape = [64, 64, 3]
    for _, parts in sorted(by_episode.items()):
        infos: list[PartInfo] = []
        last = None
        for number, file in sorted(parts):
            try:
                part, data = _read_loose_part(file, path)
            except DatasetCorruptError:
                part, data = None, b""
            if (
                part is None
                or number != len(infos)
                or (last is not None and not np.array_equal(part.obs[0], last))
                or (infos and infos[-1].finished)
            ):
                skipped += [f.name for n, f in sorted(parts) if n >= number]
                break
            if part.num_steps and int(part.act.max()) >= len(meanings):
                raise InputError(
                    f"--game {game}: {file} holds action {int(part.act.max())}, but {game} has "
                    f"{len(meanings)} actions; these parts are another game's (nothing was written)"
                )
            infos.append(PartInfo(file.name, part.num_steps, zlib.crc32(data), part.finished))
            frame_shape = [int(n) for n in part.obs.shape[1:]]
            steps += part.num_steps
            for sign, n in part.reward_counts().items():
                counts[str(sign)] += n
            last = part.obs[-1]
        if infos:
            episodes.append(infos)
    index = {
        "format_version": FORMAT_VERSION,
        **_identity(
            canonical_game(game),
            ATARI_SETTINGS,
            len(meanings),
            meanings,
            (frame_shape[0], frame_shape[1], frame_shape[2]),
        ),
        "num_steps": steps,
        "num_episodes": len(episodes),
        "reward_counts": counts,
        "episodes": EpisodeDataset._episode_entries(episodes),
    }
    shell = EpisodeDataset(path, index)
    shell._write_index(index)
    return EpisodeDataset.open(path), skipped


def move_orphans(root: str | Path) -> list[Path]:
    """Move the dataset's orphan files to ``root/orphans/`` (kept, not deleted); returns them."""
    with EpisodeDataset.open(root) as dataset:
        dataset._reported = True  # they are being dealt with
        dataset.lock()
        return _move(Path(root), dataset.orphans())


def _move(root: Path, found: list[Path]) -> list[Path]:
    if not found:
        return []
    target = root / "orphans"
    target.mkdir(exist_ok=True)
    moved = []
    for file in found:
        dest = target / file.name
        n = 0
        while dest.exists():
            n += 1
            dest = target / f"{file.name}.{n}"
        shutil.move(str(file), dest)
        moved.append(dest)
    return moved
