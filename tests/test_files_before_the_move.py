"""Files written by diamond_env 0.1.0 before the package's layout changed still load.

``tests/data/v0.1.0`` was written by the tree before the move (a Breakout dataset of 40 random
steps from ``diamond-env collect``, a ``tiny`` world model from ``train-wm --steps 2`` and a
``train-agent`` actor-critic of it). Nothing in them may name a module, so a move must not break
them; this test reads each with today's code."""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from diamond_env.data.dataset import EpisodeDataset
from diamond_env.evaluation.real_game import load_agent
from diamond_env.world_model.model import WorldModel

OLD = Path(__file__).parent / "data" / "v0.1.0"


def test_old_world_model_dreams() -> None:
    wm = WorldModel.load(OLD / "world_model")
    assert wm.game == "Breakout" and wm.config.preset == "tiny"
    env = gym.make("diamond_env:Dream-v0", checkpoint=str(OLD / "world_model"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    obs, reward, terminated, truncated, _ = env.step(1)
    assert obs.shape == (64, 64, 3) and isinstance(terminated, bool)
    env.close()


def test_old_dataset_reads(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    shutil.copytree(OLD / "dataset", root)  # opening takes a lock file: never in the fixture
    with EpisodeDataset.open(root) as ds:
        assert ds.game == "Breakout" and ds.num_steps == 40 and ds.num_episodes == 1
        episode = ds.load_episode(0)
        assert episode.obs.shape[1:] == (64, 64, 3) and len(episode.act) == 40


def test_old_actor_critic_agent_acts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(OLD)  # agent.json names its world model relative to where it was trained
    policy, meta = load_agent(OLD / "agent", seed=0)
    assert meta["kind"] == "actor_critic"
    actions = policy(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    assert actions.shape == (2,) and ((0 <= actions) & (actions < 4)).all()
