"""Shared fixtures: small real datasets and tiny world models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diamond_env.data.collect import collect_random_until
from diamond_env.data.dataset import EpisodeDataset

# One thread: on a shared 2-core box, two OpenMP threads competing with other processes made
# world-model steps 10-200x slower (measured); on an idle box one thread costs little here.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def breakout_dataset(tmp_path_factory: pytest.TempPathFactory) -> EpisodeDataset:
    """~1,200 steps of random real Breakout play (about six games)."""
    root: Path = tmp_path_factory.mktemp("breakout") / "dataset"
    dataset, _ = collect_random_until(root, "Breakout", 1200, seed=0, progress=False)
    return dataset


@pytest.fixture(scope="session")
def tiny_checkpoint(
    breakout_dataset: EpisodeDataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A real tiny-preset Breakout world model (untrained weights) whose context bank holds real
    windows of ``breakout_dataset``, saved as a checkpoint directory."""
    import numpy as np

    from diamond_env.atari import action_meanings
    from diamond_env.config import get_preset
    from diamond_env.training.wm_trainer import build_context_bank
    from diamond_env.world_model.model import WorldModel

    config = get_preset("tiny")
    torch.manual_seed(0)
    bank = build_context_bank(
        breakout_dataset.load_all(), 8, config.denoiser.num_context, np.random.default_rng(0)
    )
    path: Path = tmp_path_factory.mktemp("tiny_wm") / "world_model"
    WorldModel(config, "Breakout", action_meanings("Breakout"), bank).save(path)
    return path
