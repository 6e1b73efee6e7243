"""The example scripts run end to end (as a user runs them: a subprocess) on a tiny checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diamond_env.evaluation.real_game import SB3Policy, load_agent

pytestmark = pytest.mark.e2e  # a slow end-to-end run: left out of `make test-fast`

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCORE = r"return\s+(-?\d+\.\d) ±\s+(\d+\.\d)\s+human-normalised (-?\d+\.\d{3})"


def test_ppo_in_dream_trains_saves_and_scores_in_the_real_game(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "agent"
    cmd = [
        sys.executable,
        str(EXAMPLES / "ppo_in_dream.py"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--steps",
        "64",
        "--num-envs",
        "2",
        "--eval-episodes",
        "1",
        "--seed",
        "3",
        "--out",
        str(out),
    ]
    # one torch thread: on a shared 2-core box, 2 threads competing with other jobs run ~7x slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    lines = proc.stdout.splitlines()
    assert "real Breakout, 1 full games each:" in lines
    ppo = next(line for line in lines if "PPO (dream-trained)" in line)
    rand = next(line for line in lines if "random policy" in line)
    for line in (ppo, rand):
        match = re.search(SCORE, line)
        assert match, line
        mean, std, hns = (float(g) for g in match.groups())
        assert std == 0.0  # one game
        # human-normalised as docs/method.md §6: (score - 1.7) / (30.5 - 1.7) for Breakout
        assert hns == pytest.approx((mean - 1.7) / 28.8, abs=1e-3)

    meta = json.loads((out / "agent.json").read_text())
    assert meta["kind"] == "sb3" and meta["algo"] == "ppo" and meta["n_stack"] == 4
    assert meta["game"] == "Breakout"
    policy, info = load_agent(out)
    assert isinstance(policy, SB3Policy)
    assert info["observation_shape"] == [12, 64, 64]  # 4 stacked channel-first RGB frames
    assert info["num_timesteps"] >= 64  # trained on at least --steps dream steps
    policy.reset(np.ones(2, dtype=bool))
    actions = policy(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    assert actions.shape == (2,) and ((0 <= actions) & (actions < 4)).all()


def test_plain_gymnasium_loop_and_subprocess_workers(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(EXAMPLES / "plain_gymnasium_loop.py"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--steps",
        "24",
        "--num-envs",
        "3",
        "--workers",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batched: 3 envs" in proc.stdout and "obs (3, 64, 64, 3) uint8" in proc.stdout
    assert "subprocess workers: 2 envs stepped, obs (2, 64, 64, 3) uint8" in proc.stdout


def test_own_env_script_goes_from_an_env_to_a_scored_agent(tmp_path: Path) -> None:
    """examples/own_env.sh with tiny budgets: collect CartPole-v1 through its frames, train a
    world model, PPO in its dream, score it in the real env with its baselines."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "OUT": str(tmp_path / "run"),
        "REAL_STEPS": "200",
        "PRESET": "tiny",
        "WM_STEPS": "2",
        "AGENT_STEPS": "128",
        "EPISODES": "2",
    }
    proc = subprocess.run(
        ["bash", str(EXAMPLES / "own_env.sh")], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "ppo" / "eval.json").read_text())
    assert result["game"] == "CartPole-v1" and len(result["returns"]) == 2
    assert "random" in result["baselines"]
