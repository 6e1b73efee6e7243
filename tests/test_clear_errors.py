"""Bad input gets one clear line (CLI exit 2), not a torch traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diamond_env.cli.main import main
from diamond_env.run.checkpoint import resolve_device


def test_resolve_device_says_why() -> None:
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type == "cpu"
    with pytest.raises(ValueError, match="not a torch device name"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="CUDA is not available here"):
            resolve_device("cuda:1")


@pytest.mark.parametrize("device", ["nonsense", "cuda:99"])
def test_commands_refuse_a_device_in_one_line(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["train-wm", "--steps", "1", "--run-dir", str(tmp_path / "wm")],
        ["train", "--run-dir", str(tmp_path / "full")],
        ["train-agent", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "a")],
    ):
        assert main([*argv, "--device", device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "device:" in err[0], err
    assert not (tmp_path / "wm" / "dataset").exists()  # refused before collecting anything


def test_huge_seeds_and_closed_envs_are_refused_clearly() -> None:
    import gymnasium as gym
    from fake_world_model import FakeWorldModel

    from diamond_env.run.checkpoint import seed_everything

    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*63\)"):
        seed_everything(2**70)
    env = gym.make("DiamondDream-Breakout-v0", world_model=FakeWorldModel())
    with pytest.raises(ValueError, match="seed: expected an int in"):
        env.reset(seed=2**70)
    env = gym.make("DiamondDream-Breakout-v0", world_model=FakeWorldModel())
    env.reset(seed=2**62)
    env.step(0)
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(0)
    venv = gym.make_vec("DiamondDream-Breakout-v0", num_envs=2, world_model=FakeWorldModel())
    with pytest.raises(ValueError, match="seed: expected"):
        venv.reset(seed=2**63 - 1)  # env 1 would get 2**63
    venv.reset(seed=[0, 2**63 - 1])
    venv.close()
    with pytest.raises(RuntimeError, match="closed"):
        venv.reset(seed=0)


def test_a_run_directory_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["train-wm", "--steps", "1", "--run-dir", str(afile)]) == 2
    assert main(["train", "--run-dir", str(afile)]) == 2
    assert main(["train-agent", "--checkpoint", str(tmp_path), "--out", str(afile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("is a file" in line for line in err), err
    assert afile.read_text() == "mine"


def test_a_corrupt_actor_critic_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diamond_env.config import ActorCriticConfig
    from diamond_env.models.actor_critic import CONFIG_FILE, WEIGHTS_FILE, ActorCritic

    agent = tmp_path / "agent"
    ActorCritic(ActorCriticConfig(channels=(8, 8, 16, 16), lstm_dim=32), 4).save(agent)
    (agent / "agent.json").write_text('{"game": "Breakout"}')
    weights = agent / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated weights
    argv = ["evaluate", "--agent", str(agent), "--episodes", "1", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256" in err[0] and "altered or damaged" in err[0], err
    (agent / CONFIG_FILE).write_text("{oops")  # a config that is not JSON
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0], err
