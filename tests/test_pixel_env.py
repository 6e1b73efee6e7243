"""Any Gymnasium env with pixels and discrete actions, end to end: collected (``collect --env-id``,
here CartPole-v1 seen through its rendered frames), trained on, served as ``Dream-v0``, an SB3
agent trained in that dream and scored in the real env; bad envs refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import diamond_env  # noqa: F401  (registers Dream-v0)
from diamond_env.cli.main import main
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.real_env import EnvSpec, PixelVectorEnv

pytest.importorskip("pygame")  # CartPole renders with pygame


@pytest.fixture(scope="module")
def cartpole_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cartpole")
    assert (
        main(
            [
                "collect",
                "--env-id",
                "CartPole-v1",
                "--render-obs",
                "--steps",
                "300",
                "--out",
                str(root / "ds"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-wm",
                "--game",
                "CartPole-v1",
                "--preset",
                "tiny",
                "--dataset",
                str(root / "ds"),
                "--steps",
                "3",
                "--eval-every",
                "0",
                "--eval-rollouts",
                "2",
                "--run-dir",
                str(root / "run"),
            ]
        )
        == 0
    )
    return root / "run" / "world_model"


def test_collected_dataset_records_the_env(cartpole_model: Path) -> None:
    ds = EpisodeDataset.open(cartpole_model.parent.parent / "ds")
    assert ds.game == "CartPole-v1" and ds.num_actions == 2 and ds.num_steps == 300
    assert ds.settings["env"] == {"id": "CartPole-v1", "kwargs": {}, "render_obs": True}
    data = ds.load_all()
    assert data.obs.shape[1:] == (64, 64, 3) and data.obs.std() > 0  # real pictures
    config = json.loads((cartpole_model / "config.json").read_text())
    assert config["game"] == "CartPole-v1" and config["env"]["id"] == "CartPole-v1"


def test_dream_v0_serves_the_model(cartpole_model: Path) -> None:
    env = gym.make("diamond_env:Dream-v0", checkpoint=str(cartpole_model))
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and env.action_space == gym.spaces.Discrete(2)
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    np.testing.assert_array_equal(a, b)  # seeding repeats the starting context
    env.close()
    vec = gym.make_vec("diamond_env:Dream-v0", num_envs=3, checkpoint=str(cartpole_model))
    obs, _ = vec.reset(seed=0)
    for _ in range(16):  # past the 15-step horizon: autoreset
        obs, rew, term, trunc, info = vec.step(vec.action_space.sample())
    assert obs.shape == (3, 64, 64, 3) and trunc.dtype == bool
    vec.close()
    with pytest.raises(ValueError, match="checkpoint=... is required"):
        gym.make("diamond_env:Dream-v0")


def test_sb3_agent_trained_in_the_dream_plays_the_real_env(
    cartpole_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = tmp_path / "ppo"
    assert (
        main(
            [
                "train-agent",
                "--checkpoint",
                str(cartpole_model),
                "--algo",
                "ppo",
                "--steps",
                "256",
                "--num-envs",
                "4",
                "--out",
                str(agent),
                "--no-progress",
            ]
        )
        == 0
    )
    meta = json.loads((agent / "agent.json").read_text())
    assert meta["game"] == "CartPole-v1" and meta["env"]["render_obs"] is True
    out = tmp_path / "eval.json"
    assert (
        main(
            ["evaluate", "--agent", str(agent), "--episodes", "3", "--out", str(out), "--baselines"]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["game"] == "CartPole-v1" and len(result["returns"]) == 3
    assert min(result["returns"]) >= 8  # CartPole pays 1 a step; a game lasts >= 8 steps
    assert set(result["baselines"]) == {"random", "action_frequency"}


def test_pixel_vector_env_matches_the_atari_interface() -> None:
    env = PixelVectorEnv(EnvSpec("CartPole-v1", render_obs=True), 2, train=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
    done_seen = False
    for _ in range(200):
        obs, rew, term, trunc, info = env.step(np.zeros(2, dtype=np.int64))  # always left: falls
        assert not info["life_loss"].any()
        if term.any():
            done_seen = True
            assert info["final_obs"][int(np.flatnonzero(term)[0])].shape == (64, 64, 3)
            break
    assert done_seen
    assert env.get_action_meanings() == ["action 0", "action 1"]
    env.close()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--env-id", "CartPole-v1"], "use render_obs"),
        (["--env-id", "NoSuchEnv-v0"], "not a registered Gymnasium env"),
        (["--env-id", "Pendulum-v1", "--render-obs"], "expected Discrete"),
        (["--env-id", "CartPole-v1", "--game", "Breakout"], "not both"),
        (["--env-id", "CartPole-v1", "--env-kwargs", "[1]"], "expected a JSON object"),
    ],
)
def test_unusable_envs_are_refused(
    argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["collect", *argv, "--steps", "10", "--out", str(tmp_path / "ds"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "ds").exists()


def test_train_wm_needs_a_dataset_for_a_gymnasium_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train-wm", "--game", "CartPole-v1", "--run-dir", str(tmp_path / "r")]) == 2
    assert "collect --env-id CartPole-v1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
