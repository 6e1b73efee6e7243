"""Conversions between stored frames and model tensors.

Stored and served frames are uint8 RGB, channel-last ``(..., 64, 64, 3)`` in [0, 255]. Models see
float32 channel-first ``(..., 3, 64, 64)`` in [-1, 1].
"""

from __future__ import annotations

import torch


def to_model(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, C)`` in [0, 255] -> float32 ``(..., C, H, W)`` in [-1, 1]."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames: expected dtype torch.uint8, got {frames.dtype}")
    return frames.movedim(-1, -3).float().div(127.5).sub(1.0)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float ``(..., C, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, C)``; values are clamped and rounded."""
    return frames.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8).movedim(-3, -1)


def quantize(frames: torch.Tensor) -> torch.Tensor:
    """Clamp float frames in [-1, 1] and round them to the 256 levels a uint8 frame can hold."""
    return frames.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().div(127.5).sub(1.0)
