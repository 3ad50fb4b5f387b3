"""Training samples: labelled frames at several input scales, flips, colour jitter, zoom crops.

Every labelled frame is used whole at short sides 224 and 448 (the ends of the ladder), once
more flipped and colour-jittered at a random short side, and, when it shows people, once as a
zoom crop around a random person (it then spans 35-95 % of the crop's height) at a random short
side up to 518. With the frames' own sizes this puts persons between about 15 px and the whole
frame. A negative image (people-free by construction) is used once whole at a random short side,
flipped and jittered at random, and as `NEGATIVE_CROPS` zoom crops (1.5-4x) anywhere in it: the
person crops are upsampled, so without these the head would learn that blur means a person.
Every frame draws from its own seeded generator, so the plan is reproducible.
"""
from __future__ import annotations

import zlib
from collections.abc import Collection
from dataclasses import dataclass

import cv2
import numpy as np

from eventful_perception.training.labels import FrameLabels

FULL_SHORT_SIDES = (224, 448)
AUGMENTED_SHORT_SIDES = (224, 280, 336, 392, 448, 518)
NEGATIVE_CROPS = 2
_MIN_VISIBLE = 0.5  # a person cut by a crop stays a box if half of it is inside, else ignore


@dataclass(frozen=True)
class SampleSpec:
    """One training sample: a frame of a source, a crop (x1, y1, x2, y2) or None, a horizontal
    flip, colour jitter (brightness, contrast, saturation factors) and the input short side."""

    source: str
    frame: int
    short_side: int
    crop: tuple[int, int, int, int] | None = None
    flip: bool = False
    jitter: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def key(self) -> str:
        """A file-name-safe identifier, unique per distinct sample."""
        crop = "full" if self.crop is None else "-".join(map(str, self.crop))
        jitter = "-".join(f"{j:.2f}" for j in self.jitter)
        return f"{self.source}_{self.frame}_{self.short_side}_{crop}_{int(self.flip)}_{jitter}"


def plan(labels: dict[str, dict[int, FrameLabels]], sizes: dict[str, tuple[int, int]],
         seed: int = 0, negatives: Collection[str] = ()) -> list[SampleSpec]:
    """Sample specs for every labelled frame; `sizes[source]` is its (height, width); the sources
    in `negatives` are people-free images planned as negatives."""
    out = []
    for source in sorted(labels):
        for frame in sorted(labels[source]):
            rng = np.random.default_rng([seed, zlib.crc32(source.encode()), frame])  # changes stay local
            if source in negatives:
                out += _negative(source, frame, sizes[source], rng)
                continue
            out += [SampleSpec(source, frame, side) for side in FULL_SHORT_SIDES]
            out.append(SampleSpec(source, frame, int(rng.choice(AUGMENTED_SHORT_SIDES)), None, True, _jitter(rng)))
            boxes = labels[source][frame].boxes
            if len(boxes):
                crop = zoom_crop(boxes[rng.integers(len(boxes))], sizes[source], rng)
                out.append(SampleSpec(source, frame, int(rng.choice(AUGMENTED_SHORT_SIDES)), crop,
                                      bool(rng.integers(2)), _jitter(rng)))
    return out


def _negative(source: str, frame: int, size: tuple[int, int], rng: np.random.Generator) -> list[SampleSpec]:
    height, width = size
    out = [SampleSpec(source, frame, int(rng.choice(AUGMENTED_SHORT_SIDES)), None, bool(rng.integers(2)), _jitter(rng))]
    for _ in range(NEGATIVE_CROPS):
        zoom = rng.uniform(1.5, 4.0)
        crop_h, crop_w = int(height / zoom), int(width / zoom)
        x1, y1 = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        out.append(SampleSpec(source, frame, int(rng.choice(AUGMENTED_SHORT_SIDES)), (x1, y1, x1 + crop_w, y1 + crop_h),
                              bool(rng.integers(2)), _jitter(rng)))
    return out


def _jitter(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(round(v, 2)) for v in rng.uniform([0.7, 0.7, 0.6], [1.3, 1.3, 1.4]))


def zoom_crop(box: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A crop of the frame's aspect in which `box` spans 35-95 % of the height (at most 4x zoom)."""
    height, width = size
    box_height = float(box[3] - box[1])
    crop_h = float(np.clip(box_height / rng.uniform(0.35, 0.95), height / 4, height))
    crop_w = min(crop_h * width / height, width)
    cx = (box[0] + box[2]) / 2 + rng.uniform(-0.25, 0.25) * crop_w
    cy = (box[1] + box[3]) / 2 + rng.uniform(-0.15, 0.15) * crop_h
    x1 = int(np.clip(cx - crop_w / 2, 0, width - crop_w))
    y1 = int(np.clip(cy - crop_h / 2, 0, height - crop_h))
    return x1, y1, int(x1 + crop_w), int(y1 + crop_h)


def render(spec: SampleSpec, rgb: np.ndarray, labels: FrameLabels) -> tuple[np.ndarray, FrameLabels]:
    """The sample's image (RGB uint8) and its labels in the sample image's pixels."""
    boxes, ignore = labels.boxes.copy(), labels.ignore.copy()
    if spec.crop is not None:
        x1, y1, x2, y2 = spec.crop
        rgb = rgb[y1:y2, x1:x2]
        boxes, ignore = _crop_boxes(boxes, ignore, spec.crop)
    if spec.flip:
        rgb = rgb[:, ::-1]
        boxes, ignore = _flip(boxes, rgb.shape[1]), _flip(ignore, rgb.shape[1])
    return color_jitter(np.ascontiguousarray(rgb), spec.jitter), FrameLabels(boxes, ignore)


def _crop_boxes(boxes: np.ndarray, ignore: np.ndarray, crop: tuple[int, int, int, int]):
    x1, y1, x2, y2 = crop
    offset = np.array([x1, y1, x1, y1], np.float32)
    limit = np.array([x2 - x1, y2 - y1] * 2, np.float32)
    clipped = np.clip(boxes - offset, 0, limit)
    visible = _area(clipped) >= _MIN_VISIBLE * np.maximum(_area(boxes), 1e-6)
    cut = np.concatenate([np.clip(ignore - offset, 0, limit), clipped[~visible]])
    return clipped[visible], cut[_area(cut) > 0]


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


def _flip(boxes: np.ndarray, width: int) -> np.ndarray:
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1).reshape(-1, 4)


def color_jitter(rgb: np.ndarray, jitter: tuple[float, float, float]) -> np.ndarray:
    """Brightness, contrast (around the mean) and saturation factors applied to RGB uint8."""
    if jitter == (1.0, 1.0, 1.0):
        return rgb
    brightness, contrast, saturation = jitter
    image = rgb.astype(np.float32) * brightness
    image = (image - image.mean()) * contrast + image.mean()
    grey = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    image = grey[..., None] + (image - grey[..., None]) * saturation
    return np.clip(image, 0, 255).astype(np.uint8)
