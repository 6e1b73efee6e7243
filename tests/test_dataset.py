"""Episode storage: validation, append/reopen/continue, index counts, crash safety, corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diamond_env.data.dataset import DatasetCorruptError, EpisodeDataset
from diamond_env.data.episode import Episode, FlatData

SETTINGS = {"frameskip": 4, "noop_max": 30, "size": 64, "sticky": 0.0}
MEANINGS = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def make_part(
    steps: int,
    seed: int,
    *,
    first: np.ndarray | None = None,
    rew: list[float] | None = None,
    term: bool = False,
    trunc: bool = False,
    side: int = 64,
) -> Episode:
    """Random frames (``first`` as frame 0 if given), random actions in [0, 4)."""
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, size=(steps + 1, side, side, 3), dtype=np.uint8)
    if first is not None:
        obs[0] = first
    end = np.zeros(steps, dtype=bool)
    return Episode(
        obs=obs,
        act=rng.integers(0, 4, size=steps, dtype=np.int64),
        rew=np.asarray(rew if rew is not None else np.zeros(steps), dtype=np.float32),
        term=np.concatenate([end[:-1], [term]]),
        trunc=np.concatenate([end[:-1], [trunc]]),
        life_loss=rng.random(steps) < 0.2,
    )


def new_dataset(root: Path, game: str = "Breakout") -> EpisodeDataset:
    return EpisodeDataset.create(root, game, SETTINGS, 4, MEANINGS)


def test_episode_validation_names_field_expected_and_received() -> None:
    part = make_part(3, 0, side=8)
    with pytest.raises(TypeError, match=r"act: expected dtype int64, got int32"):
        Episode(**{**vars(part), "act": part.act.astype(np.int32)})
    with pytest.raises(
        ValueError, match=r"obs: expected shape \(4, \*, \*, 3\), got \(3, 8, 8, 3\)"
    ):
        Episode(**{**vars(part), "obs": part.obs[:3]})
    with pytest.raises(ValueError, match=r"act: expected at least 1 step, got 0"):
        Episode(**{k: v[:0] for k, v in vars(part).items()})
    with pytest.raises(
        ValueError, match=r"term: expected True only at the last step 2, got True at 1"
    ):
        Episode(**{**vars(part), "term": np.array([False, True, False])})


def test_append_reopen_continue_and_counts(tmp_path: Path) -> None:
    ds = new_dataset(tmp_path / "d")
    a = make_part(5, 1, rew=[0, 2.0, -1.0, 0, 0])
    assert ds.append(a) == 0
    b = make_part(4, 2, first=a.obs[-1], rew=[0, 0, 7.5, 0], term=True)
    assert ds.append(b, episode_id=0) == 0
    c = make_part(3, 3, rew=[-3.0, 0, 1.0])
    assert ds.append(c) == 1

    ds = EpisodeDataset.open(tmp_path / "d")  # reopen: the index says it all
    assert (ds.game, ds.num_steps, ds.num_episodes) == ("Breakout", 12, 2)
    assert ds.reward_counts == {-1: 2, 0: 7, 1: 3}
    assert ds.episode_lengths.tolist() == [9, 3]
    assert (ds.is_finished(0), ds.is_finished(1)) == (True, False)
    info = ds.info()
    assert info["settings"] == SETTINGS and info["action_meanings"] == MEANINGS
    assert (info["num_parts"], info["num_finished_episodes"]) == (3, 1)

    ep0 = ds.load_episode(0)
    np.testing.assert_array_equal(ep0.obs, np.concatenate([a.obs, b.obs[1:]]))
    np.testing.assert_array_equal(ep0.act, np.concatenate([a.act, b.act]))
    np.testing.assert_array_equal(ep0.life_loss, np.concatenate([a.life_loss, b.life_loss]))
    assert ep0.term.tolist() == [False] * 8 + [True]

    # The reopened dataset continues episode 1 (its last frame is read back from disk).
    d = make_part(2, 4, first=c.obs[-1], rew=[0, 1.0], trunc=True)
    assert ds.append(d, episode_id=1) == 1
    assert ds.num_steps == 14 and ds.reward_counts == {-1: 2, 0: 8, 1: 4}
    ds = EpisodeDataset.open(tmp_path / "d")
    np.testing.assert_array_equal(ds.load_episode(1).obs, np.concatenate([c.obs, d.obs[1:]]))

    with pytest.raises(ValueError, match="episode 1 is finished"):
        ds.append(make_part(2, 5, first=d.obs[-1]), episode_id=1)
    e = make_part(2, 6)
    ds.append(e)
    with pytest.raises(ValueError, match=r"part.obs\[0\]: expected the last stored frame"):
        ds.append(make_part(2, 7), episode_id=2)
    with pytest.raises(ValueError, match=r"episode_id: expected an int in \[0, 3\), got 7"):
        ds.append(make_part(2, 8), episode_id=7)
    bad = make_part(2, 9)
    with pytest.raises(ValueError, match=r"part.act: expected actions in \[0, 4\), got \[0, 9\]"):
        ds.append(Episode(**{**vars(bad), "act": np.array([0, 9])}))
    assert ds.num_steps == 16  # refused appends changed nothing


def test_load_all_layout_and_reuse(tmp_path: Path) -> None:
    ds = new_dataset(tmp_path)
    a, c = make_part(3, 1, side=64), make_part(2, 2)
    ds.append(a)
    ds.append(c)
    flat = ds.load_all()
    assert flat.lengths.tolist() == [3, 2] and flat.episode_ids.tolist() == [0, 1]
    assert flat.step_starts.tolist() == [0, 3] and flat.frame_starts.tolist() == [0, 4]
    np.testing.assert_array_equal(flat.obs, np.concatenate([a.obs, c.obs]))
    np.testing.assert_array_equal(flat.act, np.concatenate([a.act, c.act]))

    b = make_part(4, 3, first=a.obs[-1])
    ds.append(b, episode_id=0)
    ds.append(make_part(1, 4))
    fresh = ds.load_all()
    # Damage an old part: a reusing load never reads it again, a fresh one refuses it.
    (tmp_path / "parts" / "000000_00000.npz").write_bytes(b"not a part")
    reused = ds.load_all(reuse=flat)
    for name in ("obs", "act", "rew", "term", "trunc", "life_loss", "lengths", "episode_ids"):
        np.testing.assert_array_equal(getattr(reused, name), getattr(fresh, name))
    np.testing.assert_array_equal(reused.episode(0).obs, np.concatenate([a.obs, b.obs[1:]]))
    with pytest.raises(DatasetCorruptError):
        ds.load_all()
    sub = ds.load_all([2, 1])
    assert sub.episode_ids.tolist() == [2, 1] and sub.lengths.tolist() == [1, 2]


def test_crash_between_part_and_index_leaves_an_orphan_that_is_never_read_nor_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = new_dataset(tmp_path)
    a = make_part(3, 1)
    ds.append(a)

    def crash(self: EpisodeDataset, index: dict) -> None:
        raise KeyboardInterrupt("simulated crash after the part was written")

    with monkeypatch.context() as m:
        m.setattr(EpisodeDataset, "_write_index", crash)
        with pytest.raises(KeyboardInterrupt):
            ds.append(make_part(4, 2, first=a.obs[-1]), episode_id=0)
        with pytest.raises(KeyboardInterrupt):
            ds.append(make_part(5, 3))
    parts = tmp_path / "parts"
    (parts / ".000009_00000.npz.123.tmp").write_bytes(b"half written")  # a killed writer's temp
    (parts / "notes.txt").write_text("a user's file")
    before = {p.name: p.read_bytes() for p in parts.iterdir()}
    assert sorted(before) == [
        ".000009_00000.npz.123.tmp",
        "000000_00000.npz",
        "000000_00001.npz",
        "000001_00000.npz",
        "notes.txt",
    ]

    ds = EpisodeDataset.open(tmp_path)
    assert (ds.num_steps, ds.num_episodes) == (3, 1)
    np.testing.assert_array_equal(ds.load_all().obs, a.obs)  # the orphans are never read
    assert [p.name for p in ds.orphans()] == sorted(set(before) - {"000000_00000.npz"})
    c = make_part(2, 4)
    with pytest.warns(UserWarning, match="4 file"):
        assert ds.append(c) == 1  # reported, not deleted, not overwritten
    after = {p.name: p.read_bytes() for p in parts.iterdir()}
    assert {k: after[k] for k in before} == before
    assert sorted(set(after) - set(before)) == ["000001_00000.1.npz"]
    np.testing.assert_array_equal(EpisodeDataset.open(tmp_path).load_episode(1).obs, c.obs)


def test_a_second_writer_is_refused_until_the_first_dies(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from diamond_env.data.dataset import DatasetLockedError

    new_dataset(tmp_path).append(make_part(3, 1))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from diamond_env.data.dataset import EpisodeDataset\n"
            f"d = EpisodeDataset.open({str(tmp_path)!r})\nd.lock()\n"
            "print('locked', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        ds = EpisodeDataset.open(tmp_path)  # reading needs no lock
        with pytest.raises(DatasetLockedError, match=f"process {holder.pid}"):
            ds.append(make_part(2, 2))
        with pytest.raises(DatasetLockedError, match=f"process {holder.pid}"):
            EpisodeDataset.open_or_create(
                tmp_path,
                game="Breakout",
                settings=SETTINGS,
                num_actions=4,
                action_meanings=MEANINGS,
                lock=True,
            )
        assert EpisodeDataset.open(tmp_path).num_steps == 3  # nothing was written
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert ds.append(make_part(2, 2)) == 1  # a killed writer's lock is gone
    assert EpisodeDataset.open(tmp_path).num_steps == 5


def test_a_stale_writer_is_refused(tmp_path: Path) -> None:
    stale = new_dataset(tmp_path)
    EpisodeDataset.open(tmp_path).append(make_part(3, 1))  # another object wrote meanwhile
    with pytest.raises(DatasetCorruptError, match="changed the dataset since it was opened"):
        stale.append(make_part(2, 2))
    assert EpisodeDataset.open(tmp_path).num_episodes == 1


def test_a_lost_index_is_refused_then_rebuilt(tmp_path: Path) -> None:
    from diamond_env.cli.main import main

    ds = new_dataset(tmp_path)
    a = make_part(3, 1)
    ds.append(a)
    ds.append(make_part(2, 2, first=a.obs[-1], term=True), episode_id=0)
    ds.append(make_part(4, 3))
    want = ds.load_all()
    (tmp_path / "dataset.json").unlink()
    parts = sorted(p.name for p in (tmp_path / "parts").iterdir())
    with pytest.raises(FileExistsError, match="dataset repair"):
        new_dataset(tmp_path)
    assert (
        main(["collect", "--game", "Breakout", "--steps", "10", "--out", str(tmp_path), "--quiet"])
        == 2
    )
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == parts  # nothing deleted
    assert main(["dataset", "repair", str(tmp_path)]) == 2  # needs --game
    assert main(["dataset", "repair", str(tmp_path), "--game", "Breakout"]) == 0
    got = EpisodeDataset.open(tmp_path)
    assert (got.num_episodes, got.num_steps) == (2, 9)
    np.testing.assert_array_equal(got.load_all().obs, want.obs)
    assert got.is_finished(0) and not got.is_finished(1)
    assert main(["dataset", "verify", str(tmp_path)]) == 0
    (tmp_path / "parts" / "stray.bin").write_bytes(b"x")
    assert main(["dataset", "verify", str(tmp_path)]) == 1
    assert main(["dataset", "repair", str(tmp_path), "--move-orphans"]) == 0
    assert (tmp_path / "orphans" / "stray.bin").read_bytes() == b"x"


def test_damaged_files_are_reported_by_name(tmp_path: Path) -> None:
    ds = new_dataset(tmp_path)
    ds.append(make_part(3, 1))
    ds.append(make_part(2, 2))
    path = tmp_path / "parts" / "000001_00000.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in a frame
    path.write_bytes(bytes(data))
    ds.load_episode(0)  # the intact episode still loads
    with pytest.raises(DatasetCorruptError, match=r"000001_00000\.npz: crc32"):
        ds.load_episode(1)
    with pytest.raises(DatasetCorruptError, match=r"000001_00000\.npz"):
        EpisodeDataset.open(tmp_path).load_all()
    path.unlink()
    with pytest.raises(DatasetCorruptError, match=r"000001_00000\.npz: part named in the index"):
        ds.load_episode(1)

    index = tmp_path / "dataset.json"
    content = json.loads(index.read_text())
    content["num_steps"] = 99
    index.write_text(json.dumps(content))
    with pytest.raises(DatasetCorruptError, match=r"dataset\.json: malformed index"):
        EpisodeDataset.open(tmp_path)
    index.write_text("{ truncated")
    with pytest.raises(DatasetCorruptError, match=r"dataset\.json"):
        EpisodeDataset.open(tmp_path)


def test_open_or_create_refuses_another_game_or_settings(tmp_path: Path) -> None:
    kwargs = dict(settings=SETTINGS, num_actions=4, action_meanings=MEANINGS)
    ds = EpisodeDataset.open_or_create(tmp_path, game="Breakout", **kwargs)
    ds.append(make_part(2, 1))
    again = EpisodeDataset.open_or_create(tmp_path, game="Breakout", **kwargs)
    assert again.num_steps == 2
    with pytest.raises(ValueError, match=r"game: dataset in .* holds 'Breakout', requested 'Pong'"):
        EpisodeDataset.open_or_create(tmp_path, game="Pong", **kwargs)
    other = dict(kwargs, settings={**SETTINGS, "frameskip": 2})
    with pytest.raises(ValueError, match=r"settings: .*'frameskip': 4.*'frameskip': 2"):
        EpisodeDataset.open_or_create(tmp_path, game="Breakout", **other)
    with pytest.raises(FileExistsError):
        new_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        EpisodeDataset.open(tmp_path / "nowhere")


def test_flat_data_from_episodes_round_trip() -> None:
    eps = [make_part(n, n, side=8) for n in (1, 4, 2)]
    flat = FlatData.from_episodes(eps, episode_ids=[5, 6, 9])
    assert flat.num_steps == 7 and flat.obs.shape == (10, 8, 8, 3)
    for e, ep in enumerate(eps):
        back = flat.episode(e)
        for name in ("obs", "act", "rew", "term", "trunc", "life_loss"):
            np.testing.assert_array_equal(getattr(back, name), getattr(ep, name))
    with pytest.raises(ValueError, match=r"lengths: expected a sum of 7 steps, got 8"):
        FlatData(**{**vars(flat), "lengths": np.array([1, 5, 2])})
