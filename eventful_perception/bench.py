"""`eventful-perception bench VIDEO`: eventful vs dense on the same frames, in one process.

Every frame goes through the dense model and through one eventful stream per budget, interleaved
frame by frame, so load from other processes affects both sides alike; the first `--warmup`
frames (a stream's first frame is a full update) are not measured. Writes JSON:
`{"machine": {cpu, threads, torch, device}, "stale_map50_vs_dense", "results": [{budget, dense_ms,
eventful_ms, speedup, gflops_dense, gflops, flops_ratio, map50_vs_dense, feature_cosine, state_mb,
attention}, ...]}`: medians of per-frame milliseconds, speedup = their ratio, mean GFLOPs
(1 multiply-add = 1 FLOP), mAP50 of the eventful detections scored against the dense detections
of the same frames, mean cosine of the final backbone tokens, and the largest stream state in MB.
`stale_map50_vs_dense` scores each frame's predecessor's dense detections instead: what skipping
every frame would keep, the floor a stream has to beat, and how steady the reference itself is.
`--ladder` compares the granularity ladder instead (`bench_ladder`, its own JSON).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from eventful_perception.assets import resolve_video
from eventful_perception.detect import read_video
from eventful_perception.eventful.stream import ATTENTION_MODES, Stream, StreamConfig
from eventful_perception.models.base import EventfulViT
from eventful_perception.models.results import Detections, Result
from eventful_perception.training.metrics import GroundTruth, mean_average_precision

# Eventful detections are scored down to this score, so each keeps its whole precision-recall
# curve; the dense detections above the model's threshold are the ground truth.
_SCORE_FLOOR = 0.05
DEFAULT_BUDGETS = "1.0,0.5,0.25,0.1"


@dataclass
class _Track:
    """One budget's stream and its per-frame measurements."""

    budget: float
    stream: Stream
    ms: list[float] = field(default_factory=list)
    gflops: list[float] = field(default_factory=list)
    cosine: list[float] = field(default_factory=list)
    detections: list[Detections | None] = field(default_factory=list)
    state_bytes: int = 0


@dataclass
class DenseReference:
    """The dense model's per-frame ms, GFLOPs and detections (the ground truth) of measured frames,
    and for each of them the previous frame's dense detections (`stale`)."""

    ms: list[float] = field(default_factory=list)
    gflops: list[float] = field(default_factory=list)
    truths: list[GroundTruth | None] = field(default_factory=list)
    stale: list[Detections | None] = field(default_factory=list)
    _previous: Detections | None = None

    def run(self, model: EventfulViT, frame: np.ndarray, measured: bool) -> Result:
        """The dense result of `frame`, timed; recorded when `measured`."""
        dense, ms = _timed(lambda: model.dense(frame, score_threshold=_SCORE_FLOOR), model.device)
        if measured:
            self.ms.append(ms)
            self.gflops.append(dense.usage.gflops)
            self.truths.append(_truth(dense, model.default_score_threshold))
            self.stale.append(self._previous)
        self._previous = dense.detections
        return dense

    def stale_map50(self) -> float | None:
        """mAP50 of each frame's predecessor's dense detections against the frame's own: the
        fidelity of skipping every frame (the first measured frame needs a warm-up frame before
        it; without one, or without detections, None)."""
        if not self.truths or self.truths[0] is None or self.stale[0] is None:
            return None
        value = mean_average_precision(self.stale, self.truths)
        return None if np.isnan(value) else round(value, 4)


def bench(model: EventfulViT, frames: list[np.ndarray], budgets: list[float], config: StreamConfig,
          warmup: int, eventful: EventfulViT | None = None) -> tuple[list[dict], DenseReference]:
    """One result dict per budget over `frames` (RGB uint8), and the dense reference; the first
    `warmup` frames are not measured.

    `eventful` (e.g. a bfloat16 copy) runs the streams instead of `model`, which is the reference.
    """
    eventful = eventful or model
    tracks = [_Track(b, eventful.new_stream(config)) for b in budgets]
    reference = DenseReference()
    for i, frame in enumerate(tqdm(frames, desc="bench dense+eventful", unit="frame", file=sys.stderr)):
        dense = reference.run(model, frame, i >= warmup)
        for track in tracks:
            result, ms = _timed(lambda: eventful(frame, track.stream, budget=track.budget,
                                                 score_threshold=_SCORE_FLOOR), model.device)
            if i >= warmup:
                _record(track, result, dense, ms)
    return [_summary(t, reference.ms, reference.gflops, reference.truths, config.attention) for t in tracks], reference


def _timed(call, device: torch.device) -> tuple[Result, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = call()  # returns CPU copies of the features, so an accelerator has finished
    return result, (time.perf_counter() - start) * 1e3


def _truth(dense: Result, threshold: float) -> GroundTruth | None:
    if dense.detections is None:
        return None
    keep = dense.detections.scores >= threshold
    return GroundTruth(dense.detections.boxes[keep], [l for l, k in zip(dense.detections.labels, keep) if k])


def _record(track: _Track, result: Result, dense: Result, ms: float) -> None:
    track.ms.append(ms)
    track.gflops.append(result.usage.gflops)
    track.cosine.append(float(F.cosine_similarity(result.features, dense.features, dim=-1).mean()))
    track.detections.append(result.detections)
    track.state_bytes = max(track.state_bytes, track.stream.memory_bytes())


def _summary(track: _Track, dense_ms: list[float], dense_gflops: list[float],
             truths: list[GroundTruth | None], attention: str) -> dict:
    gflops, gflops_dense = float(np.mean(track.gflops)), float(np.mean(dense_gflops))
    map50 = None
    if truths and truths[0] is not None:
        map50 = mean_average_precision(track.detections, truths)
        map50 = None if np.isnan(map50) else round(map50, 4)  # NaN: the dense model found nothing
    dense_median, eventful_median = float(np.median(dense_ms)), float(np.median(track.ms))
    return {
        "budget": track.budget,
        "dense_ms": round(dense_median, 2),
        "eventful_ms": round(eventful_median, 2),
        "speedup": round(dense_median / eventful_median, 3),
        "gflops_dense": float(f"{gflops_dense:.5g}"),  # significant digits: tiny test models too
        "gflops": float(f"{gflops:.5g}"),
        "flops_ratio": round(gflops_dense / gflops, 3),
        "map50_vs_dense": map50,
        "feature_cosine": round(float(np.mean(track.cosine)), 6),
        "state_mb": round(track.state_bytes / 1e6, 1),
        "attention": attention,
    }


def machine(device: torch.device) -> dict:
    """The machine a benchmark ran on."""
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {"cpu": _cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": name}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_frames(video: Path, start: int, count: int, size: tuple[int, int] | None,
                pan: int) -> list[np.ndarray]:
    """`count` RGB frames from frame `start`, resized to `size` (W, H); with `pan` > 0 a window of
    3/4 the width slides `pan` pixels per frame (turning back at the edges): a moving camera."""
    frames = []
    for i, bgr in enumerate(read_video(video, start + count)):
        if i < start:
            continue
        if size is not None:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(_pan_window(bgr, pan, len(frames)), cv2.COLOR_BGR2RGB))
    if len(frames) < count:
        raise ValueError(f"{video} has only {start + len(frames)} frames; asked for {count} from {start}")
    return frames


def _pan_window(frame: np.ndarray, pan: int, t: int) -> np.ndarray:
    if pan == 0:
        return frame
    width = frame.shape[1]
    window = width * 3 // 4
    travel = width - window
    offset = (pan * t) % (2 * travel)
    left = offset if offset <= travel else 2 * travel - offset
    return np.ascontiguousarray(frame[:, left:left + window])


def plot(results: list[dict], title: str, path: Path) -> None:
    """Speedup (with the GFLOPs ratio, its ideal) and mAP50 vs dense against the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [r["budget"] for r in results]
    fig, (speed, fidelity) = plt.subplots(1, 2, figsize=(10, 4))
    speed.plot(budgets, [r["speedup"] for r in results], "o-", label="measured speedup")
    speed.plot(budgets, [r["flops_ratio"] for r in results], "s--", label="GFLOPs ratio")
    speed.set(xscale="log", yscale="log", xlabel="token budget", ylabel="x faster than dense")
    fidelity.plot(budgets, [r["map50_vs_dense"] for r in results], "o-", label="mAP50 vs dense")
    fidelity.plot(budgets, [r["feature_cosine"] for r in results], "s--", label="feature cosine")
    fidelity.axhline(0.99, color="gray", linestyle=":", label="0.99")
    fidelity.set(xscale="log", xlabel="token budget", ylabel="agreement with dense")
    for axis in (speed, fidelity):
        axis.set_xticks(budgets, [f"{b:g}" for b in budgets])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
        axis.legend()
    speed.set_yticks([1, 2, 5, 10, 20], ["1", "2", "5", "10", "20"])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_bench(args: argparse.Namespace) -> int:
    """The `bench` command (`--ladder`: `bench_ladder`); 0 on success, 2 for bad arguments."""
    from eventful_perception import bench_ladder

    try:
        budgets, size, video = _checked(args)
        ladder = bench_ladder.read_config(args.exit_thresholds) if args.ladder else None
        reuse = bench_ladder.read_reuse(args.reuse, ladder[0]) if args.ladder else None
        frames = read_frames(video, args.start, args.frames + args.warmup, size, args.pan)
    except ValueError as error:
        print(f"eventful-perception bench: error: {error}", file=sys.stderr)
        return 2
    from eventful_perception.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    if ladder:
        return bench_ladder.run_ladder(args, model, ladder, frames, budgets, video, reuse)
    budgets = budgets or [float(b) for b in DEFAULT_BUDGETS.split(",")]
    eventful = None if args.dtype == "float32" else copy.deepcopy(model).to(getattr(torch, args.dtype))
    overrides = {"attention": args.attention, "score_priority": args.score_priority}
    config = StreamConfig(**{k: v for k, v in overrides.items() if v is not None})
    results, reference = bench(model, frames, budgets, config, args.warmup, eventful)
    report = {"machine": machine(model.device), "stale_map50_vs_dense": reference.stale_map50(), "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    tokens = model.dense(frames[0]).usage.tokens_total
    title = (f"{args.model} on {video.name}: {tokens} tokens, {args.frames} frames, pan {args.pan} px/frame, "
             f"attention {config.attention}, {args.dtype}; {report['machine']['cpu']}, "
             f"{torch.get_num_threads()} threads")
    _print_table(title, results)
    print(stale_line(report["stale_map50_vs_dense"]))
    if args.plot:
        plot(results, title, Path(args.plot))
    print(f"wrote {Path(args.json).resolve()}" + (f" and {Path(args.plot).resolve()}" if args.plot else ""))
    return 0


def stale_line(map50: float | None) -> str:
    """How much of the dense detections skipping every frame keeps: the floor a stream must beat."""
    value = "n/a" if map50 is None else f"{map50:.3f}"
    return f"previous frame's dense detections (skip every frame), mAP50 vs dense: {value}"


def _print_table(title: str, results: list[dict]) -> None:
    print(title)
    print("budget | dense ms | eventful ms | speedup | GFLOPs ratio | mAP50 vs dense | cosine  | state MB")
    for r in results:
        map50 = "n/a" if r["map50_vs_dense"] is None else f"{r['map50_vs_dense']:.3f}"
        print(f"{r['budget']:6g} | {r['dense_ms']:8.1f} | {r['eventful_ms']:11.1f} | {r['speedup']:6.2f}x"
              f" | {r['flops_ratio']:11.2f}x | {map50:>14} | {r['feature_cosine']:.5f}"
              f" | {r['state_mb']:8.1f}")


def _checked(args: argparse.Namespace) -> tuple[list[float] | None, tuple[int, int] | None, Path]:
    """Budgets (None: not given), size, video; ValueError for bad arguments."""
    budgets = None
    if args.budgets is not None:
        try:
            budgets = [float(b) for b in args.budgets.split(",")]
        except ValueError:
            raise ValueError(f"--budgets must be comma-separated numbers, got {args.budgets!r}") from None
        if not budgets or not all(0.0 < b <= 1.0 for b in budgets):
            raise ValueError(f"--budgets must be in (0, 1], got {args.budgets!r}")
    if args.ladder and (args.attention or args.dtype != "float32"):
        raise ValueError("--ladder runs the library defaults: no --attention or --dtype")
    size = None
    if args.size:
        parts = args.size.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--size must be WxH in pixels, e.g. 640x480, got {args.size!r}")
        size = (int(parts[0]), int(parts[1]))
    for name in ("frames", "start", "warmup", "pan", "threads"):
        minimum = 1 if name == "frames" else 0
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name} must be >= {minimum}, got {getattr(args, name)}")
    return budgets, size, resolve_video(args.video)


def add_parser(subparsers) -> None:
    """Register `eventful-perception bench`."""
    parser = subparsers.add_parser(
        "bench", help="eventful vs dense speed, GFLOPs and fidelity on a video, per budget (JSON, plot)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="video file, or a set-up video name such as vtest.avi")
    parser.add_argument("--budgets", default=None,
                        help=f"comma-separated token budgets in (0, 1] (default: {DEFAULT_BUDGETS}; "
                             "with --ladder the budgets fitted in --exit-thresholds)")
    parser.add_argument("--frames", type=int, default=30, help="measured frames (default: %(default)s)")
    parser.add_argument("--start", type=int, default=0,
                        help="first frame of the video (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="frames run before measuring; a stream's first is a full update "
                             "(default: %(default)s)")
    parser.add_argument("--size", help="resize frames to WxH pixels first, e.g. 640x480 (default: as read)")
    parser.add_argument("--pan", type=int, default=0,
                        help="moving camera: a 3/4-width window slides PX pixels per frame "
                             "(default: 0, static)")
    parser.add_argument("--attention", choices=ATTENTION_MODES, default=None,
                        help="StreamConfig.attention (default: the library default)")
    parser.add_argument("--score-priority", type=float, default=None,
                        help="StreamConfig.score_priority, detection-aware gating; 0 = off "
                             "(default: the library default)")
    parser.add_argument("--model", default="default",
                        help='"default" or a Hugging Face checkpoint folder (default: %(default)s)')
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: 0 = torch's choice)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="dtype of the eventful model; dense stays float32 as the reference "
                             "(default: %(default)s)")
    parser.add_argument("--ladder", action="store_true",
                        help="compare the granularity ladder, the controller and motion-compensated "
                             "gating with the finest stage alone (see bench_ladder)")
    parser.add_argument("--exit-thresholds", default=None,
                        help="with --ladder: fitted exit thresholds JSON (default: the shipped "
                             "config/exit_thresholds.json)")
    parser.add_argument("--reuse", default=None,
                        help="with --ladder: DVT feature-reuse modules, a folder, 'default' (the "
                             "default detector's) or 'none' (default: the exit thresholds file's)")
    parser.add_argument("--json", required=True, help="results file to write, e.g. bench.json")
    parser.add_argument("--plot", help="plot to write: speedup and mAP50 vs budget, e.g. bench.png")
    parser.set_defaults(func=run_bench)
