"""`eventful-perception detect VIDEO`: stateful eventful detection over a video file, no ROS.

Writes an annotated video (boxes, track IDs, labels, scores and the per-frame budget / tokens /
GFLOPs, and the stage with --granularity adaptive) and/or JSON lines, one per frame:
`{"frame": i, "detections": [{"id": "3", "label": "person", "score": 0.87, "box": [x1, y1, x2, y2]},
  ...], "usage": {"tokens_updated": .., "tokens_total": .., "gflops": .., "gflops_dense": ..,
  "stage": .., "stages_run": .., "short_side": ..}}`
with boxes in original-frame pixels; "id" is the track ID from the node's tracker
(`Detection2D.id`; "" while a new object is not yet confirmed, or with --no-tracking). The usage
fields are the node's `ComputeUsage` ones: with --granularity adaptive "stage" is the ladder
stage the frame exited at (0 = coarsest), the tokens are that stage's, "gflops" counts every
stage run and "gflops_dense" is the finest stage's dense pass; fixed: stage 0 of 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from eventful_perception import assets
from eventful_perception.drawing import annotate
from eventful_perception.stages import GRANULARITIES, load_ladder_config
from eventful_perception.tracking import UNTRACKED, StreamTracker

if TYPE_CHECKING:
    from eventful_perception.granularity import LadderConfig
    from eventful_perception.models.base import EventfulViT
    from eventful_perception.models.results import Result
    from eventful_perception.stages import StagedResult


def frame_record(index: int, staged: StagedResult, ids: list[str] | None = None) -> dict:
    """The JSON-lines record of one frame's result and stage, with the detections' track `ids`."""
    result, detections = staged.result, []
    if result.detections is not None:
        ids = ids or [UNTRACKED] * len(result.detections)
        for box, score, label, track_id in zip(result.detections.boxes, result.detections.scores,
                                               result.detections.labels, ids):
            detections.append({"id": track_id, "label": label, "score": round(float(score), 4),
                               "box": [round(float(v), 1) for v in box]})
    usage = result.usage
    return {"frame": index, "detections": detections,
            "usage": {"tokens_updated": int(usage.tokens_updated), "tokens_total": int(usage.tokens_total),
                      "gflops": round(float(usage.gflops), 4), "gflops_dense": round(float(usage.gflops_dense), 4),
                      "stage": staged.stage, "stages_run": staged.stages_run,
                      "short_side": staged.short_side}}


def read_video(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    """BGR frames (H, W, 3) of a video, at most `max_frames`."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    count = 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        count += 1
        yield frame
    capture.release()


def run_detect(args: argparse.Namespace) -> int:
    """The `detect` command; 0 on success, 2 for bad arguments."""
    try:
        video, ladder = _checked(args)
    except ValueError as error:
        print(f"eventful-perception detect: error: {error}", file=sys.stderr)
        return 2
    from eventful_perception.models.loading import load_model

    model = load_model(args.model, device=args.device)
    tracker, fps = None if args.no_tracking else StreamTracker(), _fps(video)
    writer, lines = None, open(args.json, "w") if args.json else None
    try:
        for index, frame, staged in _detect_frames(model, video, ladder, args):
            result = staged.result
            ids = frame_ids(tracker, result, frame.shape[:2], index / fps)
            if lines:
                lines.write(json.dumps(frame_record(index, staged, ids)) + "\n")
            if args.out:
                writer = writer or _video_writer(args.out, fps, frame.shape)
                stage = (staged.stage, staged.short_side) if ladder is not None else None
                writer.write(annotate(frame, result.detections, result.usage, args.budget, ids,
                                      stage))
    finally:
        if writer is not None:
            writer.release()
        if lines:
            lines.close()
    for output in (args.out, args.json):
        if output:
            print(f"wrote {Path(output).resolve()}")
    return 0


def frame_ids(tracker: StreamTracker | None, result: Result, frame_size: tuple[int, int],
              stamp: float) -> list[str]:
    """Track IDs of `result`'s detections on a frame of `frame_size` (H, W) taken at `stamp`
    seconds (all untracked without a tracker)."""
    detections = result.detections
    if detections is None:
        return []
    if tracker is None:
        return [UNTRACKED] * len(detections)
    return tracker.update(detections.boxes, detections.scores, frame_size, stamp)


def _checked(args: argparse.Namespace) -> tuple[Path, LadderConfig | None]:
    """The video and the granularity ladder's config (None with --granularity fixed)."""
    if not 0.0 < args.budget <= 1.0:
        raise ValueError(f"--budget must be in (0, 1], got {args.budget}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.exit_thresholds is not None and args.granularity != "adaptive":
        raise ValueError("--exit-thresholds needs --granularity adaptive")
    video = assets.resolve_video(args.video)
    if args.granularity == "fixed":
        return video, None
    from eventful_perception.models.base import EventfulViT

    threshold = (EventfulViT.default_score_threshold if args.score_threshold is None
                 else args.score_threshold)
    return video, load_ladder_config(args.exit_thresholds or "", threshold)


def _detect_frames(model: EventfulViT, video: Path, ladder: LadderConfig | None,
                   args: argparse.Namespace) -> Iterator[tuple[int, np.ndarray, StagedResult]]:
    """(index, BGR frame, StagedResult) for each frame, one stream (or ladder state) over the
    whole video."""
    from tqdm import tqdm

    from eventful_perception.eventful.stream import StreamConfig
    from eventful_perception.stages import StagedStream

    stream = StagedStream(model, StreamConfig(), ladder)
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    total = min(total, args.max_frames) if args.max_frames else total
    frames = tqdm(read_video(video, args.max_frames), total=total or None, desc=f"detect {video.name}", unit="frame")
    for index, frame in enumerate(frames):
        yield index, frame, stream(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), args.budget,
                                   score_threshold=args.score_threshold)


def _fps(video: Path) -> float:
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if fps > 0 else 10.0


def _video_writer(path: str, fps: float, shape: tuple[int, ...]) -> cv2.VideoWriter:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise ValueError(f"cannot write video {path}; use an .mp4 or .avi file name")
    return writer


def add_parser(subparsers) -> None:
    """Register `eventful-perception detect`."""
    parser = subparsers.add_parser(
        "detect", help="run the eventful detector over a video file (annotated video, JSON lines)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="video file, or a set-up video name such as vtest.avi")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="fraction of tokens recomputed per frame, in (0, 1] (default: %(default)s)")
    parser.add_argument("--model", default="default",
                        help='"default" or a Hugging Face checkpoint folder (default: %(default)s)')
    parser.add_argument("--out", help="annotated video to write, e.g. annotated.mp4")
    parser.add_argument("--json", help="JSON lines file to write, e.g. detections.jsonl")
    parser.add_argument("--max-frames", type=int, help="stop after N frames")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="minimum detection score (default: the model's)")
    parser.add_argument("--no-tracking", action="store_true",
                        help='no track IDs ("id" stays "" in the JSON lines)')
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto" (default: %(default)s)')
    parser.add_argument("--granularity", choices=GRANULARITIES, default="fixed",
                        help="fixed: every frame at the model's scale; adaptive: the granularity "
                             "ladder, coarse stage first while the camera moves at a budget below "
                             "the thresholds file's ladder_below (default: %(default)s)")
    parser.add_argument("--exit-thresholds", metavar="FILE",
                        help="with --granularity adaptive: the ladder's stages and exit "
                             "thresholds (`fit-exits` JSON; default: the shipped "
                             "config/exit_thresholds.json)")
    parser.set_defaults(func=run_detect)
