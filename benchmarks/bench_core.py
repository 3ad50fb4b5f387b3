"""Eventful vs dense on real video frames, in one process: ms/frame, speedups, GFLOPs, accuracy.

Also measures where the sparse attention update stops beating torch's fused dense attention
(the constant `SPARSE_ATTENTION_MAX_FRACTION` in `eventful_perception/eventful/stream.py`).
Uses the default DINOv2-S backbone when `eventful-perception setup` has run, else a random model
of the same size (1377 tokens for a 768x576 frame). Example:

    python benchmarks/bench_core.py --frames 20 --budgets 1 0.5 0.2 0.1 0.05 --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventful_perception.eventful.attention import SparseAttention, dense_attention  # noqa: E402
from eventful_perception.eventful.counting import FlopCounter  # noqa: E402
from eventful_perception.eventful.stream import Stream, StreamConfig  # noqa: E402
from eventful_perception.models.dinov2 import Dinov2Config, Dinov2Model  # noqa: E402
from eventful_perception.models.loading import load_checkpoint  # noqa: E402

_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = os.environ.get("EVENTFUL_PERCEPTION_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))
    parser.add_argument("--model", default="auto",
                        help="checkpoint folder, 'random' (DINOv2-S sized), or 'auto' (default backbone if set up)")
    parser.add_argument("--video", default=f"{cache}/data/vtest.avi", help="video file (RGB frames are read from it)")
    parser.add_argument("--frames", type=int, default=16, help="frames per run (the first is a full frame)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.2, 0.1, 0.05])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--short-side", type=int, default=448, help="frame short side in pixels")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5],
                        help="changed-token fractions for the attention crossover")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per attention measurement")
    parser.add_argument("--modes", nargs="+", default=["auto", "sparse", "dense"], choices=["auto", "sparse", "dense"],
                        help="attention modes to run per budget (StreamConfig.attention)")
    parser.add_argument("--cache-dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the sparse attention's exp-logit cache")
    parser.add_argument("--skip-model", action="store_true", help="only measure the attention crossover")
    return parser.parse_args(argv)


def build_model(name: str, short_side: int, device: torch.device) -> tuple[Dinov2Model, str]:
    from eventful_perception.assets import default_backbone_dir

    folder = default_backbone_dir()
    if name == "auto":
        name = str(folder) if (folder / "model.safetensors").is_file() else "random"
    if name == "random":
        torch.manual_seed(0)
        model = Dinov2Model(Dinov2Config(**_SMALL), short_side)
        with torch.no_grad():
            model.embeddings.position_embeddings.normal_(0, 0.02)
            model.embeddings.cls_token.normal_(0, 0.02)
        return model.to(device).eval(), "random DINOv2-S"
    return load_checkpoint(Path(name), short_side).to(device).eval(), name


def read_frames(path: str, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(path)
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    if not frames:
        raise SystemExit(f"could not read frames from {path}")
    return frames


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - start) * 1e3


def run_dense(model, frames, device, bar):
    times, features = [], []
    for frame in frames:
        result, ms = timed(lambda: model.dense(frame), device)
        times.append(ms)
        features.append(result.features)
        bar.update()
    return float(np.median(times[1:] or times)), features, result.usage.gflops


def run_stream(model, frames, dense_features, budget, config, device, bar):
    stream = model.new_stream(config)
    times, gflops, errors = [], [], []
    for frame, reference in zip(frames, dense_features):
        result, ms = timed(lambda: model(frame, stream, budget=budget), device)
        times.append(ms)
        gflops.append(result.usage.gflops)
        cosine = torch.nn.functional.cosine_similarity(result.features, reference, dim=-1)
        errors.append(float(cosine.mean()))
        bar.update()
    # the first frame of a stream is a full update; report the steady state
    return float(np.median(times[1:])), float(np.mean(gflops[1:])), float(np.mean(errors[1:])), stream


def model_table(args, device: torch.device) -> None:
    model, label = build_model(args.model, args.short_side, device)
    frames = read_frames(args.video, args.frames)
    print(f"model: {label}; device {device}; {len(frames)} frames of {args.video}; "
          f"threads {torch.get_num_threads()}; attention cache {args.cache_dtype}")
    with tqdm(total=(1 + len(args.modes) * len(args.budgets)) * len(frames), desc="model runs",
              file=sys.stderr) as bar:
        dense_ms, dense_features, dense_gflops = run_dense(model, frames, device, bar)
        dtype = getattr(torch, args.cache_dtype)
        rows = [(budget, mode, run_stream(model, frames, dense_features, budget,
                                          StreamConfig(attention=mode, cache_dtype=dtype), device, bar))
                for budget in args.budgets for mode in args.modes]
    print(f"\ntokens {dense_features[0].shape[0]}; dense {dense_ms:.1f} ms/frame, {dense_gflops:.2f} GFLOPs")
    print("budget  attention |  ms/frame  speedup | GFLOPs  ratio | cosine vs dense | stream MB")
    for budget, mode, (ms, gflops, cosine, stream) in rows:
        print(f"{budget:6.2f}  {mode:9s} | {ms:9.1f}  {dense_ms / ms:6.2f}x | {gflops:6.2f}  {dense_gflops / gflops:5.2f}x"
              f" | {cosine:15.4f} | {stream.memory_bytes() / 1e6:9.0f}")


def attention_crossover(args, device: torch.device) -> None:
    heads, n, dh = 6, 1377, 64
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, dh, generator=generator).to(device) for _ in range(3))
    config = StreamConfig(attention="sparse", cache_dtype=getattr(torch, args.cache_dtype))
    attention = SparseAttention()
    stream = Stream(config)
    scope = stream.scope("bench")
    attention(scope, q, k, v, None, config, FlopCounter())
    _, dense_ms = min((timed(lambda: dense_attention(q, k, v, FlopCounter()), device) for _ in range(args.repeats)),
                      key=lambda pair: pair[1])
    print(f"\nattention only: 1 block, {heads} heads, N={n}, dh={dh}; dense (fused) {dense_ms:.2f} ms; "
          f"cache {stream.memory_bytes() / 1e6:.0f} MB/block")
    print("fraction changed | sparse ms | sparse/dense")
    crossover = None
    for fraction in tqdm(args.fractions, desc="attention", file=sys.stderr):
        m = max(1, round(fraction * n))
        times = []
        for _ in range(args.repeats):
            index = torch.randperm(n, generator=generator)[:m].to(device).unsqueeze(0)  # (1, M)
            for t in (q, k, v):
                t[:, :, index[0]] += 0.1 * torch.randn(1, heads, m, dh, generator=generator).to(device)
            times.append(timed(lambda: attention(scope, q, k, v, index, config, FlopCounter()), device)[1])
        sparse_ms = float(np.median(times))
        print(f"{fraction:16.2f} | {sparse_ms:9.2f} | {sparse_ms / dense_ms:6.2f}")
        if crossover is None and sparse_ms >= dense_ms:
            crossover = fraction
    print(f"sparse attention slower than dense from a changed fraction of: {crossover or '> max tested'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with torch.no_grad():
        if not args.skip_model:
            model_table(args, device)
        attention_crossover(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
