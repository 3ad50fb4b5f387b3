"""`person` labels from the teacher, cleaned up: class thresholds, ignore regions, tracks.

1. The teacher (`teacher.py`) gives boxes of two person classes, upright and lying, after NMS.
2. Upright boxes scoring >= `upright_threshold` and lying ones >= `lying_threshold` become
   `person` boxes (the lying class fires on jackets left on grass at 0.39-0.50, so its bar is
   higher); weaker boxes down to `ignore_threshold` become *ignore* regions (neither positives
   nor negatives in training and evaluation), as do boxes shorter than `min_height`.
3. In videos, a box must be part of an IoU track over neighbouring sampled frames (any teacher
   box >= `ignore_threshold` counts): a box seen in one frame only becomes an ignore region.
The thresholds were calibrated against the hand-labelled frames in `hand_labels.json`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eventful_perception.training.teacher import Teacher, TeacherBoxes
from eventful_perception.training.tracking import build_tracks

HAND_LABELS = Path(__file__).resolve().parent / "hand_labels.json"


@dataclass(frozen=True)
class LabelConfig:
    """Clean-up parameters (pixels are original-image pixels)."""

    upright_threshold: float = 0.25
    lying_threshold: float = 0.55
    ignore_threshold: float = 0.15
    min_height: float = 12.0
    track_iou: float = 0.3


@dataclass(frozen=True)
class FrameLabels:
    """Boxes (K, 4) of people and ignore regions (M, 4), x1, y1, x2, y2 in original pixels."""

    boxes: np.ndarray
    ignore: np.ndarray


def clean(raw: TeacherBoxes, config: LabelConfig) -> FrameLabels:
    """Split the teacher's boxes of one image into `person` boxes and ignore regions."""
    bar = np.where(raw.classes == 1, config.lying_threshold, config.upright_threshold)
    tall = raw.boxes[:, 3] - raw.boxes[:, 1] >= config.min_height
    person = (raw.scores >= bar) & tall
    weak = ~person & (raw.scores >= config.ignore_threshold)
    return FrameLabels(_array(raw.boxes[person]), _array(raw.boxes[weak]))


def label_image(teacher: Teacher, rgb: np.ndarray, config: LabelConfig) -> FrameLabels:
    """Cleaned teacher labels of one still."""
    return clean(teacher(rgb), config)


def label_video(teacher: Teacher, frames: dict[int, np.ndarray], step: int,
                config: LabelConfig) -> dict[int, FrameLabels]:
    """Cleaned labels of sampled video frames `index -> RGB`, `step` frames apart, with tracks."""
    raw = {i: teacher(frames[i]) for i in tqdm(sorted(frames), desc="teacher", unit="frame", leave=False)}
    return temporal_filter({i: clean(r, config) for i, r in raw.items()}, step, config)


def temporal_filter(labels: dict[int, FrameLabels], step: int, config: LabelConfig) -> dict[int, FrameLabels]:
    """Turn boxes that no neighbouring sampled frame confirms into ignore regions."""
    candidates = {i: (np.concatenate([l.boxes, l.ignore]), np.arange(len(l.boxes) + len(l.ignore)) < len(l.boxes))
                  for i, l in labels.items()}
    lonely = {i: [] for i in labels}
    for track in build_tracks(candidates, step, min_iou=config.track_iou, max_gap=0):
        if len(track.frames) == 1 and track.confirmed[0]:
            lonely[track.frames[0]].append(track.boxes[0])
    out = {}
    for i, label in labels.items():
        alone = _array(lonely[i])
        keep = np.array([not any(np.array_equal(b, a) for a in alone) for b in label.boxes], bool)
        out[i] = FrameLabels(_array(label.boxes[keep]), np.concatenate([label.ignore, alone]))
    return out


def _array(boxes) -> np.ndarray:
    return np.array(boxes, np.float32).reshape(-1, 4)


def save_labels(labels: dict[int, FrameLabels], path: Path, source: str, config: LabelConfig) -> None:
    """Write labels as JSON: `{"source", "config", "frames": {index: {"boxes", "ignore"}}}`."""
    frames = {str(i): {"boxes": np.round(l.boxes, 1).tolist(), "ignore": np.round(l.ignore, 1).tolist()}
              for i, l in labels.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": source, "config": asdict(config), "frames": frames}))


def load_labels(path: Path, config: LabelConfig | None = None) -> dict[int, FrameLabels] | None:
    """Labels written by `save_labels`; None when missing or written with another `config`."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if config is not None and data["config"] != asdict(config):
        return None
    return {int(i): FrameLabels(_array(f["boxes"]), _array(f["ignore"])) for i, f in data["frames"].items()}


def hand_labels() -> dict[str, dict[int, FrameLabels]]:
    """The hand-labelled evaluation frames: `video -> frame -> labels` (see `hand_labels.json`)."""
    data = json.loads(HAND_LABELS.read_text())["videos"]
    return {video: {int(i): FrameLabels(_array(f["boxes"]), _array(f.get("ignore", [])))
                    for i, f in frames.items()} for video, frames in data.items()}
