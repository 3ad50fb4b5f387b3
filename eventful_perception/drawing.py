"""Annotation helpers shared by `eventful-perception detect` and the node's `detection_image`.

numpy and OpenCV only (no torch), so the node can draw without importing the model code.
Colours are applied to the image's channels as given, so they work for RGB and BGR alike.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL = (0, 0, 0)
_TEXT = (255, 255, 255)


class DetectionsLike(Protocol):
    """What `annotate` reads from detections (see `models.results.Detections`)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]


class UsageLike(Protocol):
    """What the overlay reads from a frame's compute usage (see `models.results.Usage`)."""

    tokens_updated: int
    tokens_total: int
    gflops: float
    gflops_dense: float


def label_color(label: str) -> tuple[int, int, int]:
    """A bright colour that is the same for a label in every run and process."""
    return _hue_color(zlib.crc32(label.encode()) % 180)


def track_color(track_id: str) -> tuple[int, int, int]:
    """A bright colour per track ID; consecutive numeric IDs are 111 of 180 hues apart (the
    golden ratio), so neighbours in time never look alike."""
    return _hue_color(int(track_id) * 111 % 180) if track_id.isdigit() else label_color(track_id)


def _hue_color(hue: int) -> tuple[int, int, int]:
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    labels: Sequence[str], ids: Sequence[str] | None = None) -> np.ndarray:
    """Boxes (K, 4) x1, y1, x2, y2 with "#id label 0.87" captions drawn onto a copy of `image`
    (H, W, 3). A tracked box (non-empty id) is coloured by its ID, so a switch shows as a new
    colour; an untracked one by its label."""
    out = np.ascontiguousarray(image).copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    ids = [""] * len(labels) if ids is None else ids
    for box, score, label, track_id in zip(np.asarray(boxes).reshape(-1, 4),
                                           np.asarray(scores).reshape(-1), labels, ids):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = track_color(track_id) if track_id else label_color(label)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        caption = f"#{track_id} {label} {score:.2f}" if track_id else f"{label} {score:.2f}"
        (w, h), baseline = cv2.getTextSize(caption, _FONT, 0.45, 1)
        top = max(y1 - h - baseline - 2, 0)
        cv2.rectangle(out, (x1, top), (x1 + w + 4, top + h + baseline + 2), color, cv2.FILLED)
        cv2.putText(out, caption, (x1 + 2, top + h + 1), _FONT, 0.45, _PANEL, 1, cv2.LINE_AA)
    return out


def stage_text(stage: int, short_side: int) -> str:
    """The granularity stage a frame exited at, e.g. "stage 1 (336 px)" (0 = coarsest)."""
    return f"stage {stage} ({short_side} px)"


def usage_lines(usage: UsageLike, budget: float | None = None,
                stage: tuple[int, int] | None = None) -> list[str]:
    """Overlay text: budget, tokens updated of total, GFLOPs spent of dense, and the
    granularity `stage` (index, short side) when given."""
    lines = [] if budget is None else [f"budget {budget:.2f}"]
    share = usage.tokens_updated / max(usage.tokens_total, 1)
    lines.append(f"tokens {usage.tokens_updated}/{usage.tokens_total} ({share:.0%})")
    lines.append(f"GFLOPs {usage.gflops:.1f}/{usage.gflops_dense:.1f}")
    if stage is not None:
        lines.append(stage_text(*stage))
    return lines


def draw_text_panel(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Lines of white text on a black panel in the top-left corner of a copy of `image`."""
    out = np.ascontiguousarray(image).copy()
    if not lines:
        return out
    scale = max(0.4, min(out.shape[:2]) / 900)
    sizes = [cv2.getTextSize(line, _FONT, scale, 1)[0] for line in lines]
    step = max(h for _, h in sizes) + 8
    width = max(w for w, _ in sizes) + 12
    cv2.rectangle(out, (0, 0), (min(width, out.shape[1] - 1), min(step * len(lines) + 6, out.shape[0] - 1)),
                  _PANEL, cv2.FILLED)
    for i, line in enumerate(lines):
        cv2.putText(out, line, (6, step * (i + 1)), _FONT, scale, _TEXT, 1, cv2.LINE_AA)
    return out


def annotate(image: np.ndarray, detections: DetectionsLike | None, usage: UsageLike,
             budget: float | None = None, ids: Sequence[str] | None = None,
             stage: tuple[int, int] | None = None) -> np.ndarray:
    """`image` with the detections (and their track `ids`) and the budget / tokens / GFLOPs
    (/ granularity stage) overlay drawn on a copy."""
    if detections is not None:
        image = draw_detections(image, detections.boxes, detections.scores, detections.labels,
                                ids)
    return draw_text_panel(image, usage_lines(usage, budget, stage))
