"""Side-by-side videos of the real game and the world model's dream: ``diamond-env video``.

Two kinds of clip, each two synchronised columns (real on the left, dream on the right):

* :func:`open_loop_clip`: real episodes from a dataset beside what the world model imagines from
  the same ``L`` real context frames fed the same real actions (open loop, no feedback). Each
  column stacks ``num_rollouts`` rollouts vertically.
* :func:`agent_clip`: one agent playing the real game beside the same agent playing the dream.
  The real game is played for ``L - 1`` steps first; the dream starts from those ``L`` real
  frames and actions, so both columns open on the same frames. From then on the agent acts on
  each side's own frames (one policy with two envs: env 0 real, env 1 dream).

The first ``clip.shared`` frames of both columns are the same real frames. :func:`render_clip`
turns a clip into RGB video frames (upscaled, titled, captioned); :func:`write_video` writes
``.mp4`` (OpenCV mp4v) or ``.gif`` (Pillow) atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from diamond_env.atari import make_atari_env
from diamond_env.data.collect import Policy
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.episode import FlatData
from diamond_env.evaluation.wm_eval import open_loop_rollouts
from diamond_env.frames import to_model, to_uint8
from diamond_env.world_model.model import WorldModel

VIDEO_SUFFIXES = (".mp4", ".gif")
TEXT_HEIGHT = 18
"""Pixels of the title strip above the columns and of the caption strip below them."""
GAP = 4
"""White pixels between the two columns (after upscaling)."""


@dataclass(frozen=True)
class Clip:
    """Two synchronised columns of frames.

    ``left``/``right``: uint8 ``(T, H, W, 3)`` with ``H = 64 * rows``; ``titles``: one per column;
    ``captions``: one line per frame; ``shared``: the first ``shared`` frames are the same real
    frames in both columns (the dream's starting context).
    """

    left: np.ndarray
    right: np.ndarray
    titles: tuple[str, str]
    captions: list[str]
    shared: int

    def __len__(self) -> int:
        return int(self.left.shape[0])


def _stack_rows(frames: np.ndarray) -> np.ndarray:
    """``(R, T, h, w, 3)`` -> ``(T, R * h, w, 3)``: rollouts stacked top to bottom."""
    r, t, h, w, c = frames.shape
    return np.ascontiguousarray(frames.transpose(1, 0, 2, 3, 4)).reshape(t, r * h, w, c)


def open_loop_clip(
    wm: WorldModel, data: FlatData, *, horizon: int = 40, num_rollouts: int = 4, seed: int = 0
) -> Clip:
    """Real frames beside frames imagined from the same context and actions (open loop).

    ``horizon`` is cut to what the longest episode of ``data`` allows. Returns a clip of
    ``L + horizon`` frames whose first ``L`` (the real context) agree exactly.
    """
    if horizon < 1 or num_rollouts < 1:
        raise ValueError(
            f"horizon, num_rollouts: expected positive ints, got {horizon}, {num_rollouts}"
        )
    L = wm.num_context
    horizon = min(horizon, int(data.lengths.max()) - L)
    if horizon < 1:
        raise ValueError(
            f"data: expected an episode longer than the {L} context frames, got lengths "
            f"{data.lengths.tolist()}"
        )
    ro = open_loop_rollouts(wm, data, num_rollouts=num_rollouts, horizon=horizon, seed=seed)
    real = _stack_rows(np.concatenate([ro.context, ro.real], axis=1))
    dream = _stack_rows(np.concatenate([ro.context, ro.imagined], axis=1))
    captions = [f"real context {t + 1}/{L}" for t in range(L)]
    captions += [f"open loop, step +{k + 1}: same actions as real" for k in range(horizon)]
    return Clip(real, dream, ("real", "dream"), captions, shared=L)


@torch.no_grad()
def agent_clip(wm: WorldModel, policy: Policy, *, steps: int = 200, seed: int = 0) -> Clip:
    """One agent in the real game (left) beside the same agent in the dream (right).

    ``policy`` is driven with two envs (row 0 real, row 1 dream) and reset once at the start.
    The real game (``wm.game``, full games, seeded ``seed``) is played ``L - 1`` steps, then
    both sides are stepped ``steps`` times; a side that ends (real game over, dreamt
    termination) shows its last frame from then on. Returns ``L + steps`` frames (fewer when
    both sides end early); the first ``L`` agree exactly.
    """
    if steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps}")
    L, device = wm.num_context, wm.device
    env = make_atari_env(wm.game, 1, train=False)
    try:
        obs, _ = env.reset(seed=seed)
        policy.reset(np.ones(2, dtype=bool))
        frames, acts = [obs[0]], []
        for _ in range(L - 1):  # the shared real start: L frames, L - 1 actions
            act = np.asarray(policy(np.stack([obs[0], obs[0]])), dtype=np.int64)
            obs, *_ = env.step(act[:1])
            frames.append(obs[0])
            acts.append(int(act[0]))
        d_obs = to_model(torch.from_numpy(np.stack(frames))[None].to(device))
        d_act = torch.tensor([[*acts, 0]], dtype=torch.int64, device=device)
        state = wm.burn_in(d_obs, d_act)
        gen = torch.Generator(device=device).manual_seed(seed)
        real, dream = list(frames), list(frames)
        captions = [f"same real start {t + 1}/{L}" for t in range(L)]
        ret, over = [0.0, 0.0], [False, False]
        for k in range(steps):
            act = np.asarray(policy(np.stack([real[-1], dream[-1]])), dtype=np.int64)
            if not over[0]:
                obs, rew, _, _, info = env.step(act[:1])
                ret[0] += float(rew[0])
                over[0] = bool(info["game_over"][0])
                real.append(info["final_obs"][0] if over[0] else obs[0])
            else:
                real.append(real[-1])
            if not over[1]:
                d_act[:, -1] = int(act[1])
                out = wm.step(d_obs, d_act, state, generator=gen)
                state, ret[1] = out.state, ret[1] + float(out.reward[0])
                over[1] = bool(out.termination[0])
                d_obs = torch.cat([d_obs[:, 1:], out.next_obs[:, None]], dim=1)
                d_act = torch.cat([d_act[:, 1:], torch.zeros_like(d_act[:, :1])], dim=1)
                dream.append(to_uint8(out.next_obs[0]).cpu().numpy())
            else:
                dream.append(dream[-1])
            ends = "".join(
                f", {n} ended" for n, o in zip(("real", "dream"), over, strict=True) if o
            )
            captions.append(f"step {k + 1}: return {ret[0]:g} | {ret[1]:g}{ends}")
            if all(over):
                break
    finally:
        env.close()
    return Clip(np.stack(real), np.stack(dream), ("agent, real game", "agent, dream"), captions, L)


def _text(strip: np.ndarray, text: str, x: int) -> None:
    cv2.putText(
        strip,
        text,
        (x, TEXT_HEIGHT - 5),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )


def render_clip(clip: Clip, *, scale: int = 3) -> list[np.ndarray]:
    """RGB uint8 video frames ``(TEXT_HEIGHT + H*scale + TEXT_HEIGHT, 2*W*scale + GAP, 3)``:
    column titles on top, the two columns upscaled (nearest) with a white gap, a caption below."""
    if scale < 1:
        raise ValueError(f"scale: expected a positive int, got {scale}")
    h, w = clip.left.shape[1] * scale, clip.left.shape[2] * scale
    width = 2 * w + GAP
    title = np.zeros((TEXT_HEIGHT, width, 3), np.uint8)
    _text(title, clip.titles[0], 4)
    _text(title, clip.titles[1], w + GAP + 4)
    frames = []
    for t in range(len(clip)):
        left, right = (
            np.repeat(np.repeat(x[t], scale, 0), scale, 1) for x in (clip.left, clip.right)
        )
        middle = np.concatenate([left, np.full((h, GAP, 3), 255, np.uint8), right], axis=1)
        caption = np.zeros((TEXT_HEIGHT, width, 3), np.uint8)
        _text(caption, clip.captions[t], 4)
        frames.append(np.concatenate([title, middle, caption], axis=0))
    return frames


def _pad(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width, 3), np.uint8)
    out[: frame.shape[0], : frame.shape[1]] = frame
    return out


def write_video(
    frames: Sequence[np.ndarray], path: str | os.PathLike[str], *, fps: int = 15
) -> Path:
    """Write RGB uint8 frames to ``.mp4`` (mp4v) or ``.gif``; frames of different sizes are padded
    (black, bottom-right) to the largest. Written to a temp file, then renamed."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"out: expected a file ending in {VIDEO_SUFFIXES}, got {str(path)!r}")
    if not frames:
        raise ValueError("frames: expected at least one frame, got none")
    height, width = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    padded = [_pad(f, height, width) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(f).quantize() for f in padded]
            images[0].save(
                tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
            )
        else:
            writer = cv2.VideoWriter(
                str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height)
            )
            if not writer.isOpened():
                raise RuntimeError(f"video: OpenCV cannot write mp4v to {tmp}")
            for f in padded:
                writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            writer.release()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def recent_episodes(dataset: EpisodeDataset, min_length: int, count: int = 8) -> FlatData:
    """The last ``count`` episodes of ``dataset`` with at least ``min_length`` steps (the most
    recent: held out by ``train_wm``); the longest one when none is long enough."""
    lengths = dataset.episode_lengths
    if len(lengths) == 0:
        raise ValueError(f"dataset {dataset.root}: expected at least one episode, got none")
    long = [int(e) for e in np.flatnonzero(lengths >= min_length)][-count:]
    return dataset.load_all(long or [int(np.argmax(lengths))])


def cmd_video(
    checkpoint: str | os.PathLike[str],
    dataset: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    agent: str | os.PathLike[str] | None = None,
    horizon: int = 40,
    num_rollouts: int = 4,
    agent_steps: int = 200,
    seed: int = 0,
    scale: int = 3,
    fps: int = 15,
    device: str = "cpu",
    trust_pickle: bool = False,
) -> Path:
    """What ``diamond-env video`` does: the open-loop clip from ``dataset`` (when given), then the
    agent clip (when ``agent`` is given), one after the other in ``out`` (.mp4 or .gif).
    ``trust_pickle``: see :func:`~diamond_env.evaluation.real_game.load_agent`."""
    from diamond_env.evaluation.real_game import load_agent

    if dataset is None and agent is None:
        raise ValueError("dataset, agent: expected at least one of them, got neither")
    if Path(out).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"out: expected a file ending in {VIDEO_SUFFIXES}, got {str(out)!r}")
    # the agent first: a refused agent costs no world-model load
    policy = (
        None
        if agent is None
        else load_agent(agent, device=device, seed=seed, trust_pickle=trust_pickle)[0]
    )
    wm = WorldModel.load(checkpoint, device=device).eval()
    frames: list[np.ndarray] = []
    if dataset is not None:
        episodes = EpisodeDataset.open(dataset)
        if episodes.game != wm.game:
            raise ValueError(f"dataset {dataset} holds {episodes.game}, the model is of {wm.game}")
        data = recent_episodes(episodes, wm.num_context + horizon)
        clip = open_loop_clip(wm, data, horizon=horizon, num_rollouts=num_rollouts, seed=seed)
        frames += render_clip(clip, scale=scale)
    if policy is not None:
        n = getattr(policy, "num_actions", wm.num_actions)
        if n != wm.num_actions:
            raise ValueError(f"agent: {agent} has {n} actions, {wm.game} has {wm.num_actions}")
        frames += render_clip(agent_clip(wm, policy, steps=agent_steps, seed=seed), scale=scale)
    return write_video(frames, out, fps=fps)
