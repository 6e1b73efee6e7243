"""stable-baselines3 face: VecEnv contract, autoreset infos, VecMonitor, seeding/options, and
PPO / A2C / DQN learning on both make_sb3_env and SB3's own make_vec_env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_world_model import MEANINGS, REWARDS, FakeWorldModel
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecFrameStack,
    VecMonitor,
    VecTransposeImage,
)

from diamond_env.dream.gym_env import DreamVectorEnv
from diamond_env.dream.registration import register_envs
from diamond_env.dream.sb3 import DreamSB3VecEnv, make_sb3_env
from diamond_env.world_model.model import WorldModel

ID = "DiamondDream-Breakout-v0"


@pytest.fixture(autouse=True)
def _registered() -> None:
    register_envs(["Breakout"])


def _level(frames: np.ndarray) -> np.ndarray:
    """Constant level of channel-first uint8 frames (..., 3, 64, 64), read at pixel (1, 1)."""
    return frames[..., 0, 1, 1].astype(np.int64)


def test_vecenv_contract_and_channel_first_obs() -> None:
    venv = make_sb3_env(ID, num_envs=3, world_model=FakeWorldModel(), render_mode="rgb_array")
    assert isinstance(venv, VecMonitor) and isinstance(venv.unwrapped, DreamSB3VecEnv)
    assert venv.observation_space.shape == (3, 64, 64) and venv.observation_space.dtype == np.uint8
    assert venv.action_space.n == 4 and venv.num_envs == 3
    assert venv.get_attr("render_mode") == ["rgb_array"] * 3
    assert venv.env_is_wrapped(Monitor) == [False] * 3
    assert venv.env_method("get_action_meanings", indices=[0]) == [MEANINGS]
    venv.seed(9)
    obs = venv.reset()
    assert obs.shape == (3, 3, 64, 64) and obs.dtype == np.uint8
    gym_obs, _ = DreamVectorEnv(3, "Breakout", world_model=FakeWorldModel()).reset(seed=9)
    np.testing.assert_array_equal(obs, gym_obs.transpose(0, 3, 1, 2))  # same pixels, CHW
    images = venv.get_images()
    assert len(images) == 3 and images[0].shape == (64, 64, 3)
    assert venv.render().shape == (128, 128, 3)  # SB3 tiles 3 frames on a 2 x 2 grid
    with pytest.raises(ValueError, match="share one simulator"):
        venv.set_attr("render_mode", None, indices=[0])


def test_autoreset_infos_and_vecmonitor_episodes() -> None:
    """Env 0 terminates at step 2 (action 3); env 1 is truncated at horizon 3."""
    model = FakeWorldModel(terminate_after=100, terminate_action=3)
    venv = make_sb3_env(ID, num_envs=2, world_model=model, horizon=3)
    venv.set_options({"context_index": 1})
    obs = venv.reset()
    assert _level(obs).tolist() == [13, 13]
    obs, rew, dones, infos = venv.step(np.array([1, 1]))
    assert dones.tolist() == [False, False] and rew.dtype == np.float32
    assert infos == [{"TimeLimit.truncated": False}, {"TimeLimit.truncated": False}]
    obs, rew, dones, infos = venv.step(np.array([3, 2]))
    assert dones.tolist() == [True, False] and rew.tolist() == [REWARDS[3], REWARDS[2]]
    assert infos[0]["TimeLimit.truncated"] is False
    assert _level(infos[0]["terminal_observation"]) == 15 + 4
    assert infos[0]["terminal_observation"].shape == (3, 64, 64)
    assert infos[0]["episode"]["r"] == REWARDS[1] + REWARDS[3] and infos[0]["episode"]["l"] == 2
    assert "terminal_observation" not in infos[1] and "episode" not in infos[1]
    assert _level(obs[0]) % 10 == 3 and _level(obs[1]) == 15 + 3
    obs, rew, dones, infos = venv.step(np.array([0, 0]))
    assert dones.tolist() == [False, True] and infos[1]["TimeLimit.truncated"] is True
    assert _level(infos[1]["terminal_observation"]) == 18 + 1
    assert infos[1]["episode"]["r"] == REWARDS[1] + REWARDS[2] + REWARDS[0]
    assert infos[1]["episode"]["l"] == 3 and "t" in infos[1]["episode"]


def test_seed_and_options_apply_at_next_reset_only() -> None:
    venv = make_sb3_env(ID, num_envs=2, world_model=FakeWorldModel())
    venv.seed(3)
    first = venv.reset()
    venv.step(np.array([1, 2]))
    venv.seed(3)
    np.testing.assert_array_equal(venv.reset(), first)
    venv.set_options([{"context_index": 4}, {}])
    obs = venv.reset()
    assert _level(obs[0]) == 43
    venv.set_options({"start": 1})
    with pytest.raises(ValueError, match="unknown keys"):
        venv.reset()


def test_bad_actions_and_nan_raise() -> None:
    model = FakeWorldModel()
    venv = make_sb3_env(ID, num_envs=2, world_model=model)
    venv.reset()
    with pytest.raises(TypeError, match="float"):
        venv.step(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\[9\] at envs \[0\]"):
        venv.step(np.array([9, 1]))
    assert venv.step(np.array([[1], [2]]))[0].shape == (2, 3, 64, 64)
    model.emit_nan = True
    with pytest.raises(RuntimeError, match="NaN"):
        venv.step(np.array([0, 0]))


def test_make_sb3_env_loads_once_make_vec_env_builds_n(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text("{}")
    calls = {"n": 0}

    def fake_load(path: Any, device: Any = "cpu", expected_game: str | None = None) -> Any:
        calls["n"] += 1
        return FakeWorldModel()

    monkeypatch.setattr(WorldModel, "load", fake_load)
    make_sb3_env("diamond_env.dream.registration:" + ID, num_envs=4, checkpoint=str(tmp_path))
    assert calls["n"] == 1
    venv = make_vec_env(ID, n_envs=2, env_kwargs={"checkpoint": str(tmp_path)})
    assert calls["n"] == 3 and isinstance(venv, DummyVecEnv)  # SB3 builds N single envs
    with pytest.raises(ValueError, match="DiamondDream"):
        make_sb3_env("CartPole-v1")


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_sb3_algorithms_learn_on_make_sb3_env(algo: str) -> None:
    venv = make_sb3_env(ID, num_envs=2, world_model=FakeWorldModel(), horizon=5)
    if algo == "ppo":
        model: Any = PPO("CnnPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    elif algo == "a2c":
        model = A2C("CnnPolicy", venv, n_steps=5, seed=0)
    else:
        model = DQN("CnnPolicy", venv, buffer_size=300, learning_starts=50, batch_size=16, seed=0)
    assert not isinstance(model.get_env(), VecTransposeImage)  # channel-first: no transpose
    model.learn(200)
    assert model.num_timesteps >= 200
    assert len(model.ep_info_buffer) > 0 and model.ep_info_buffer[0]["l"] <= 5


def test_ppo_learns_on_sb3_make_vec_env() -> None:
    venv = make_vec_env(ID, n_envs=2, env_kwargs={"world_model": FakeWorldModel(), "horizon": 5})
    model = PPO("CnnPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    assert isinstance(model.get_env(), VecTransposeImage)  # channel-last single envs
    model.learn(100)
    assert model.num_timesteps >= 100


def test_frame_stack_and_evaluate_policy() -> None:
    venv = VecFrameStack(
        make_sb3_env(ID, num_envs=2, world_model=FakeWorldModel(terminate_after=3), horizon=5), 4
    )
    assert venv.observation_space.shape == (12, 64, 64)
    model = PPO("CnnPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0)
    model.learn(16)
    rewards, lengths = evaluate_policy(model, venv, n_eval_episodes=4, return_episode_rewards=True)
    assert lengths == [3, 3, 3, 3]  # every episode ends at the fake's termination step
    assert all(r == round(r) and -3 <= r <= 3 for r in rewards)
