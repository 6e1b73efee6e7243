"""Shared fixtures: small real datasets and tiny world models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diamond_env.data.collect import collect_random_until
from diamond_env.data.dataset import EpisodeDataset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def breakout_dataset(tmp_path_factory: pytest.TempPathFactory) -> EpisodeDataset:
    """~1,200 steps of random real Breakout play (about six games)."""
    root: Path = tmp_path_factory.mktemp("breakout") / "dataset"
    dataset, _ = collect_random_until(root, "Breakout", 1200, seed=0, progress=False)
    return dataset
