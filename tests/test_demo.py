"""``diamond-env demo`` at the tiny preset and budgets of a few steps: every stage runs, the report
shows real scores, fidelity figures and its images, and a re-run skips finished stages."""

from __future__ import annotations

import json
from pathlib import Path

from diamond_env.cli import main
from diamond_env.metrics import read_metrics


def test_demo_end_to_end_then_rerun(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    args = ["demo", "--run-dir", str(run), "--preset", "tiny", "--real-steps", "600",
            "--wm-steps", "4", "--agent-steps", "2", "--ppo-dream-steps", "256",
            "--eval-episodes", "1", "--no-progress"]  # fmt: skip
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
    for image in ("learning_curves.png", "real_vs_dream.gif", "actor_critic_real.gif"):
        assert (run / image).stat().st_size > 0 and image in report
    timings = json.loads((run / "timings.json").read_text())
    assert main(args) == 0  # finished stages are skipped
    again = json.loads((run / "timings.json").read_text())
    assert {k: v for k, v in again.items() if k not in ("collect", "figures")} == {
        k: v for k, v in timings.items() if k not in ("collect", "figures")
    }
