"""Temporal consistency for noisy per-frame boxes: greedy IoU tracks and gap interpolation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Track:
    """One object over time: `boxes[i]` (x1, y1, x2, y2) seen at `frames[i]`, with per-frame flags."""

    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    confirmed: list[bool] = field(default_factory=list)

    def add(self, frame: int, box: np.ndarray, confirmed: bool) -> None:
        """Append one observation."""
        self.frames.append(frame)
        self.boxes.append(box)
        self.confirmed.append(confirmed)

    def interpolated(self, step: int) -> list[tuple[int, np.ndarray]]:
        """(frame, box) every `step` frames from first to last, gaps filled linearly."""
        out = []
        for (f0, b0), (f1, b1) in zip(zip(self.frames, self.boxes), zip(self.frames[1:], self.boxes[1:])):
            out += [(f, b0 + (b1 - b0) * (f - f0) / (f1 - f0)) for f in range(f0, f1, step)]
        return out + [(self.frames[-1], self.boxes[-1])]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (K, M) of boxes a (K, 4) and b (M, 4)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])  # (K, M, 2)
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (K, M, 2)
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)  # (K, M)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=-1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-9)


def build_tracks(detections: dict[int, tuple[np.ndarray, np.ndarray]], step: int,
                 min_iou: float = 0.3, max_gap: int = 3) -> list[Track]:
    """Link `frame -> (boxes (K, 4), confirmed (K,))` into tracks by greedy IoU matching.

    A track may skip up to `max_gap` sampled frames (occlusions, missed foreground).
    """
    active: list[Track] = []
    finished: list[Track] = []
    for frame in sorted(detections):
        boxes, confirmed = detections[frame]
        alive = [t for t in active if frame - t.frames[-1] <= (max_gap + 1) * step]
        finished += [t for t in active if t not in alive]
        matched = _greedy_match(np.array([t.boxes[-1] for t in alive]).reshape(-1, 4), boxes, min_iou)
        for track_index, box_index in matched:
            alive[track_index].add(frame, boxes[box_index], bool(confirmed[box_index]))
        used = {box_index for _, box_index in matched}
        for i in range(len(boxes)):
            if i not in used:
                alive.append(Track())
                alive[-1].add(frame, boxes[i], bool(confirmed[i]))
        active = alive
    return finished + active


def _greedy_match(previous: np.ndarray, current: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    if len(previous) == 0 or len(current) == 0:
        return []
    iou = iou_matrix(previous, current)  # (T, K)
    pairs = []
    while True:
        t, k = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[t, k] < min_iou:
            return pairs
        pairs.append((int(t), int(k)))
        iou[t, :], iou[:, k] = -1, -1
