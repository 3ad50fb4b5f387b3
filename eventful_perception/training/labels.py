"""Pseudo-labels for `person` from classic detectors: background subtraction + HOG + tracking.

For a static-camera clip: a sliding-median background gives tight foreground blobs; blobs that
form a track lasting a few frames, upright on median and confirmed by OpenCV's HOG people
detector in at least two frames become `person` boxes (gaps interpolated). Foreground that is
not confidently one person (merged groups, short or unconfirmed tracks) and strong HOG hits
without foreground become *ignore* regions: neither positives nor negatives in training and
evaluation.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from eventful_perception.training.hog import run_hog
from eventful_perception.training.tracking import Track, build_tracks

_BACKGROUND_CHUNK = 20
_MIN_BOXES_TO_FIT = 20


@dataclass(frozen=True)
class LabelConfig:
    """Labelling parameters (pixels are original-frame pixels)."""

    frame_step: int = 2  # consecutive frames at 10 fps are near duplicates
    background_window: int = 300  # frames of the sliding median (30 s at 10 fps)
    background_samples: int = 25
    diff_threshold: int = 30  # max channel difference to the background, 0..255
    min_area: int = 150
    min_height: int = 24
    hog_min_weight: float = 0.3
    hog_ignore_weight: float = 1.0  # unexplained HOG hits this strong become ignore regions
    min_track_frames: int = 4
    min_hog_hits: int = 2
    min_aspect: float = 1.3  # height / width of one upright person
    max_gap: int = 3


@dataclass(frozen=True)
class FrameLabels:
    """Boxes (K, 4) of people and ignore regions (M, 4), x1, y1, x2, y2 in original pixels."""

    boxes: np.ndarray
    ignore: np.ndarray


def iter_frames(video: Path, wanted: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame (H, W, 3)) for the frames of a video in `wanted` (all when None)."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {video}")
    last = None if wanted is None else max(wanted)
    index = 0
    while last is None or index <= last:
        ok, frame = capture.read()
        if not ok:
            return
        if wanted is None or index in wanted:
            yield index, frame
        index += 1


def read_frames(video: Path, step: int) -> dict[int, np.ndarray]:
    """BGR frames `index -> (H, W, 3)` for every `step`-th frame of a video."""
    return {index: frame for index, frame in iter_frames(video) if index % step == 0}


def label_clip(video: Path, config: LabelConfig = LabelConfig()) -> dict[int, FrameLabels]:
    """Person boxes and ignore regions for every `config.frame_step`-th frame of a static clip."""
    frames = read_frames(video, config.frame_step)
    hog = run_hog(video, sorted(frames))
    candidates, strong_hog, backgrounds = {}, {}, {}
    for index in tqdm(sorted(frames), desc=f"foreground {video.name}", unit="frame"):
        # One background per chunk of frames: the median barely changes within a few seconds.
        center = index - index % _BACKGROUND_CHUNK + _BACKGROUND_CHUNK // 2
        if center not in backgrounds:
            backgrounds = {center: _background(frames, center, config)}
        blobs = foreground_blobs(frames[index], backgrounds[center], config)
        detections = np.array(hog.get(index, []), np.float32).reshape(-1, 5)  # (H, 5) box, weight
        confirming = detections[detections[:, 4] >= config.hog_min_weight, :4]
        candidates[index] = (blobs, _hog_supports(confirming, blobs).any(axis=0))
        strong = detections[detections[:, 4] >= config.hog_ignore_weight, :4]
        strong_hog[index] = strong[~_hog_supports(strong, blobs).any(axis=1)]  # HOG without foreground
    tracks = build_tracks(candidates, config.frame_step, max_gap=config.max_gap)
    return _assemble(sorted(frames), tracks, strong_hog, config)


def _background(frames: dict[int, np.ndarray], center: int, config: LabelConfig) -> np.ndarray:
    indices = np.array(sorted(frames))
    half = config.background_window // 2
    window = indices[(indices >= center - half) & (indices <= center + half)]
    picks = window[np.linspace(0, len(window) - 1, config.background_samples).round().astype(int)]
    return np.median(np.stack([frames[i] for i in picks]), axis=0).astype(np.uint8)  # (H, W, 3)


def foreground_blobs(frame: np.ndarray, background: np.ndarray, config: LabelConfig) -> np.ndarray:
    """Bounding boxes (K, 4) of connected foreground regions of a BGR frame."""
    difference = cv2.absdiff(cv2.GaussianBlur(frame, (5, 5), 0), cv2.GaussianBlur(background, (5, 5), 0))
    mask = (difference.max(axis=2) > config.diff_threshold).astype(np.uint8)  # (H, W)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # A tall kernel joins head, torso and legs split by clothes of background colour.
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 15)))
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    stats = stats[1:]  # (K, 5) x, y, w, h, area; row 0 is the background
    keep = (stats[:, 4] >= config.min_area) & (stats[:, 3] >= config.min_height)
    x, y, w, h = stats[keep, :4].T.astype(np.float32)
    return np.stack([x, y, x + w, y + h], axis=1)  # (K, 4)


def _hog_supports(hog_boxes: np.ndarray, blobs: np.ndarray) -> np.ndarray:
    """(H, K) whether HOG box h explains blob k: blob centre inside, compatible height."""
    if len(hog_boxes) == 0 or len(blobs) == 0:
        return np.zeros((len(hog_boxes), len(blobs)), bool)
    centers = (blobs[:, :2] + blobs[:, 2:]) / 2  # (K, 2)
    inside = ((centers[None] >= hog_boxes[:, None, :2]) & (centers[None] <= hog_boxes[:, None, 2:])).all(-1)
    ratio = (blobs[None, :, 3] - blobs[None, :, 1]) / (hog_boxes[:, None, 3] - hog_boxes[:, None, 1])
    return inside & (ratio >= 0.4) & (ratio <= 1.2)  # (H, K)


def _is_person_track(track: Track, config: LabelConfig) -> bool:
    boxes = np.array(track.boxes)  # (T, 4)
    aspect = np.median((boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0]))
    return (len(track.frames) >= config.min_track_frames and sum(track.confirmed) >= config.min_hog_hits
            and aspect >= config.min_aspect)


def _assemble(indices: list[int], tracks: list[Track], strong_hog: dict,
              config: LabelConfig) -> dict[int, FrameLabels]:
    people = {i: [] for i in indices}
    ignore = {i: [] for i in indices}
    for track in tracks:
        if _is_person_track(track, config):
            for frame, box in track.interpolated(config.frame_step):
                people[frame].append(list(box))
        else:
            for frame, box in zip(track.frames, track.boxes):
                ignore[frame].append(list(box))
    expected_height = _perspective_fit(np.concatenate([_array(b) for b in people.values()]))
    labels = {}
    for i in indices:
        boxes, hog = _array(people[i]), strong_hog[i]
        single = _is_single(boxes, expected_height)
        # HOG windows are about 4/3 of the person; far larger ones are false positives.
        hog = hog[hog[:, 3] - hog[:, 1] <= 2 * _expected(hog, expected_height)]
        labels[i] = FrameLabels(boxes[single], np.concatenate([_array(ignore[i]), boxes[~single], hog]))
    return labels


def _perspective_fit(boxes: np.ndarray) -> np.ndarray:
    """Coefficients (a, b) of a person's height a * y_bottom + b for a static ground-plane view.

    Refitted on the boxes no taller than the fit, so merged groups do not bias it; (0, inf), no
    size limit, when there are too few boxes to fit.
    """
    if len(boxes) < _MIN_BOXES_TO_FIT:
        return np.array([0.0, np.inf])
    heights, bottoms = boxes[:, 3] - boxes[:, 1], boxes[:, 3]
    a, b = np.polyfit(bottoms, heights, 1)
    for _ in range(3):
        inliers = heights <= (a * bottoms + b) * 1.1
        a, b = np.polyfit(bottoms[inliers], heights[inliers], 1)
    return np.array([a, b])


def _expected(boxes: np.ndarray, expected_height: np.ndarray) -> np.ndarray:
    return np.maximum(expected_height[0] * boxes[:, 3] + expected_height[1], 1.0)


def _is_single(boxes: np.ndarray, expected_height: np.ndarray) -> np.ndarray:
    """(K,) whether each box has the size of one person at its ground position (not a group)."""
    expected = _expected(boxes, expected_height)
    heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    return (heights <= 1.2 * expected) & (widths <= 0.6 * expected)


def _array(boxes: list) -> np.ndarray:
    return np.array(boxes, np.float32).reshape(-1, 4)


def save_labels(labels: dict[int, FrameLabels], path: Path, video: str, config: LabelConfig) -> None:
    """Write labels as JSON: `{"video", "config", "frames": {index: {"boxes", "ignore"}}}`."""
    frames = {str(i): {"boxes": np.round(l.boxes, 1).tolist(), "ignore": np.round(l.ignore, 1).tolist()}
              for i, l in labels.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"video": video, "config": asdict(config), "frames": frames}))


def load_labels(path: Path) -> dict[int, FrameLabels]:
    """Read labels written by `save_labels`."""
    frames = json.loads(path.read_text())["frames"]
    return {int(i): FrameLabels(_array(f["boxes"]), _array(f["ignore"])) for i, f in frames.items()}
