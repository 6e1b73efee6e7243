"""Real play on disk: episodes, the dataset index, segment sampling and collection."""

from diamond_env.data.dataset import DatasetCorruptError, EpisodeDataset
from diamond_env.data.episode import Episode, FlatData
from diamond_env.data.segments import (
    Segment,
    SegmentSampler,
    TorchSegment,
    recency_episode_weights,
    to_torch,
)

__all__ = [
    "DatasetCorruptError",
    "Episode",
    "EpisodeDataset",
    "FlatData",
    "Segment",
    "SegmentSampler",
    "TorchSegment",
    "recency_episode_weights",
    "to_torch",
]
