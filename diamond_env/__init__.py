"""diamond_env: DIAMOND diffusion world models of Atari games, served as Gymnasium environments."""

from __future__ import annotations

__version__ = "0.1.0"
