"""How stable the dense detector itself is when the image moves by a few pixels.

`map50_vs_dense` asks the eventful stream to reproduce the dense detections of the same frame.
This measures the detector's own floor for such agreement: the dense model on each frame
translated by S pixels (edges replicated; boxes moved back by S), scored as `bench` scores the
eventful detections, against the dense model on the untranslated frame. A camera that shakes by
a pixel changes the detections this much with no Eventful approximation at all. Example:

    python benchmarks/shift_stability.py vtest.avi --frames 20 --shifts 1,2,4,9,18 --json out/shift.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

import eventful_perception as ep
from eventful_perception.assets import resolve_video
from eventful_perception.bench import read_frames
from eventful_perception.models.results import Detections
from eventful_perception.training.metrics import GroundTruth, mean_average_precision

SCORE_FLOOR = 0.05  # the ranked predictions, as `bench` keeps them


def translate(rgb: np.ndarray, dx: int) -> np.ndarray:
    """`rgb` with its content moved `dx` pixels right (left when negative), edges replicated."""
    matrix = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(rgb, matrix, rgb.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def truth(detections: Detections, threshold: float) -> GroundTruth:
    keep = detections.scores >= threshold
    return GroundTruth(detections.boxes[keep], [l for l, k in zip(detections.labels, keep) if k])


def stability(model, frames: list[np.ndarray], shifts: list[int]) -> dict[str, float]:
    """mAP50 of the dense detections of every shifted frame against the unshifted ones."""
    dense = [model.dense(f, score_threshold=SCORE_FLOOR).detections
             for f in tqdm(frames, desc="dense", file=sys.stderr)]
    truths = [truth(d, model.default_score_threshold) for d in dense]
    out = {}
    for dx in tqdm(shifts, desc="shifts", file=sys.stderr):
        moved = [model.dense(translate(f, dx), score_threshold=SCORE_FLOOR).detections.shifted(-dx, 0)
                 for f in frames]
        out[str(dx)] = round(mean_average_precision(moved, truths), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="a clip (name of a set-up video or a path)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--shifts", default="1,2,4,9,18", help="horizontal shifts in frame pixels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write {shift_px: mAP50 vs unshifted} here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ep.load_model(args.model)
    frames = read_frames(resolve_video(args.video), args.start, args.frames, None, 0)
    result = stability(model, frames, [int(s) for s in args.shifts.split(",")])
    print(f"mAP50 of the dense detections on shifted frames vs unshifted ({args.video}, {args.frames} frames):")
    for dx, value in result.items():
        print(f"  {dx:>3} px: {value:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"video": args.video, "frames": args.frames, "map50": result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
