"""Figures beside trivial baselines: a model that copies scores exactly the copy baseline, a
perfect one beats it, PSNR pools the MSE, event counts are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_segments import coded_episode

from diamond_env.config import get_preset
from diamond_env.data.episode import Episode, FlatData
from diamond_env.evaluation.fidelity import (
    MAX_PSNR,
    event_scores,
    frame_figures,
    headline,
    pooled_psnr,
    rare_f1,
)
from diamond_env.evaluation.wm_eval import evaluate_world_model, open_loop_rollouts, rollout_figures
from diamond_env.world_model.model import WorldModel, WorldModelStep


def _frames(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_pooled_psnr_is_not_a_mean_of_per_frame_psnrs() -> None:
    real = np.zeros((2, 4, 4, 3), np.uint8)
    pred = real.copy()
    pred[1] = 10  # frame 0 identical, frame 1 off by 10 everywhere: pooled MSE = 50
    assert pooled_psnr(real, pred) == pytest.approx(10 * math.log10(255**2 / 50))
    assert pooled_psnr(real, real) == MAX_PSNR


def test_a_model_that_copies_scores_exactly_the_copy_baseline() -> None:
    context, real = _frames(0, 6, 4, 64, 64, 3), _frames(1, 6, 15, 64, 64, 3)
    copy = np.repeat(context[:, -1:], 15, axis=1)
    fig = frame_figures(context, real, copy, (1, 5, 15))
    assert fig["psnr"] == fig["psnr_copy"] and fig["psnr_curve"] == fig["psnr_copy_curve"]
    dyn = fig["changed_pixels"]
    assert dyn["model_mae"] == dyn["copy_mae"] and dyn["model_psnr"] == dyn["copy_psnr"]
    assert "does NOT beat" in headline(fig) and "changing pixels" in headline(fig)


def test_a_perfect_model_beats_copy() -> None:
    context, real = _frames(2, 3, 4, 64, 64, 3), _frames(3, 3, 15, 64, 64, 3)
    fig = frame_figures(context, real, real.copy(), (1, 5, 15))
    assert all(fig["psnr"][h] == MAX_PSNR > fig["psnr_copy"][h] for h in fig["psnr"])
    assert fig["changed_pixels"]["model_mae"] == 0.0 < fig["changed_pixels"]["copy_mae"]
    labels = np.array([0, 0, 1, 0, -1, 0, 0, 1])
    fig["reward_events"] = event_scores(labels, labels, (-1, 1))
    fig["reward_events"]["rare_f1"] = rare_f1(fig["reward_events"], (-1, 1))
    assert headline(fig).startswith("World model BEATS the trivial baselines")


def test_event_scores_against_hand_counts() -> None:
    target = np.array([0, 0, 0, 1, 1, -1, 0, 0, 0, 0])
    pred = np.array([0, 1, 0, 1, 0, -1, -1, 0, 0, 0])
    ev = event_scores(pred, target, (-1, 1))
    assert ev["majority_class"] == 0 and ev["steps"] == 10
    assert ev["1"] == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
        "predicted": 2,
        "majority_f1": 0.0,
    }
    assert ev["-1"]["precision"] == 0.5 and ev["-1"]["recall"] == 1.0
    assert ev["-1"]["f1"] == pytest.approx(2 / 3)
    assert rare_f1(ev, (-1, 1)) == pytest.approx(2 * 2 / (3 + 4))  # tp 2, support 3, predicted 4
    majority = event_scores(np.zeros(10, int), target, (0,))
    assert majority["0"]["f1"] == pytest.approx(majority["0"]["majority_f1"])


class CopyWorldModel(WorldModel):
    """A real WorldModel whose dream repeats the last frame and never rewards or ends."""

    @torch.no_grad()
    def step(self, obs, act, state, **kwargs):  # type: ignore[no-untyped-def, override]
        n = obs.shape[0]
        _, _, new_state = self.rew_end(obs[:, -1:], act[:, -1:], obs[:, -1:], state)
        zeros = torch.zeros(n)
        return WorldModelStep(obs[:, -1].clone(), zeros, zeros.bool(), new_state)


def test_end_to_end_copy_model_equals_baseline_and_lives_bound_rollouts() -> None:
    episodes = [coded_episode(e, 40, side=64, life_loss_at=(19,)) for e in range(2)]
    data = FlatData.from_episodes([Episode(**{**vars(ep), "act": ep.act % 4}) for ep in episodes])
    wm = CopyWorldModel(get_preset("tiny"), "Breakout", ["NOOP", "FIRE", "RIGHT", "LEFT"])
    ro = open_loop_rollouts(wm, data, num_rollouts=30, horizon=15, seed=0)
    # 4 lives of 20 steps: windows of 4 + 15 frames start at 0, 1 or 2 in a life, all 12 used
    assert ro.real.shape == (12, 15, 64, 64, 3)
    assert (ro.real_end.sum(axis=1) <= 1).all() and ro.real_end[:, :-1].sum() == 0
    fig = rollout_figures(ro)
    assert fig["psnr"] == fig["psnr_copy"]
    assert fig["dream_end_events"]["1"]["predicted"] == 0
    results = evaluate_world_model(wm, data, seq_len=9, batches=1, batch_size=4, num_rollouts=4)
    assert "does NOT beat" in results["headline"]
