"""Segment sampling: exact padding at episode ends, recency weights, seeding, torch conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diamond_env.config import get_preset
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.episode import Episode, FlatData
from diamond_env.data.segments import (
    SegmentSampler,
    life_index,
    recency_episode_weights,
    to_torch,
)


def coded_episode(e: int, steps: int, side: int = 4, life_loss_at: tuple[int, ...] = ()) -> Episode:
    """Frame f of episode e has channel 0 = e + 1, channel 1 = f + 1; action/reward code (e, t)."""
    obs = np.zeros((steps + 1, side, side, 3), dtype=np.uint8)
    obs[..., 0] = e + 1
    obs[..., 1] = (np.arange(steps + 1) + 1)[:, None, None]
    term = np.zeros(steps, dtype=bool)
    term[-1] = True
    life_loss = np.zeros(steps, dtype=bool)
    life_loss[list(life_loss_at)] = True
    return Episode(
        obs=obs,
        act=100 * (e + 1) + np.arange(steps, dtype=np.int64),
        rew=(1000 * (e + 1) + np.arange(steps)).astype(np.float32),
        term=term,
        trunc=np.zeros(steps, dtype=bool),
        life_loss=life_loss,
    )


def check_against_reference(batch, data: FlatData, pad_after_end: bool) -> None:
    """Recompute every entry of a batch from (life, start) with plain loops."""
    lives = life_index(data)
    num_frames = batch.obs.shape[1]
    for b in range(len(batch.episode)):
        e = int(batch.episode[b])
        n, s0, f0 = (int(x[e]) for x in (lives.lengths, lives.step_starts, lives.frame_starts))
        last_real = n if pad_after_end else n - 1
        for i in range(num_frames):
            f = int(batch.start[b]) + i
            real = 0 <= f <= last_real
            assert batch.mask[b, i] == real
            np.testing.assert_array_equal(batch.obs[b, i], data.obs[f0 + f] if real else 0)
        for i in range(num_frames - 1):
            t = int(batch.start[b]) + i
            real = 0 <= t < n and batch.mask[b, i]
            assert batch.act[b, i] == (data.act[s0 + t] if real else 0)
            assert batch.rew[b, i] == (data.rew[s0 + t] if real else 0)
            end = bool(data.term[s0 + t] or data.life_loss[s0 + t]) if real else False
            assert batch.end[b, i] == end
            if end:
                assert t == n - 1  # an end only ever closes a life


def test_denoiser_segments_pad_only_before_start() -> None:
    """DIAMOND's rule (src/data/batch_sampler.py:65-68): t ~ U[0, T), stop = min(T, t + 1 +
    U[0, S)), start = stop - S, over the T frames an action was taken at."""
    data = FlatData.from_episodes([coded_episode(0, 3)])
    sampler = SegmentSampler(data, 5, pad_after_end=False, seed=0)
    batch = sampler.sample(400)
    assert batch.obs.shape == (400, 5, 4, 4, 3) and batch.act.shape == (400, 4)
    assert set(batch.start.tolist()) == {-4, -3, -2}  # stop in {1, 2, 3}
    expected = {
        -4: [False, False, False, False, True],
        -3: [False, False, False, True, True],
        -2: [False, False, True, True, True],
    }
    for start, mask in expected.items():
        rows = batch.mask[batch.start == start]
        assert (rows == np.array(mask)).all()
    # P(stop = 3) = P(t + 1 + U[0, 5) >= 3) = 1 - (1/3)(2/5 + 1/5) = 0.8
    assert abs(np.mean(batch.start == -2) - 0.8) < 0.06
    b = int(np.flatnonzero(batch.start == -3)[0])
    assert batch.obs[b, :3].max() == 0 and batch.act[b].tolist() == [0, 0, 0, 100]
    assert batch.obs[b, 3, 0, 0].tolist() == [1, 1, 0] and batch.obs[b, 4, 0, 0].tolist() == [
        1,
        2,
        0,
    ]
    check_against_reference(batch, data, pad_after_end=False)

    long = FlatData.from_episodes([coded_episode(0, 10)])
    batch = SegmentSampler(long, 5, pad_after_end=False, seed=1).sample(2000)
    targets = batch.start + 4
    assert set(targets.tolist()) == set(range(10))  # frame 10 (after the last action) never
    assert batch.mask[:, -1].all()


def test_lives_are_episodes() -> None:
    """A life loss ends an episode for every sampler (DIAMOND stores one episode per life)."""
    data = FlatData.from_episodes([coded_episode(0, 6, life_loss_at=(2,)), coded_episode(1, 3)])
    lives = life_index(data)
    assert lives.lengths.tolist() == [3, 3, 3]
    assert lives.step_starts.tolist() == [0, 3, 6] and lives.frame_starts.tolist() == [0, 3, 7]
    assert life_index(data, split_lives=False).lengths.tolist() == [6, 3]
    for pad_after_end, seq_len in ((False, 6), (True, 5)):
        batch = SegmentSampler(data, seq_len, pad_after_end=pad_after_end, seed=2).sample(500)
        check_against_reference(batch, data, pad_after_end)
        assert set(batch.episode.tolist()) == {0, 1, 2}
        first_life = batch.episode == 0
        frame_code = batch.obs[first_life][..., 0, 0, 1]  # frame index + 1, 0 where padded
        assert frame_code.max() <= 4  # frames 0..3 of game 0 only: nothing after the life loss


def test_rew_end_segments_may_run_past_both_ends() -> None:
    data = FlatData.from_episodes([coded_episode(0, 3, life_loss_at=(1,))])
    batch = SegmentSampler(data, 4, pad_after_end=True, seed=0).sample(400)
    first = batch.episode == 0  # the life of steps 0, 1 (frames 0..2)
    assert set(batch.start[first].tolist()) == {-3, -2, -1, 0, 1}
    b = int(np.flatnonzero(first & (batch.start == 1))[0])  # frames 1, 2 | 3, 4 beyond the life
    assert batch.mask[b].tolist() == [True, True, False, False]
    assert batch.step_mask[b].tolist() == [True, False, False]
    assert batch.act[b].tolist() == [101, 0, 0] and batch.rew[b].tolist() == [1001.0, 0, 0]
    assert batch.end[b].tolist() == [True, False, False]  # the life loss ends the life
    b = int(np.flatnonzero(first & (batch.start == -2))[0])  # frames -2, -1 | 0, 1
    assert batch.mask[b].tolist() == [False, False, True, True]
    assert batch.step_mask[b].tolist() == [False, False, True]
    assert batch.act[b].tolist() == [0, 0, 100]
    check_against_reference(batch, data, pad_after_end=True)


def test_several_episodes_exact_against_reference() -> None:
    data = FlatData.from_episodes([coded_episode(e, n) for e, n in enumerate([1, 6, 2, 9, 3])])
    for pad_after_end, seq_len in ((False, 6), (True, 7)):
        sampler = SegmentSampler(data, seq_len, pad_after_end=pad_after_end, seed=3)
        check_against_reference(sampler.sample(300), data, pad_after_end)


def test_recency_weights_exact_and_empirical() -> None:
    w = (0.1, 0.1, 0.1, 0.7)
    lengths8 = np.arange(1, 9, dtype=np.int64)
    np.testing.assert_allclose(recency_episode_weights(lengths8, w), [0.05] * 6 + [0.35] * 2)
    five = recency_episode_weights(np.ones(5, dtype=np.int64), w)
    np.testing.assert_allclose(five, [0.1, 0.1, 0.1, 0.35, 0.35])  # remainder to the newest
    nine = recency_episode_weights(np.ones(9, dtype=np.int64), w)
    np.testing.assert_allclose(nine, [0.05] * 6 + [0.7 / 3] * 3)
    four = recency_episode_weights(np.array([1, 1, 1, 5]), w)  # exactly enough: one per quarter
    np.testing.assert_allclose(four, [0.1, 0.1, 0.1, 0.7])
    three = recency_episode_weights(np.array([1, 2, 7]), w)  # too few: uniform over steps
    np.testing.assert_allclose(three, [0.1, 0.2, 0.7])

    data = FlatData.from_episodes([coded_episode(e, int(n)) for e, n in enumerate(lengths8)])
    batch = SegmentSampler(data, 5, pad_after_end=False, seed=0).sample(20_000)
    freq = np.bincount(batch.episode, minlength=8) / 20_000
    np.testing.assert_allclose(freq, [0.05] * 6 + [0.35] * 2, atol=0.015)

    few = FlatData.from_episodes([coded_episode(e, n) for e, n in enumerate([1, 2, 7])])
    batch = SegmentSampler(few, 5, pad_after_end=False, seed=0).sample(20_000)
    freq = np.bincount(batch.episode, minlength=3) / 20_000
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.7], atol=0.015)  # uniform over steps


def test_seeded_batches_repeat() -> None:
    data = FlatData.from_episodes([coded_episode(e, n) for e, n in enumerate([5, 8, 3, 9, 4])])

    def batches(seed: int) -> list:
        sampler = SegmentSampler(data, 6, pad_after_end=True, seed=seed)
        return [sampler.sample(16) for _ in range(3)]

    first, again, other = batches(7), batches(7), batches(8)
    for x, y in zip(first, again, strict=True):
        for name in ("obs", "act", "rew", "end", "mask", "episode", "start"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    assert any(not np.array_equal(x.start, z.start) for x, z in zip(first, other, strict=True))


def test_to_torch_and_a_real_dataset(tmp_path: Path) -> None:
    ds = EpisodeDataset.create(tmp_path, "Pong", {"frameskip": 4}, 2, ["NOOP", "FIRE"])
    for e, n in enumerate([7, 12]):
        ep = coded_episode(e, n, side=64)
        ds.append(Episode(**{**vars(ep), "act": ep.act % 2}))
    loop = get_preset("tiny").loop
    data = ds.load_all()
    denoiser = SegmentSampler(data, loop.denoiser_seq_len, pad_after_end=False, seed=0)
    rew_end = SegmentSampler(data, loop.rew_end_seq_len, pad_after_end=True, seed=0)
    batch = denoiser.sample(8)
    seg = to_torch(batch)
    assert seg.obs.shape == (8, 6, 3, 64, 64) and seg.obs.dtype == torch.float32
    assert seg.act.dtype == torch.int64 and seg.act.shape == (8, 5)
    assert (~seg.mask).any() and (seg.obs[~seg.mask] == 0.0).all()  # DIAMOND's padding value
    frames = torch.from_numpy(batch.obs).permute(0, 1, 4, 2, 3).double()
    real = seg.mask[:, :, None, None, None].expand_as(seg.obs)
    torch.testing.assert_close(
        seg.obs.double()[real], (frames / 127.5 - 1)[real], atol=1e-6, rtol=0
    )
    rseg = rew_end.sample(8)
    tseg = to_torch(rseg)
    assert tseg.obs.shape == (8, 9, 3, 64, 64) and tseg.rew.dtype == torch.float32
    assert torch.equal(tseg.step_mask, torch.from_numpy(rseg.step_mask))
    assert tseg.end.dtype == torch.bool and tseg.mask.shape == (8, 9)


def test_invalid_arguments() -> None:
    data = FlatData.from_episodes([coded_episode(0, 3)])
    with pytest.raises(ValueError, match=r"seq_len: expected an int >= 2"):
        SegmentSampler(data, 1, pad_after_end=False)
    with pytest.raises(ValueError, match=r"recency_weights: expected >= 0"):
        SegmentSampler(data, 5, pad_after_end=False, recency_weights=(0.5, -0.1))
    with pytest.raises(ValueError, match=r"batch_size: expected a positive int, got 0"):
        SegmentSampler(data, 5, pad_after_end=False).sample(0)
