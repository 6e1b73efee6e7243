"""FLOP counts against hand computations and the figures of docs/method.md, and the run projection's arithmetic."""

from __future__ import annotations

import dataclasses

import pytest

from diamond_env.config import LoopConfig, SamplerConfig, get_preset
from diamond_env.world_model.flops import (
    ModelFlops,
    count_model_flops,
    denoiser_passes,
    denoiser_sample_flops,
    dream_frame_flops,
    imagination_update_flops,
    loop_counts,
    project_hours,
    rew_end_sample_flops,
)


def test_tiny_actor_critic_count_matches_a_hand_computation() -> None:
    flops = count_model_flops(get_preset("tiny"), 4)
    # channels (8, 8, 16, 16) on 64x64 frames; a multiply-add is 2 FLOPs, biases are not counted
    hand = (
        2 * 3 * 9 * 8 * 64 * 64  # conv_in 3 -> 8 at 64x64
        + 2 * 8 * 9 * 8 * 64 * 64  # block 8 -> 8 at 64x64, then max-pool
        + 2 * 8 * 9 * 8 * 32 * 32  # block 8 -> 8 at 32x32
        + 2 * 8 * 9 * 16 * 16 * 16
        + 2 * 8 * 16 * 16 * 16  # block 8 -> 16 at 16x16 + 1x1 skip
        + 2 * 16 * 9 * 16 * 8 * 8  # block 16 -> 16 at 8x8
        + 2 * 4 * 32 * (16 * 4 * 4 + 32)  # LSTMCell: 4 gates over input 256 and hidden 32
        + 2 * 32 * 4
        + 2 * 32 * 1  # policy (4 actions) and value heads
    )
    assert flops.actor_critic_step == hand


def test_paper_counts_match_spec() -> None:
    config = get_preset("paper")
    flops = count_model_flops(config, 4)
    assert flops.denoiser_forward == pytest.approx(
        6.09e9, rel=0.01
    )  # docs/method.md §2.1: ≈6.1 GFLOP
    frame = dream_frame_flops(flops, denoiser_passes(config.sampler))
    assert frame == 3 * flops.denoiser_forward + flops.rew_end_step
    assert frame == pytest.approx(19e9, rel=0.03)  # docs/method.md §5: ≈19 GFLOP per imagined frame
    # every layer of the reward/end model runs once per transition: a segment of 18 costs 18x
    assert flops.rew_end_segment == (config.loop.rew_end_seq_len - 1) * flops.rew_end_step


def test_presets_are_ordered_by_cost() -> None:
    frames = [
        dream_frame_flops(count_model_flops(get_preset(p), 4), 3)
        for p in ("tiny", "cpu", "small", "paper")
    ]
    assert frames == sorted(frames) and frames[0] < 1e9 < frames[-1] / 10


def test_count_model_flops_rejects_bad_num_actions() -> None:
    with pytest.raises(ValueError, match="num_actions"):
        count_model_flops(get_preset("tiny"), 0)


def test_derived_units_by_hand() -> None:
    flops = ModelFlops(denoiser_forward=10, rew_end_step=1, rew_end_segment=18, actor_critic_step=2)
    assert denoiser_passes(SamplerConfig(num_steps=3)) == 3
    assert denoiser_passes(SamplerConfig(num_steps=3, method="heun")) == 5
    assert dream_frame_flops(flops, 3) == 31
    assert denoiser_sample_flops(flops) == 30 and rew_end_sample_flops(flops) == 54
    config = get_preset("tiny")  # imagination batch 8, horizon 5; 4 context frames
    per_env = 5 * (31 + 3 * 2) + 2 * 3 * (1 + 2) + 2 * 2
    assert imagination_update_flops(flops, config, 3) == 8 * per_env == 8 * 207


def test_loop_counts_of_atari_100k() -> None:
    counts = loop_counts(LoopConfig())
    assert counts.epochs == 1000  # 950 epochs of 100 steps after 5,000 initial steps, then 50
    assert counts.denoiser_steps == counts.rew_end_steps == 10_000 + 999 * 400 == 409_600
    assert counts.actor_critic_steps == 5_000 + 999 * 400
    assert counts.real_steps == 100_000


def test_project_hours_by_hand() -> None:
    counts = dataclasses.replace(
        loop_counts(LoopConfig()),
        denoiser_steps=3600,
        rew_end_steps=7200,
        actor_critic_steps=360,
        real_steps=36_000,
    )
    hours = project_hours(
        counts, denoiser_steps_per_s=1.0, rew_end_steps_per_s=4.0, actor_critic_steps_per_s=0.05
    )
    assert hours == pytest.approx(
        {"denoiser": 1.0, "rew_end": 0.5, "actor_critic": 2.0, "collection": 0.0, "total": 3.5}
    )
    with_collection = project_hours(
        counts,
        denoiser_steps_per_s=1.0,
        rew_end_steps_per_s=4.0,
        actor_critic_steps_per_s=0.05,
        collection_steps_per_s=100.0,
    )
    assert with_collection["collection"] == pytest.approx(0.1)
    assert with_collection["total"] == pytest.approx(3.6)
    with pytest.raises(ValueError, match="actor_critic"):
        project_hours(
            counts, denoiser_steps_per_s=1.0, rew_end_steps_per_s=1.0, actor_critic_steps_per_s=0.0
        )
