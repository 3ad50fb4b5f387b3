"""Persistent object IDs per camera stream: ByteTrack (Zhang et al., ECCV 2022) from `supervision`.

numpy only (no torch, no rclpy): the node, `eventful-perception detect` and the tracking benchmark
share it. One `StreamTracker` per camera stream; it forgets every track when the frame size
changes or the stamps jump (backwards, or forward by more than `max_gap_s`), and the caller
resets it together with the stream. A periodic full refresh of the stream keeps the tracks: the
boxes stay comparable, and resetting would give every object a new ID every K frames.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import supervision as sv

UNTRACKED = ""  # the ID of a detection that no confirmed track holds yet


@dataclass(frozen=True)
class TrackerConfig:
    """ByteTrack's thresholds (supervision's names in brackets) and the time-jump rule.

    activation_threshold: detections scoring at least this join the first association
        (track_activation_threshold); a new track needs 0.1 more; lower ones (down to 0.1)
        can only continue existing tracks.
    lost_frames: frames a lost track waits to be found again with its ID (lost_track_buffer).
    matching_threshold: highest IoU distance (1 - IoU, weighted by the score) at which a
        detection continues a track (minimum_matching_threshold).
    min_frames: frames a track must be seen before it gets an ID (minimum_consecutive_frames).
    max_gap_s: a forward stamp jump larger than this (or any backward one) resets the tracker.
    """

    activation_threshold: float = 0.25
    lost_frames: int = 30
    matching_threshold: float = 0.8
    min_frames: int = 1
    max_gap_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("activation_threshold", "matching_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("lost_frames", "min_frames"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not self.max_gap_s > 0.0:
            raise ValueError(f"max_gap_s must be > 0, got {self.max_gap_s!r}")


class StreamTracker:
    """Track IDs for the detections of one camera stream; `update` once per processed frame."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.resets = 0
        self._frame_size: tuple[int, int] | None = None
        self._stamp: float | None = None
        self._tracker = self._new_tracker()

    def reset(self) -> None:
        """Forget every track; IDs start again from 1."""
        self._tracker.reset()
        self._frame_size, self._stamp = None, None
        self.resets += 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame_size: tuple[int, int],
               stamp: float) -> list[str]:
        """One ID per detection (boxes (K, 4) x1, y1, x2, y2 pixels, scores (K,)) of the frame
        of `frame_size` (H, W) taken at `stamp` seconds; `UNTRACKED` where no track holds it."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"got {len(boxes)} boxes and {len(scores)} scores")
        if self._jumped(tuple(frame_size), stamp):
            self.reset()
        self._frame_size, self._stamp = tuple(frame_size), stamp
        detections = sv.Detections(xyxy=boxes, confidence=scores,
                                   data={"index": np.arange(len(boxes))})
        tracked = self._tracker.update_with_detections(detections)
        ids = [UNTRACKED] * len(boxes)
        for index, track_id in zip(tracked.data.get("index", ()), tracked.tracker_id):
            ids[int(index)] = str(int(track_id))
        return ids

    def _jumped(self, frame_size: tuple[int, int], stamp: float) -> bool:
        if self._stamp is None:
            return False
        gap = stamp - self._stamp
        return (frame_size != self._frame_size or not math.isfinite(gap) or gap < 0.0
                or gap > self.config.max_gap_s)

    def _new_tracker(self) -> sv.ByteTrack:
        config = self.config
        with warnings.catch_warnings():
            # Deprecated in favour of the `trackers` package, which requires opencv-python and
            # would replace opencv-python-headless (README, "Tracking"); pinned on purpose.
            warnings.filterwarnings("ignore", message=r"The `ByteTrack` was deprecated",
                                    category=FutureWarning)
            return sv.ByteTrack(track_activation_threshold=config.activation_threshold,
                                lost_track_buffer=config.lost_frames,
                                minimum_matching_threshold=config.matching_threshold,
                                # 30 makes supervision keep lost tracks exactly lost_frames frames
                                frame_rate=30, minimum_consecutive_frames=config.min_frames)

