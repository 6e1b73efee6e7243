"""Conversions between stored frames and model tensors.

Stored and served frames are uint8 RGB, channel-last ``(..., 64, 64, 3)`` in [0, 255]. Models see
float32 channel-first ``(..., 3, 64, 64)`` in [-1, 1]. Images of frames are written with
:func:`write_png`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
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


def write_png(rgb: np.ndarray, path: Path, scale: int = 1) -> Path:
    """Write uint8 RGB ``(H, W, 3)`` as a PNG, each pixel a ``scale`` x ``scale`` block (no
    smoothing, so a one-pixel ball stays visible); the folder is made if missing."""
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")
    return path
