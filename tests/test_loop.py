"""The full loop (docs/method.md §5) at the tiny preset: collect → world model → agent → real evaluation,
with the real-step budget, the run directory, a loadable agent, and resume after a stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diamond_env.data.dataset import EpisodeDataset
from diamond_env.evaluation.real_game import cmd_evaluate
from diamond_env.run.checkpoint import load_resume_state
from diamond_env.run.metrics import read_metrics
from diamond_env.training.loop import TrainOptions, train

pytestmark = pytest.mark.e2e  # a slow end-to-end run: left out of `make test-fast`

# one denoising step per dreamed frame, and a first epoch as short as the others (tiny: 20 world-
# model and 10 actor-critic steps, 0.8 s each on one core): the loop's logic is under test here,
# not the sampler or the schedule
FAST = (
    "sampler.num_steps=1 loop.first_epoch_denoiser_steps=5 loop.first_epoch_rew_end_steps=5 "
    "loop.first_epoch_actor_critic_steps=5"
)


def test_tiny_loop_end_to_end_then_evaluate(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    opts = TrainOptions(
        game="Breakout",
        preset="tiny",
        run_dir=str(run_dir),
        real_steps=600,
        num_contexts=16,
        progress=False,
        overrides=FAST,
    )
    result = train(opts)
    assert result["finished"] and result["episodes"] == 2  # tiny: final_eval_episodes
    dataset = EpisodeDataset.open(run_dir / "dataset")
    assert dataset.num_steps == 600  # the budget is spent, never exceeded
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["returns"] == result["returns"] and saved["hns"] is not None
    state = load_resume_state(run_dir / "resume.pt")
    # initial 200-400 steps, then 100 per epoch up to 600, then 1 extra epoch
    assert state["epoch"] == state["total_epochs"] >= 3
    kinds = {m["kind"] for m in read_metrics(run_dir)}
    assert {"train", "collect", "final_eval"} <= kinds
    train_rows = read_metrics(run_dir, kind="train")
    assert "actor_critic/loss" in train_rows[-1] and "denoiser/loss" in train_rows[-1]
    again = cmd_evaluate(run_dir / "actor_critic", None, 1, None, seed=3, progress=False)
    assert again.episodes == 1 and again.game == "Breakout"
    with pytest.raises(ValueError, match="--resume"):
        train(opts)


def test_stop_then_resume_finishes_within_budget(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    base = dict(
        game="Breakout",
        preset="tiny",
        run_dir=str(run_dir),
        real_steps=500,
        num_contexts=16,
        progress=False,
        overrides=FAST,
    )
    with pytest.raises(FileNotFoundError, match="resume.pt"):
        train(TrainOptions(**base, resume=True))  # type: ignore[arg-type]
    stopped = train(TrainOptions(**base, max_minutes=1e-6))  # type: ignore[arg-type]
    assert not stopped["finished"] and stopped["epoch"] == 1
    with pytest.raises(ValueError, match="real_steps"):
        train(TrainOptions(**{**base, "real_steps": 700}, resume=True))  # type: ignore[arg-type]
    done = train(TrainOptions(**base, resume=True))  # type: ignore[arg-type]
    assert done["finished"] and done["real_steps"] == 500
    epochs = [m["step"] for m in read_metrics(run_dir, kind="train")]
    assert epochs == list(range(1, len(epochs) + 1))  # no epoch trained twice


def test_initial_collection_rule_is_diamonds() -> None:
    """DIAMOND stops the initial collection once sum(sorted(counts_rew)[:-1]) >= 10
    (src/trainer.py:283): the signs other than the most frequent one, summed."""
    from types import SimpleNamespace

    from diamond_env.training.loop import minority_rewards

    def count(counts: dict[int, int]) -> int:
        return minority_rewards(SimpleNamespace(reward_counts=counts))  # type: ignore[arg-type]

    assert count({-1: 6, 0: 990, 1: 4}) == 10  # Pong: enough (min(#-1, #+1) would say 4)
    assert count({-1: 0, 0: 995, 1: 5}) == 5
    assert count({0: 1000}) == 0
    assert count({-1: 0, 0: 3, 1: 20}) == 3  # +1 the majority: the zeros count


def test_paper_schedule_is_diamonds() -> None:
    """config/trainer.yaml of DIAMOND: 50 epochs after the last collection, first-epoch steps
    10,000 / 10,000 / 5,000, 400 per epoch, 100 real steps per epoch, 4 + 1 + 1 denoiser frames
    (num_autoregressive_steps: 1), 19-step reward/end segments, 8,192 preloaded contexts."""
    from diamond_env.config import get_preset

    config = get_preset("paper")
    loop = config.loop
    assert loop.extra_epochs == 50 and loop.steps_per_epoch == 100
    assert (
        loop.first_epoch_denoiser_steps,
        loop.first_epoch_rew_end_steps,
        loop.first_epoch_actor_critic_steps,
        loop.grad_steps_per_epoch,
    ) == (10_000, 10_000, 5_000, 400)
    assert loop.denoiser_seq_len == 6 and loop.rew_end_seq_len == 19
    assert loop.initial_min_minority_rewards == 10
    assert config.imagination.context_preload == 256 * 32
    assert config.sampler.start == "unit" and config.sampler.num_steps == 3
