"""``import-data``: episodes recorded outside (plain .npz files, a Minari dataset made by minari's
own collector over the real ALE) become a dataset that train-wm trains on; bad input is refused
in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from diamond_env.cli.main import main
from diamond_env.data.dataset import EpisodeDataset


def _real_episodes(count: int, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Short real Breakout episodes at the ALE's own 210 x 160 resolution, with lives."""
    env = gym.make("ALE/Breakout-v5", frameskip=4, repeat_action_probability=0.0)
    rng = np.random.default_rng(seed)
    out = []
    obs, info = env.reset(seed=seed)
    for _ in range(count):
        frames, lives, acts, rews, terms = [obs], [info["lives"]], [], [], []
        for _ in range(steps):
            a = int(rng.integers(0, 4))
            obs, r, term, trunc, info = env.step(a)
            frames.append(obs)
            lives.append(info["lives"])
            acts.append(a)
            rews.append(r)
            terms.append(term)
            if term or trunc:
                break
        ended = bool(terms[-1])
        out.append(
            {
                "observations": np.stack(frames),
                "actions": np.array(acts),
                "rewards": np.array(rews, dtype=np.float32),
                "terminations": np.array(terms, dtype=bool),
                "truncations": np.zeros(len(acts), dtype=bool),
                "lives": np.array(lives),
            }
        )
        if ended:
            obs, info = env.reset()
    env.close()
    return out


def _write(folder: Path, episodes: list[dict[str, np.ndarray]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ep in enumerate(episodes):
        np.savez_compressed(folder / f"episode_{i:03d}.npz", **ep)
    return folder


@pytest.fixture(scope="module")
def real_episodes() -> list[dict[str, np.ndarray]]:
    return _real_episodes(3, 120)


def test_npz_folder_is_imported_and_trained_on(
    real_episodes: list[dict[str, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _write(tmp_path / "episodes", real_episodes)
    out = tmp_path / "ds"
    assert (
        main(
            [
                "import-data",
                "--game",
                "Breakout",
                "--npz",
                str(folder),
                "--out",
                str(out),
                "--frame-skip",
                "4",
                "--no-max-pool",
            ]
        )
        == 0
    )
    assert "imported 3 episodes" in capsys.readouterr().out
    ds = EpisodeDataset.open(out)
    data = ds.load_all()
    steps = sum(len(e["actions"]) for e in real_episodes)
    assert ds.num_episodes == 3 and data.num_steps == steps
    assert data.obs.shape[1:] == (64, 64, 3) and data.obs.dtype == np.uint8
    np.testing.assert_array_equal(data.act, np.concatenate([e["actions"] for e in real_episodes]))
    drops = sum(int((np.diff(e["lives"]) < 0).sum() - e["terminations"][-1]) for e in real_episodes)
    assert int(data.life_loss.sum()) == drops
    settings = json.loads((out / "dataset.json").read_text())["settings"]
    assert settings["source"] == "npz:episodes" and settings["frame_skip"] == 4
    assert (
        main(
            [
                "train-wm",
                "--game",
                "Breakout",
                "--preset",
                "tiny",
                "--dataset",
                str(out),
                "--steps",
                "2",
                "--eval-every",
                "0",
                "--run-dir",
                str(tmp_path / "run"),
                "--eval-rollouts",
                "2",
                "--test-fraction",
                "0.34",
            ]
        )
        == 0
    )
    assert (tmp_path / "run" / "world_model" / "config.json").exists()


def _broken(ep: dict[str, np.ndarray], how: str) -> dict[str, np.ndarray]:
    ep = dict(ep)
    if how == "float frames":
        ep["observations"] = ep["observations"].astype(np.float32)
    elif how == "action out of range":
        ep["actions"] = ep["actions"].copy()
        ep["actions"][3] = 4
    elif how == "no frames":
        ep["observations"] = ep["observations"][:0]
    elif how == "lengths":
        ep["rewards"] = ep["rewards"][:-1]
    elif how == "early end":
        ep["terminations"] = ep["terminations"].copy()
        ep["terminations"][0] = True
    elif how == "missing field":
        del ep["truncations"]
    return ep


@pytest.mark.parametrize(
    "how, words",
    [
        ("float frames", "expected uint8"),
        ("action out of range", "expected values in [0, 4)"),
        ("no frames", "no steps"),
        ("lengths", "rewards: expected shape"),
        ("early end", "True before the last step"),
        ("missing field", "missing ['truncations']"),
    ],
)
def test_bad_episodes_are_refused_before_anything_is_written(
    how: str,
    words: str,
    real_episodes: list[dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    episodes = [real_episodes[0], _broken(real_episodes[1], how)]  # the bad one comes second
    folder = _write(tmp_path / "episodes", episodes)
    out = tmp_path / "ds"
    assert main(["import-data", "--game", "Breakout", "--npz", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "episode_001.npz" in err[0], err
    assert not out.exists()


def test_another_games_dataset_or_an_empty_folder_is_refused(
    real_episodes: list[dict[str, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _write(tmp_path / "episodes", real_episodes[:1])
    other = tmp_path / "pong"
    assert main(["collect", "--game", "Pong", "--steps", "20", "--out", str(other), "--quiet"]) == 0
    before = (other / "dataset.json").read_text()
    assert (
        main(["import-data", "--game", "Breakout", "--npz", str(folder), "--out", str(other)]) == 2
    )
    assert "holds Pong" in capsys.readouterr().err
    assert (other / "dataset.json").read_text() == before
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "import-data",
                "--game",
                "Breakout",
                "--npz",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "ds"),
            ]
        )
        == 2
    )
    assert "no .npz" in capsys.readouterr().err
    # Pong has 6 actions: Breakout episodes are refused by their action set only if they use
    # actions Pong lacks; episodes with 4 actions recorded for a 6-action game import fine.
    assert not (tmp_path / "ds").exists()


def _minari_dataset(root: Path, dataset_id: str, game: str, steps: int) -> None:
    """A Minari dataset of real ALE play written by minari itself (its buffer API:
    ``DataCollector`` needs jax, minari's ``create`` extra, about 600 MB)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    env = gym.make(f"ALE/{game}-v5", frameskip=4, repeat_action_probability=0.0)
    rng = np.random.default_rng(0)
    buffers, obs, info = [], *env.reset(seed=0)
    frames, acts, rews, terms, truncs, lives = [obs], [], [], [], [], [info["lives"]]
    for t in range(steps):
        a = int(rng.integers(0, env.action_space.n))
        obs, r, term, trunc, info = env.step(a)
        frames.append(obs)
        acts.append(a)
        rews.append(float(r))
        terms.append(bool(term))
        truncs.append(bool(trunc or t == steps - 1))
        lives.append(info["lives"])
        if term or trunc or t == steps - 1:
            buffers.append(
                EpisodeBuffer(
                    id=len(buffers),
                    observations=np.stack(frames),
                    actions=np.array(acts),
                    rewards=rews,
                    terminations=terms,
                    truncations=truncs,
                    infos={"lives": np.array(lives)},
                )
            )
            obs, info = env.reset()
            frames, acts, rews, terms, truncs, lives = [obs], [], [], [], [], [info["lives"]]
    minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        env=env,
        eval_env=env.spec,
        algorithm_name="random",
        description="test data",
    )
    env.close()


def test_minari_dataset_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("minari")
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    _minari_dataset(root, "atari/breakout/random-v0", "Breakout", 150)
    out = tmp_path / "ds"
    assert (
        main(
            [
                "import-data",
                "--game",
                "Breakout",
                "--minari",
                "atari/breakout/random-v0",
                "--minari-root",
                str(root),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ds = EpisodeDataset.open(out)
    assert ds.num_steps == 150 and ds.load_all().obs.shape[1:] == (64, 64, 3)
    assert (
        main(
            [
                "train-wm",
                "--game",
                "Breakout",
                "--preset",
                "tiny",
                "--dataset",
                str(out),
                "--steps",
                "2",
                "--eval-every",
                "0",
                "--run-dir",
                str(tmp_path / "run"),
                "--eval-rollouts",
                "2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    # A dataset of another game's action set is refused before anything is written.
    _minari_dataset(root, "atari/pong/random-v0", "Pong", 30)
    code = main(
        [
            "import-data",
            "--game",
            "Breakout",
            "--minari",
            "atari/pong/random-v0",
            "--minari-root",
            str(root),
            "--out",
            str(tmp_path / "other"),
        ]
    )
    assert code == 2
    assert "6 actions, but the game has 4" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    # An id that is not on disk is not fetched from the network: one line.
    assert (
        main(
            [
                "import-data",
                "--game",
                "Breakout",
                "--minari",
                "atari/nosuch-v0",
                "--minari-root",
                str(root),
                "--out",
                str(tmp_path / "other"),
            ]
        )
        == 2
    )
    assert "not found locally" in capsys.readouterr().err


def test_grey_frames_are_repeated_over_three_channels(tmp_path: Path) -> None:
    from diamond_env.data.importing import to_frames

    grey: Any = np.arange(2 * 84 * 84, dtype=np.int64).reshape(2, 84, 84) % 256
    frames = to_frames(grey.astype(np.uint8), "x")
    assert frames.shape == (2, 64, 64, 3)
    assert (frames[..., 0] == frames[..., 2]).all()
