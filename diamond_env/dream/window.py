"""The window of ``render_mode="human"``: the current frame of each env, tiled, in a pygame window
(pygame is a dependency of the package; it is imported when the first window opens)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from diamond_env.run.safe_io import InputError

SCALE = 4
"""Screen pixels per frame pixel."""


def tile(frames: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> one uint8 image of the frames on a near-square grid (row-major,
    blank cells black)."""
    n, h, w, c = frames.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, frame in enumerate(frames):
        r, k = divmod(i, cols)
        grid[r * h : (r + 1) * h, k * w : (k + 1) * w] = frame
    return grid


class HumanWindow:
    """Shows frames at most ``fps`` times a second; closing the window is allowed (the next
    frame opens it again), and :meth:`close` shuts it."""

    def __init__(self, title: str, fps: int) -> None:
        try:
            import pygame
        except ImportError as err:  # pragma: no cover  (a dependency of the package)
            raise InputError("render_mode='human' needs pygame: pip install pygame") from err
        self._pygame: Any = pygame
        self.title, self.fps = title, fps
        self._screen: Any = None
        self._last = 0.0

    def show(self, frames: np.ndarray) -> None:
        """Draw uint8 ``(N, H, W, 3)`` frames, tiled, and pump the window's events."""
        pg = self._pygame
        image = tile(frames)
        size = (image.shape[1] * SCALE, image.shape[0] * SCALE)
        if self._screen is None:
            pg.display.init()
            self._screen = pg.display.set_mode(size)
            pg.display.set_caption(self.title)
        surface = pg.surfarray.make_surface(image.transpose(1, 0, 2))
        self._screen.blit(pg.transform.scale(surface, size), (0, 0))
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.close()
                return
        pg.display.flip()
        wait = self._last + 1.0 / self.fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()

    def screen_pixels(self) -> np.ndarray:
        """What the window shows, uint8 (height, width, 3) (for tests)."""
        if self._screen is None:
            raise RuntimeError("the window is not open")
        return np.asarray(self._pygame.surfarray.array3d(self._screen)).transpose(1, 0, 2)

    def close(self) -> None:
        if self._screen is not None:
            self._pygame.display.quit()
            self._screen = None
