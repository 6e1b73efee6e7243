"""Real-vs-dream videos on a real tiny checkpoint and real Breakout data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from diamond_env.atari import make_atari_env
from diamond_env.cli.video import (
    GAP,
    TEXT_HEIGHT,
    agent_clip,
    cmd_video,
    open_loop_clip,
    render_clip,
    write_video,
)
from diamond_env.config import get_preset
from diamond_env.data.collect import RandomPolicy
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.world_model.model import WorldModel


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the test machine's two cores are shared (and oversubscription hurts)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def wm(tiny_checkpoint: Path) -> WorldModel:
    return WorldModel.load(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny actor-critic saved as an agent directory."""
    torch.manual_seed(0)
    path: Path = tmp_path_factory.mktemp("agent") / "actor_critic"
    ActorCritic(get_preset("tiny").actor_critic, 4).save(path)
    (path / "agent.json").write_text(json.dumps({"kind": "actor_critic", "game": "Breakout"}))
    return path


def _is_consecutive_run(frames: np.ndarray, obs: np.ndarray) -> bool:
    """Whether ``frames`` (T, 64, 64, 3) occur as consecutive frames of ``obs``."""
    starts = np.flatnonzero((obs[: len(obs) - len(frames) + 1] == frames[0]).all(axis=(1, 2, 3)))
    return any(np.array_equal(obs[s : s + len(frames)], frames) for s in starts)


def test_open_loop_clip_shares_the_context_then_dreams(
    wm: WorldModel, breakout_dataset: EpisodeDataset
) -> None:
    data = breakout_dataset.load_all()
    L, horizon, rows = wm.num_context, 3, 2
    clip = open_loop_clip(wm, data, horizon=horizon, num_rollouts=rows, seed=0)
    assert len(clip) == L + horizon == len(clip.captions)
    assert clip.left.shape == clip.right.shape == (L + horizon, 64 * rows, 64, 3)
    assert clip.shared == L
    np.testing.assert_array_equal(clip.left[:L], clip.right[:L])
    for t in range(L, L + horizon):  # an untrained denoiser dreams noise, far from the real frame
        diff = np.abs(clip.left[t].astype(int) - clip.right[t].astype(int)).mean()
        assert diff > 10, (t, diff)
    for r in range(rows):  # the left column is real play: consecutive frames of the dataset
        assert _is_consecutive_run(clip.left[:, 64 * r : 64 * (r + 1)], data.obs)


def test_agent_clip_starts_both_sides_from_the_same_real_frames(wm: WorldModel) -> None:
    L, steps = wm.num_context, 3
    clip = agent_clip(wm, RandomPolicy(wm.num_actions, seed=0), steps=steps, seed=5)
    assert len(clip) == L + steps  # the real game cannot end in 3 steps
    assert clip.left.shape == (L + steps, 64, 64, 3)
    np.testing.assert_array_equal(clip.left[:L], clip.right[:L])
    assert not np.array_equal(clip.left[L:], clip.right[L:])
    env = make_atari_env("Breakout", 1, train=False)
    first, _ = env.reset(seed=5)
    env.close()
    np.testing.assert_array_equal(clip.left[0], first[0])  # the real game, seeded
    assert clip.captions[-1].startswith(f"step {steps}: return ")


def test_render_clip_upscales_and_frames_the_columns(
    wm: WorldModel, breakout_dataset: EpisodeDataset
) -> None:
    clip = open_loop_clip(wm, breakout_dataset.load_all(), horizon=2, num_rollouts=1)
    frames = render_clip(clip, scale=3)
    assert len(frames) == len(clip)
    assert frames[0].shape == (2 * TEXT_HEIGHT + 64 * 3, 2 * 64 * 3 + GAP, 3)
    left = frames[-1][TEXT_HEIGHT : TEXT_HEIGHT + 192, :192]
    right = frames[-1][TEXT_HEIGHT : TEXT_HEIGHT + 192, 192 + GAP :]
    np.testing.assert_array_equal(left[::3, ::3], clip.left[-1])  # nearest-neighbour x3
    np.testing.assert_array_equal(left[2::3, 1::3], clip.left[-1])
    np.testing.assert_array_equal(right[::3, ::3], clip.right[-1])
    assert (frames[-1][TEXT_HEIGHT:-TEXT_HEIGHT, 192 : 192 + GAP] == 255).all()


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_cmd_video_writes_both_clips(
    suffix: str,
    tiny_checkpoint: Path,
    breakout_dataset: EpisodeDataset,
    agent_dir: Path,
    tmp_path: Path,
) -> None:
    L, horizon, steps = 4, 3, 2
    out = cmd_video(
        tiny_checkpoint,
        breakout_dataset.root,
        tmp_path / f"v{suffix}",
        agent=agent_dir,
        horizon=horizon,
        num_rollouts=2,
        agent_steps=steps,
        scale=2,
    )
    assert out == tmp_path / f"v{suffix}" and out.is_file()
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was renamed
    width, height = 2 * 128 + GAP, 2 * TEXT_HEIGHT + 2 * 128  # two rollouts stacked
    expected = (L + horizon) + (L + steps)
    if suffix == ".gif":
        with Image.open(out) as im:
            assert (im.n_frames, im.size) == (expected, (width, height))
    else:
        cap = cv2.VideoCapture(str(out))
        assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
            width,
            height,
        )
        count = 0
        while cap.read()[0]:
            count += 1
        cap.release()
        assert count == expected


def test_bad_arguments_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="out: expected a file ending in"):
        write_video([frame], tmp_path / "v.avi")
    with pytest.raises(ValueError, match="frames: expected at least one frame"):
        write_video([], tmp_path / "v.gif")
    with pytest.raises(ValueError, match="dataset, agent: expected at least one"):
        cmd_video(tiny_checkpoint, None, tmp_path / "v.gif")
    frames = [frame, np.full((4, 12, 3), 7, np.uint8)]  # sizes differ: padded to (8, 12)
    with Image.open(write_video(frames, tmp_path / "p.gif")) as im:
        assert (im.n_frames, im.size) == (2, (12, 8))
