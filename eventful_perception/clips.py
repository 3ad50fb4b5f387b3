"""Synthetic camera motion from a static clip: a crop window panning across the frames.

numpy only, so benchmarks and tests can turn any static video into a moving-camera one.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def pan_offset(index: int, travel: int, step: int) -> int:
    """x offset of crop window `index` moving `step` px per frame over 0..`travel` and turning
    around at both ends (0, step, ..., travel, travel - step, ..., 0, step, ...)."""
    if step < 0 or travel < 0:
        raise ValueError(f"step and travel must be >= 0, got {step} and {travel}")
    if step == 0 or travel == 0:
        return 0
    position = (index * step) % (2 * travel)
    return position if position <= travel else 2 * travel - position


def panning(frames: Iterable[np.ndarray], width: int, step: int = 3) -> Iterator[np.ndarray]:
    """Crops (H, `width`, C) of `frames` (H, W, C) whose window slides `step` px right per
    frame and back at the edge: a camera panning over a static scene."""
    for index, frame in enumerate(frames):
        if not 0 < width <= frame.shape[1]:
            raise ValueError(f"crop width must be in 1..{frame.shape[1]} (the frame), got {width}")
        x = pan_offset(index, frame.shape[1] - width, step)
        yield np.ascontiguousarray(frame[:, x:x + width])
