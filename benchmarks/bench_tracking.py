"""What the token budget costs in tracking terms: ID switches and fragmented tracks per 100 frames.

The reference tracks are ByteTrack (the node's tracker, same thresholds) over the dense model's
detections; each budget runs the eventful model on its own stream over the same frames, tracks
its detections the same way, and is compared with the reference per frame (CLEAR MOT matching:
a correspondence is kept while its boxes overlap with IoU >= --iou, the rest are matched by
Hungarian assignment on IoU). An ID switch: a reference track is matched to another track ID than
the last time it was matched. A fragmentation: a reference track is covered, loses its match,
and is covered again. A row of the dense boxes plus a pixel of Gaussian noise (--jitter) shows
the metric's floor: what detections that barely differ already cost. Clips: the static video, and
a panning crop of it (a window --crop-width px wide sliding --pan-step px per frame, turning at the
edges). Example:

    nice -n 10 python benchmarks/bench_tracking.py --frames 100 --budgets 1 0.5 0.25 0.1
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventful_perception.clips import panning  # noqa: E402
from eventful_perception.assets import resolve_video  # noqa: E402
from eventful_perception.detect import read_video  # noqa: E402
from eventful_perception.tracking import StreamTracker  # noqa: E402
from eventful_perception.training.metrics import iou_matrix  # noqa: E402

FrameTracks = tuple[np.ndarray, list[str]]  # boxes (K, 4) x1, y1, x2, y2 and their track IDs


@dataclass(frozen=True)
class TrackErrors:
    """Tracking errors of hypothesis tracks against reference tracks over `frames` frames."""

    frames: int
    id_switches: int
    fragmentations: int
    covered: int  # reference track-frames matched by a tracked hypothesis
    reference: int  # reference track-frames

    def per_100(self, count: int) -> float:
        return 100.0 * count / max(self.frames, 1)


@dataclass(frozen=True)
class Row:
    """One compared run: its tracks and its mean GFLOPs per frame."""

    tracks: list[FrameTracks]
    gflops: float


def compare_tracks(reference: list[FrameTracks], hypothesis: list[FrameTracks],
                   min_iou: float = 0.5) -> TrackErrors:
    """ID switches and fragmentations of `hypothesis` against `reference`, frame by frame.

    Detections with an empty ID (not tracked) take part in neither side.
    """
    last_match: dict[str, str] = {}  # reference ID -> hypothesis ID it was last matched to
    covered_before: dict[str, bool] = {}  # reference ID -> matched at its previous frame
    switches = fragments = covered = total = 0
    for (ref_boxes, ref_ids), (hyp_boxes, hyp_ids) in zip(reference, hypothesis):
        ref = [i for i, track_id in enumerate(ref_ids) if track_id]
        hyp = [j for j, track_id in enumerate(hyp_ids) if track_id]
        iou = iou_matrix(ref_boxes[ref].reshape(-1, 4), hyp_boxes[hyp].reshape(-1, 4))  # (R, H)
        matches = _matches(iou, [ref_ids[i] for i in ref], [hyp_ids[j] for j in hyp], last_match,
                           min_iou)
        total += len(ref)
        covered += len(matches)
        for r, h in matches.items():
            ref_id, hyp_id = ref_ids[ref[r]], hyp_ids[hyp[h]]
            if ref_id in last_match and last_match[ref_id] != hyp_id:
                switches += 1
            if covered_before.get(ref_id) is False:
                fragments += 1
            last_match[ref_id] = hyp_id
        for r in range(len(ref)):
            ref_id = ref_ids[ref[r]]
            if r in matches or ref_id in covered_before:
                covered_before[ref_id] = r in matches
    return TrackErrors(len(reference), switches, fragments, covered, total)


def _matches(iou: np.ndarray, ref_ids: list[str], hyp_ids: list[str],
             last_match: dict[str, str], min_iou: float) -> dict[int, int]:
    """Reference index -> hypothesis index: kept correspondences first, then Hungarian on IoU."""
    matches = {}
    for r, ref_id in enumerate(ref_ids):
        previous = last_match.get(ref_id)
        if previous in hyp_ids and iou[r, hyp_ids.index(previous)] >= min_iou:
            matches[r] = hyp_ids.index(previous)
    free_r = [r for r in range(len(ref_ids)) if r not in matches]
    free_h = [h for h in range(len(hyp_ids)) if h not in matches.values()]
    if free_r and free_h:
        sub = iou[np.ix_(free_r, free_h)]  # (R', H')
        for a, b in zip(*linear_sum_assignment(-sub)):
            if sub[a, b] >= min_iou:
                matches[free_r[a]] = free_h[b]
    return matches


def clip_frames(video: Path, frames: int, pan: bool, crop_width: int,
                pan_step: int) -> Iterator[np.ndarray]:
    """RGB frames of the static clip, or of its panning crop."""
    rgb = (cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in read_video(video, frames))
    return panning(rgb, crop_width, pan_step) if pan else rgb


def run_clip(model, frames: Iterator[np.ndarray], count: int, budgets: list[float], fps: float,
             jitters: list[float], desc: str) -> tuple[list[FrameTracks], dict[str, Row]]:
    """Reference tracks (dense) and a row per budget and per jitter of the dense boxes."""
    streams = {f"{budget:g}": (budget, model.new_stream()) for budget in budgets}
    noisy = {f"dense, boxes + {sigma:g} px noise": sigma for sigma in jitters}
    trackers = {key: StreamTracker() for key in ["dense", *streams, *noisy]}
    tracks: dict[str, list[FrameTracks]] = {key: [] for key in trackers}
    gflops = {key: 0.0 for key in trackers}
    rng = np.random.default_rng(0)
    for index, frame in enumerate(tqdm(frames, total=count, desc=desc, unit="frame")):
        results = {"dense": model.dense(frame)}
        results.update({key: model(frame, stream, budget=budget)
                        for key, (budget, stream) in streams.items()})
        detections = {key: (r.detections.boxes, r.detections.scores, r.usage.gflops)
                      for key, r in results.items()}
        boxes, scores, spent = detections["dense"]
        detections.update({key: (boxes + rng.normal(0.0, sigma, boxes.shape).astype(np.float32),
                                 scores, spent) for key, sigma in noisy.items()})
        for key, (boxes, scores, spent) in detections.items():
            ids = trackers[key].update(boxes, scores, frame.shape[:2], index / fps)
            tracks[key].append((boxes, ids))
            gflops[key] += spent / count
    return tracks.pop("dense"), {key: Row(tracks[key], gflops[key]) for key in tracks}


def report(name: str, reference: list[FrameTracks], rows: dict[str, Row],
           min_iou: float) -> list[str]:
    """Markdown table lines for one clip."""
    lines = [f"{name}: {len(reference)} frames, {_count_ids(reference)} reference tracks",
             "| budget | ID switches / 100 frames | fragmentations / 100 frames | "
             "reference covered | tracks | GFLOPs / frame |", "|---|---|---|---|---|---|"]
    for label, row in rows.items():
        errors = compare_tracks(reference, row.tracks, min_iou)
        lines.append(f"| {label} | {errors.per_100(errors.id_switches):.1f} | "
                     f"{errors.per_100(errors.fragmentations):.1f} | "
                     f"{errors.covered / max(errors.reference, 1):.1%} | "
                     f"{_count_ids(row.tracks)} | {row.gflops:.1f} |")
    return lines


def _count_ids(tracks: list[FrameTracks]) -> int:
    return len({track_id for _, ids in tracks for track_id in ids if track_id})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default",
                        help='"default" or a checkpoint folder with a detection head')
    parser.add_argument("--video", default="vtest.avi", help="video file or set-up video name")
    parser.add_argument("--frames", type=int, default=100, help="frames per clip")
    parser.add_argument("--budgets", type=float, nargs="*", default=[1.0, 0.5, 0.25, 0.1],
                        help="token budgets, one eventful stream each (none: only dense and "
                             "--jitter rows)")
    parser.add_argument("--clips", nargs="+", default=["static", "pan"], choices=["static", "pan"],
                        help="static: the video as it is; pan: its panning crop")
    parser.add_argument("--crop-width", type=int, default=512, help="panning crop width in px")
    parser.add_argument("--pan-step", type=int, default=3, help="panning speed in px per frame")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a track correspondence")
    parser.add_argument("--jitter", type=float, nargs="*", default=[1.0],
                        help="also track the dense boxes plus Gaussian noise of these std devs "
                             "(px): the metric's floor for detections that barely differ")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from eventful_perception.models.loading import load_model

    torch.set_num_threads(args.threads)
    video = resolve_video(args.video)
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    count = min(args.frames, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    capture.release()
    model = load_model(args.model, device=args.device)
    for clip in args.clips:
        pan = clip == "pan"
        name = (f"{video.name}, {args.crop_width} px crop panning {args.pan_step} px/frame"
                if pan else f"{video.name}, static")
        frames = clip_frames(video, count, pan, args.crop_width, args.pan_step)
        reference, rows = run_clip(model, frames, count, args.budgets, fps, args.jitter, clip)
        print("\n".join(report(name, reference, rows, args.iou)) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
