"""`person` labels from the teacher, cleaned up: class thresholds, ignore regions, tracks.

1. The teacher (`teacher.py`) gives boxes of two person classes, upright and lying, after NMS.
2. Upright boxes scoring >= `upright_threshold` and lying ones >= `lying_threshold` become
   `person` boxes (the lying class fires on jackets left on grass at 0.39-0.50, so its bar is
   higher); weaker boxes down to `ignore_threshold` become *ignore* regions (neither positives
   nor negatives in training and evaluation), as do boxes shorter than `min_height`.
3. In videos, a box must be confirmed by a teacher box of similar size and place in a
   neighbouring sampled frame (any box >= `ignore_threshold` counts); a box seen in one frame
   only becomes an ignore region.
4. On a static camera (given its empty scene), `person` boxes shrink to the pixels that differ
   from it (`background.py`): the teacher's boxes are about 1.6x as wide as the person.
The thresholds were calibrated against the hand-labelled frames in `hand_labels.json`. Stills
are not teacher-labelled: on them it calls a cat, fruit and a baboon persons at 0.55-0.63 (no
neighbouring frame can veto), so they carry hand labels (`still_labels`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eventful_perception.training.background import tighten_boxes
from eventful_perception.training.teacher import Teacher, TeacherBoxes

HAND_LABELS = Path(__file__).resolve().parent / "hand_labels.json"


@dataclass(frozen=True)
class LabelConfig:
    """Clean-up parameters (pixels are original-image pixels)."""

    upright_threshold: float = 0.25
    lying_threshold: float = 0.55
    ignore_threshold: float = 0.15
    min_height: float = 12.0
    track_distance: float = 1.0  # in box heights
    background_tightening: bool = True  # step 4, where a static camera's background is given


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


def label_video(teacher: Teacher, frames: dict[int, np.ndarray], step: int, config: LabelConfig,
                background: np.ndarray | None = None) -> dict[int, FrameLabels]:
    """Cleaned labels of sampled video frames `index -> RGB`, `step` frames apart, with tracks;
    `background`: a static camera's empty scene (`median_background`), for step 4."""
    raw = {i: teacher(frames[i]) for i in tqdm(sorted(frames), desc="teacher", unit="frame", leave=False)}
    labels = temporal_filter({i: clean(r, config) for i, r in raw.items()}, step, config)
    if background is None or not config.background_tightening:
        return labels
    return {i: FrameLabels(tighten_boxes(frames[i], l.boxes, background), l.ignore) for i, l in labels.items()}


def temporal_filter(labels: dict[int, FrameLabels], step: int, config: LabelConfig) -> dict[int, FrameLabels]:
    """Turn boxes that no neighbouring sampled frame confirms into ignore regions.

    A box is confirmed by a teacher box (person or ignore) `step` frames before or after whose
    centre lies within `track_distance` box heights and whose height is within a factor 1.4: a
    walker moves about their own width between sampled frames, so IoU would often be zero.
    """
    out = {}
    for i, label in labels.items():
        near = [labels[j] for j in (i - step, i + step) if j in labels]
        others = np.concatenate([np.concatenate([l.boxes, l.ignore]) for l in near]) if near else _array([])
        confirmed = _confirmed(label.boxes, others, config.track_distance) if near else np.ones(len(label.boxes), bool)
        out[i] = FrameLabels(label.boxes[confirmed], np.concatenate([label.ignore, label.boxes[~confirmed]]))
    return out


def _confirmed(boxes: np.ndarray, others: np.ndarray, distance: float) -> np.ndarray:
    """(K,) whether each box (K, 4) has a box among `others` (M, 4) close in place and size."""
    heights = boxes[:, 3] - boxes[:, 1]  # (K,)
    ratio = (others[None, :, 3] - others[None, :, 1]) / np.maximum(heights[:, None], 1e-6)  # (K, M)
    shift = np.linalg.norm(_centers(boxes)[:, None] - _centers(others)[None], axis=-1)  # (K, M)
    return ((shift <= distance * heights[:, None]) & (ratio >= 1 / 1.4) & (ratio <= 1.4)).any(axis=1)


def _centers(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2  # (K, 2)


def _array(boxes) -> np.ndarray:
    return np.array(boxes, np.float32).reshape(-1, 4)


def save_labels(labels: dict[int, FrameLabels], path: Path, source: str, config: LabelConfig
                ) -> dict[int, FrameLabels]:
    """Write labels as JSON: `{"source", "config", "frames": {index: {"boxes", "ignore"}}}`;
    returns them as `load_labels` reads them back (rounded to 0.1 px), so a first run and a
    cached one train alike."""
    frames = {str(i): {"boxes": np.round(l.boxes, 1).tolist(), "ignore": np.round(l.ignore, 1).tolist()}
              for i, l in labels.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": source, "config": asdict(config), "frames": frames}))
    return {int(i): FrameLabels(_array(f["boxes"]), _array(f["ignore"])) for i, f in frames.items()}


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
    return {video: {int(i): _hand(f) for i, f in frames.items()} for video, frames in data.items()}


def still_labels(name: str) -> FrameLabels:
    """Hand labels of a training still: its boxes in `hand_labels.json`, else no person at all."""
    stills = json.loads(HAND_LABELS.read_text())["stills"]
    return _hand(stills.get(name, {"boxes": []}))


def _hand(entry: dict) -> FrameLabels:
    return FrameLabels(_array(entry["boxes"]), _array(entry.get("ignore", [])))
