"""The user's story with real parts only: a real (tiny) world-model checkpoint on disk, served by
``gym.make`` / ``gym.make_vec``, trained on by SB3's PPO, and the agent scored in the real ALE."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecFrameStack

import diamond_env
from diamond_env.dream.sb3 import make_sb3_env
from diamond_env.evaluation.real_game import cmd_evaluate

ID = "DiamondDream-Breakout-v0"


def test_every_atari100k_game_is_registered() -> None:
    ids = {env_id for env_id in gym.registry if env_id.startswith("DiamondDream-")}
    assert ids == {f"DiamondDream-{game}-v0" for game in diamond_env.GAMES}
    assert len(ids) == 26
    with pytest.raises(gym.error.Error):
        gym.make("DiamondDream-NotAGame-v0")


def test_make_vec_on_a_real_checkpoint(tiny_checkpoint: Path) -> None:
    envs = gym.make_vec(
        ID, num_envs=3, checkpoint=tiny_checkpoint, horizon=4, num_denoising_steps=1
    )
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    assert envs.single_action_space == gym.spaces.Discrete(4)
    elapsed = np.zeros(3, dtype=int)
    for _ in range(12):
        obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
        elapsed += 1
        assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
        assert rew.dtype == np.float32 and set(rew.tolist()) <= {-1.0, 0.0, 1.0}
        assert not (term & trunc).any()
        np.testing.assert_array_equal(trunc, (elapsed == 4) & ~term)  # the horizon
        done = term | trunc
        if done.any():  # final frames come with the envs that ended (and only then)
            assert all(f.shape == (64, 64, 3) for f in info["final_obs"][done])
        else:
            assert "final_obs" not in info
        elapsed[done] = 0
    with pytest.raises(ValueError, match=r"actions"):
        envs.step(np.array([0, 1, 4]))
    envs.close()
    with pytest.raises(RuntimeError, match="closed"):  # a closed env is not used by accident
        envs.step(np.array([0, 1, 2]))


def test_sb3_ppo_in_the_dream_then_scored_in_the_real_game(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    venv = VecFrameStack(
        make_sb3_env(ID, num_envs=2, checkpoint=tiny_checkpoint, num_denoising_steps=1), 4
    )
    model = PPO("CnnPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    model.learn(32)
    assert model.num_timesteps == 32
    agent = tmp_path / "agent"
    agent.mkdir()
    model.save(agent / "model.zip")
    (agent / "agent.json").write_text(
        json.dumps({"kind": "sb3", "algo": "ppo", "n_stack": 4, "game": "Breakout"})
    )
    # a bare SB3 zip (the user's own): read only when trusted, as --trust-pickle says
    # (sampled actions: a greedy policy this untrained may never press FIRE and play the game's
    # whole 27k-step limit)
    result = cmd_evaluate(
        agent,
        None,
        1,
        tmp_path / "eval.json",
        seed=0,
        progress=False,
        trust_pickle=True,
        deterministic=False,
    )
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["episodes"] == 1 and saved["returns"] == result.returns
    assert result.lengths[0] > 0 and result.hns is not None
