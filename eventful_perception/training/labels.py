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
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from eventful_perception.training.hog import run_hog
from eventful_perception.training.tracking import Track, build_tracks, iou_matrix


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


def read_frames(video: Path, step: int, limit: int | None = None) -> dict[int, np.ndarray]:
    """BGR frames `index -> (H, W, 3)` for every `step`-th frame of a video."""
    capture, frames, index = cv2.VideoCapture(str(video)), {}, 0
    if not capture.isOpened():
        raise ValueError(f"cannot open video {video}")
    while limit is None or index < limit:
        ok, frame = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames[index] = frame
        index += 1
    return frames


def label_clip(video: Path, config: LabelConfig = LabelConfig()) -> dict[int, FrameLabels]:
    """Person boxes and ignore regions for every `config.frame_step`-th frame of a static clip."""
    frames = read_frames(video, config.frame_step)
    hog = run_hog(video, sorted(frames))
    candidates, strong_hog = {}, {}
    for index in tqdm(sorted(frames), desc=f"foreground {video.name}", unit="frame"):
        background = _background(frames, index, config)
        blobs = foreground_blobs(frames[index], background, config)
        hog_boxes = np.array(hog.get(index, []), np.float32).reshape(-1, 5)
        hog_boxes = hog_boxes[hog_boxes[:, 4] >= config.hog_min_weight, :4]
        confirmed = _hog_supports(hog_boxes, blobs)
        candidates[index] = (blobs, confirmed.any(axis=0))
        strong = np.array(hog.get(index, []), np.float32).reshape(-1, 5)
        strong = strong[strong[:, 4] >= config.hog_ignore_weight, :4]
        strong_hog[index] = strong[~_hog_supports(strong, blobs).any(axis=1)]
    tracks = build_tracks(candidates, config.frame_step, max_gap=config.max_gap)
    return _assemble(sorted(frames), tracks, candidates, strong_hog, config)


def _background(frames: dict[int, np.ndarray], index: int, config: LabelConfig) -> np.ndarray:
    indices = np.array(sorted(frames))
    half = config.background_window // 2
    window = indices[(indices >= index - half) & (indices <= index + half)]
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


def _assemble(indices: list[int], tracks: list[Track], candidates: dict, strong_hog: dict,
              config: LabelConfig) -> dict[int, FrameLabels]:
    people = {i: [] for i in indices}
    ignore = {i: [list(b) for b in strong_hog[i]] for i in indices}
    for track in tracks:
        person = _is_person_track(track, config)
        heights = np.array([b[3] - b[1] for b in track.boxes])
        for frame, box in track.interpolated(config.frame_step) if person else zip(track.frames, track.boxes):
            single = (box[3] - box[1]) / max(box[2] - box[0], 1.0) >= 1.0 and box[3] - box[1] <= 1.5 * np.median(heights)
            (people if person and single else ignore)[frame].append(list(box))
    return {i: FrameLabels(_array(people[i]), _array(ignore[i])) for i in indices}


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
