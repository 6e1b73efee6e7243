"""Where dreams start: one interface for every source of real starting contexts.

A dream (re)starts from a context: the last L real frames and the actions taken at them. The
simulator asks its :class:`ContextSource` for ``M`` of them at once, passing one uniform number
per env from that env's own random stream; a source that picks by index (:class:`BankContexts`,
the contexts stored with a checkpoint) turns it into its index, so each env's starts depend only
on its seed; a source with a generator of its own (DIAMOND's recency-weighted draws from the
replay, :class:`diamond_env.training.imagination.ReplayContexts`) may ignore it.
"""

from __future__ import annotations

from typing import Protocol

import torch

from diamond_env.frames import to_model
from diamond_env.world_model.model import ContextBank


class ContextSource(Protocol):
    """``source.draw(uniforms)`` -> ``len(uniforms)`` contexts: frames float ``(M, L, C, H, W)``
    in [-1, 1] (padding allowed, e.g. 0.0 before an episode's start) and actions int64
    ``(M, L)``, the last action slot being the one the dream fills. ``uniforms`` float ``(M,)`` in
    [0, 1), one per env from that env's stream."""

    def draw(self, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class BankContexts:
    """The checkpoint's bank of ``K`` real contexts (``ContextBank``), moved to ``device`` once;
    ``draw`` picks entry ``floor(u * K)`` for each uniform ``u``, ``at`` picks given entries."""

    def __init__(self, bank: ContextBank, device: torch.device) -> None:
        if bank.obs.ndim != 5 or bank.obs.shape[0] == 0:
            raise ValueError(
                f"world_model.contexts: expected at least one starting context (K, L, H, W, 3), "
                f"got obs of shape {tuple(bank.obs.shape)}"
            )
        self._obs = bank.obs.to(device)  # uint8 (K, L, H, W, C)
        self._act = bank.act.to(device, torch.int64)  # (K, L)

    def __len__(self) -> int:
        return int(self._obs.shape[0])

    @property
    def num_context(self) -> int:
        """L, the frames of one context."""
        return int(self._obs.shape[1])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the frames."""
        height, width, channels = self._obs.shape[2:]
        return int(channels), int(height), int(width)

    def at(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries ``indices`` (M,) int64: frames float (M, L, C, H, W) and actions (M, L)."""
        return to_model(self._obs[indices]), self._act[indices]

    def indices(self, uniforms: torch.Tensor) -> torch.Tensor:
        """The entry each uniform in [0, 1) picks."""
        return (uniforms * len(self)).long().clamp_(max=len(self) - 1)

    def draw(self, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.at(self.indices(uniforms))
