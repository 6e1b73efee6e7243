"""``diamond-env train-agent`` and ``evaluate`` through the real CLI: our actor-critic and SB3
agents trained in a real (tiny) dream, saved, loaded and played in the real game."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diamond_env.cli.main import main
from diamond_env.evaluation.real_game import load_agent
from diamond_env.run.metrics import read_metrics


def test_actor_critic_in_the_dream_then_real_evaluation(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ac"
    args = [
        "train-agent",
        "--checkpoint",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--steps",
        "4",
        "--save-every",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    assert json.loads((out / "agent.json").read_text())["kind"] == "actor_critic"
    assert [m["step"] for m in read_metrics(out)] == [4]
    assert main(args) == 2  # an agent is already there
    assert "already holds an agent" in capsys.readouterr().err
    assert main([*args[:5], "--steps", "6", "--save-every", "2", "--resume", "--no-progress"]) == 0
    assert [m["step"] for m in read_metrics(out)] == [4, 6]
    eval_json = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--agent",
                str(out),
                "--episodes",
                "1",
                "--out",
                str(eval_json),
                "--quiet",
                "--baselines",
            ]
        )
        == 0
    )
    report = json.loads(eval_json.read_text())
    assert report["game"] == "Breakout" and report["episodes"] == 1
    assert set(report["baselines"]) == {"random", "action_frequency"}
    assert sum(report["action_counts"]) == report["lengths"][0]
    assert report["reference"]["random"] == pytest.approx(1.7)
    assert "HNS" in capsys.readouterr().out


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_sb3_in_the_dream_is_loadable(algo: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / algo
    assert (
        main(
            [
                "train-agent",
                "--checkpoint",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--algo",
                algo,
                "--steps",
                "256",
                "--num-envs",
                "2",
                "--num-denoising-steps",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    policy, meta = load_agent(out)
    assert meta["algo"] == algo and meta["n_stack"] == 4
    assert meta["observation_shape"] == [12, 64, 64]


def test_bad_requests_are_clear(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train-agent", "--checkpoint", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert (
        main(
            [
                "train-agent",
                "--checkpoint",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path),
                "--algo",
                "sac",
            ]
        )
        == 2
    )
    assert main(["evaluate", "--agent", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "algo: expected one of" in err and "agent directory not found" in err


def test_fastpath_option_reaches_the_dream(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "fast"
    assert (
        main(
            [
                "train-agent",
                "--checkpoint",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--steps",
                "2",
                "--fastpath",
                "channels_last,inference_mode",
                "--no-progress",
            ]
        )
        == 0
    )
    assert load_agent(out)[1]["kind"] == "actor_critic"
    assert (
        main(
            [
                "train-agent",
                "--checkpoint",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path / "x"),
                "--fastpath",
                "warp_drive",
            ]
        )
        == 2
    )


def test_sb3_saves_periodically_and_resumes_in_the_same_world_model_only(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from diamond_env.world_model.model import WorldModel

    out = tmp_path / "ppo"
    base = [
        "train-agent",
        "--checkpoint",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--algo",
        "ppo",
        "--num-envs",
        "2",
        "--num-denoising-steps",
        "1",
        "--save-every",
        "1",
        "--no-progress",
    ]
    assert main([*base, "--steps", "512"]) == 0
    assert json.loads((out / "sb3_resume.json").read_text())["num_timesteps"] == 512
    first = load_agent(out)[0].model.state_dict()
    assert main([*base, "--steps", "512"]) == 2  # not without --resume
    # SB3 stops at the step budget before training on the rollout that reaches it: 2 rollouts
    assert main([*base, "--steps", "1024", "--resume"]) == 0
    policy, meta = load_agent(out)
    assert meta["num_timesteps"] == 1024  # continued, not restarted
    changed = [k for k, v in policy.model.state_dict().items() if not torch.equal(v, first[k])]
    assert changed  # and it learned on from the saved weights
    assert [m["step"] for m in read_metrics(out)][-1] >= 512
    other = tmp_path / "other_wm"
    wm = WorldModel.load(tiny_checkpoint)
    with torch.no_grad():
        next(wm.parameters()).add_(0.01)
    wm.save(other)
    capsys.readouterr()
    assert main([*base[:2], str(other), *base[3:], "--steps", "1536", "--resume"]) == 2
    assert "their weights differ" in capsys.readouterr().err


def test_dreams_can_start_from_a_dataset(
    tiny_checkpoint: Path,
    breakout_dataset: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--contexts DATASET`` replaces the checkpoint's 8 stored contexts by windows of real play
    from the dataset (here up to 50), for this run only."""
    import torch

    from diamond_env.training import agents
    from diamond_env.world_model.model import WorldModel

    seen: list[WorldModel] = []
    monkeypatch.setattr(agents, "_train_sb3", lambda opts, wm, out: seen.append(wm))
    root = str(breakout_dataset.root)  # type: ignore[attr-defined]
    base = ["train-agent", "--checkpoint", str(tiny_checkpoint), "--algo", "ppo", "--no-progress"]
    assert (
        main([*base, "--out", str(tmp_path / "a"), "--contexts", root, "--num-contexts", "50"]) == 0
    )
    bank = seen[0].contexts
    assert len(bank) == 50 and len(WorldModel.load(tiny_checkpoint).contexts) == 8
    frames = torch.from_numpy(breakout_dataset.load_all().obs)  # type: ignore[attr-defined]
    first = bank.obs[:, 0].flatten(1)
    assert all(bool((frames.flatten(1) == row).all(1).any()) for row in first[:5])  # real frames
    assert main([*base, "--out", str(tmp_path / "b"), "--contexts", str(tmp_path / "none")]) == 2
    assert "error" in capsys.readouterr().err
