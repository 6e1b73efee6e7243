"""``diamond-env demo`` at the tiny preset and budgets of a few steps: every stage runs, the report
shows real scores, fidelity figures and its images, and a re-run skips finished stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diamond_env.cli.main import main
from diamond_env.run import paths
from diamond_env.run.metrics import read_metrics

pytestmark = pytest.mark.e2e  # a slow end-to-end run: left out of `make test-fast`


def test_demo_end_to_end_then_rerun_then_in_a_shipped_dream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing ships: every stage runs in the fresh dream, and a re-run skips finished stages.
    Then the fresh model and agent are shipped (as if in the package): that run directory refuses
    to mix dreams, and a new demo trains its agents in the shipped dream, scores the shipped agent
    and compares the shipped and the fresh model on the same held-out games."""
    monkeypatch.setattr(paths, "PRETRAINED_ROOT", tmp_path / "nothing_ships")
    run = tmp_path / "demo"
    args = [
        "demo",
        "--run-dir",
        str(run),
        "--preset",
        "tiny",
        "--real-steps",
        "600",
        "--heldout-steps",
        "300",
        "--wm-steps",
        "4",
        "--agent-steps",
        "2",
        "--ppo-dream-steps",
        "256",
        "--eval-episodes",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    # stages are budgeted in steps (minutes only cap them): a loaded machine does the same work
    assert json.loads((run / "wm" / "eval_wm.json").read_text())["grad_steps"] == 4
    assert [r["step"] for r in read_metrics(run / "actor_critic", kind="train")][-1] == 2
    assert json.loads((run / "ppo_dream" / "agent.json").read_text())["num_timesteps"] >= 256
    scores = json.loads((run / "scores.json").read_text())
    assert set(scores) == {"random", "actor_critic", "ppo_dream", "ppo_real"}
    assert all(s["episodes"] == 1 and s["lengths"][0] > 0 for s in scores.values())
    ppo_real = json.loads((run / "ppo_real" / "agent.json").read_text())
    assert ppo_real["real_steps"] == 600
    report = (run / "report.md").read_text()
    assert "open-loop PSNR, 1 steps after the context" in report and "SB3 PPO" in report
    assert "World model does NOT beat the trivial baselines" in report  # 4 gradient steps
    assert "| action shares, % (NOOP / FIRE / RIGHT / LEFT) |" in report
    assert all(sum(s["action_counts"]) == s["lengths"][0] for s in scores.values())
    for image in ("learning_curves.png", "real_vs_dream.gif", "actor_critic_real.gif"):
        assert (run / image).stat().st_size > 0 and image in report
    timings = json.loads((run / "timings.json").read_text())
    assert main(args) == 0  # finished stages are skipped
    again = json.loads((run / "timings.json").read_text())
    assert {
        k: v for k, v in again.items() if k not in ("collect", "collect_heldout", "figures")
    } == {k: v for k, v in timings.items() if k not in ("collect", "collect_heldout", "figures")}

    assert set(json.loads((run / "fidelity.json").read_text())) == {"fresh"}

    shipped = tmp_path / "shipped" / "Breakout"
    shutil.copytree(run / "wm" / "world_model", shipped / "world_model")
    shutil.copytree(run / "actor_critic", shipped / "agent")
    card = '{"training": {"grad_steps": 4, "minutes": 0.1}}'
    (shipped / "card.json").write_text(card, encoding="utf-8")
    monkeypatch.setattr(paths, "PRETRAINED_ROOT", tmp_path / "shipped")
    assert main(args) == 2  # its agents trained in the fresh dream: not silently mixed

    run = tmp_path / "demo_shipped"
    args = [
        "demo",
        "--run-dir",
        str(run),
        "--preset",
        "tiny",
        "--real-steps",
        "300",
        "--heldout-steps",
        "200",
        "--wm-steps",
        "2",
        "--agent-steps",
        "1",
        "--ppo-dream-steps",
        "128",
        "--eval-episodes",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    dream = shipped / "world_model"
    for agent in ("actor_critic", "ppo_dream"):
        identity = json.loads((run / agent / "world_model_id.json").read_text())
        assert identity["checkpoint"] == str(dream)
    scores = json.loads((run / "scores.json").read_text())
    assert set(scores) == {"random", "actor_critic", "ppo_dream", "ppo_real", "shipped_agent"}
    fidelity = json.loads((run / "fidelity.json").read_text())
    assert set(fidelity) == {"fresh", "shipped"}
    assert fidelity["shipped"]["checkpoint"] == str(dream)
    report = (run / "report.md").read_text()
    assert "world model shipped inside the package" in report
    assert "### Shipped world model" in report and "### Fresh world model" in report
    assert "| copy the last frame / majority class |" in report
    assert "the shipped agent" in report
