"""`eventful-perception fit-exits VIDEO`: fit the granularity ladder's exit thresholds to budgets.

Runs every stage densely on every calibration frame (as DVT evaluates every exit), records each
stage's confidence (`ExitRule.confidence`) and mean GFLOPs, then fits one threshold set per
budget with `granularity.fit_exits` and checks it: the mean cost of the frames' exits, as a
fraction of the finest stage's dense GFLOPs, is reported beside each budget. Writes the JSON
that `LadderConfig.from_file` and the node's `exit_thresholds_file` read.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eventful_perception.assets import resolve_video
from eventful_perception.granularity import DEFAULT_SHORT_SIDES, ExitRule, LadderConfig, fit_exits
from eventful_perception.models.base import EventfulViT
from eventful_perception.reuse import FeatureReuse, check_reuse, load_reuse, pass_on


def calibrate(model: EventfulViT, frames: list[np.ndarray], short_sides: tuple[int, ...],
              score_low: float, reuse: dict[int, FeatureReuse] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(confidences (frames, stages), stage costs (stages,) as fractions of the finest stage's);
    `reuse` (stage -> module) feeds a stage from the one before it, as the ladder does."""
    rule = ExitRule((), score_low, model.default_score_threshold)
    confidences = np.zeros((len(frames), len(short_sides)))
    gflops = np.zeros((len(frames), len(short_sides)))
    reuse = reuse or {}
    for i, frame in enumerate(tqdm(frames, desc="calibrate stages", unit="frame", file=sys.stderr)):
        result = None
        for k, side in enumerate(short_sides):
            reused = pass_on(reuse.get(k), result, model.device) if k else None
            result = model.dense(frame, score_threshold=score_low, short_side=side, reuse=reused)
            confidences[i, k] = rule.confidence(result.detections)
            gflops[i, k] = result.usage.gflops
    costs = gflops.mean(axis=0)
    return confidences, costs / costs[-1]


def realised_cost(confidences: np.ndarray, costs: np.ndarray, thresholds: tuple[float, ...]) -> float:
    """Mean cost (fraction of the finest stage) of running the ladder with `thresholds`."""
    rule = ExitRule(thresholds)
    cumulative = np.cumsum(costs)
    total = 0.0
    for row in confidences:
        stage = next(k for k in range(len(costs)) if rule.exits(k, row[k]))
        total += cumulative[stage]
    return total / len(confidences)


def run_fit(args: argparse.Namespace) -> int:
    from eventful_perception.bench import read_frames
    from eventful_perception.models.loading import load_model

    try:
        budgets = [float(b) for b in args.budgets.split(",")]
        if not all(0.0 < b <= 1.0 for b in budgets):
            raise ValueError(f"--budgets must be in (0, 1], got {args.budgets}")
        if args.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {args.frames}")
        ExitRule((), args.score_low)  # its own check: 0 <= score_low < the score threshold
        sides = tuple(int(s) for s in args.short_sides.split(","))
        LadderConfig(short_sides=sides)
        shipped = args.model == "default" and sides == DEFAULT_SHORT_SIDES  # what the modules join
        reuse_name = args.reuse if args.reuse is not None else ("default" if shipped else "")
        reuse = load_reuse(reuse_name, sides)
        frames = read_frames(resolve_video(args.video), args.start, args.frames, None, args.pan)
    except ValueError as error:
        print(f"eventful-perception fit-exits: error: {error}", file=sys.stderr)
        return 2
    model = load_model(args.model)
    try:
        reuse = check_reuse(reuse, sides, model)
    except ValueError as error:
        print(f"eventful-perception fit-exits: error: {error}", file=sys.stderr)
        return 2
    confidences, costs = calibrate(model, frames, sides, args.score_low, reuse)
    fitted = fit_exits(confidences, costs, budgets)
    print("stage costs (fraction of the finest):", ", ".join(f"{c:.3f}" for c in costs))
    print("budget | thresholds | realised cost")
    for budget, thresholds in fitted.items():
        print(f"{budget:6g} | {', '.join(f'{t:.3f}' for t in thresholds)} | "
              f"{realised_cost(confidences, costs, thresholds):.3f}")
    report = {
        "footage": f"{Path(args.video).name}, frames {args.start}-{args.start + args.frames - 1}, "
                   f"pan {args.pan} px/frame",
        "command": "eventful-perception fit-exits " + " ".join(sys.argv[2:]),
        "model": args.model,
        "short_sides": list(sides),
        "score_low": args.score_low,
        "reuse": reuse_name if reuse else "",
        "stage_costs": [round(float(c), 4) for c in costs],
        "exit_thresholds": {str(b): list(t) for b, t in fitted.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {Path(args.out).resolve()}")
    return 0


def add_parser(subparsers) -> None:
    """Register `eventful-perception fit-exits`."""
    parser = subparsers.add_parser(
        "fit-exits", help="fit the granularity ladder's exit thresholds to compute budgets (JSON)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="calibration video file, or a set-up video name such as vtest.avi")
    parser.add_argument("--budgets", default="0.2,0.25,0.3,0.4,0.5,0.6,0.8",
                        help="comma-separated budgets in (0, 1]: mean cost as a fraction of the "
                             "finest stage's dense GFLOPs; the controller uses those below "
                             "ladder_below, bench --ladder all of them (default: %(default)s)")
    parser.add_argument("--short-sides", default=",".join(map(str, DEFAULT_SHORT_SIDES)),
                        help="the stages' input short sides, increasing (default: %(default)s)")
    parser.add_argument("--score-low", type=float, default=LadderConfig.score_low,
                        help="lowest score of a candidate detection (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=120, help="calibration frames (default: %(default)s)")
    parser.add_argument("--start", type=int, default=0, help="first frame (default: %(default)s)")
    parser.add_argument("--pan", type=int, default=3,
                        help="moving camera: a 3/4-width window slides PX pixels per frame; the "
                             "ladder runs when the camera moves at a budget below ladder_below "
                             "(default: %(default)s)")
    parser.add_argument("--model", default="default", help="(default: %(default)s)")
    parser.add_argument("--reuse", default=None,
                        help="DVT feature-reuse modules the ladder will run with: a folder, "
                             "'default' or 'none' (default: 'default' for the default model at the "
                             "default short sides, none otherwise); written to the JSON")
    parser.add_argument("--out", required=True, help="JSON to write, e.g. config/exit_thresholds.json")
    parser.set_defaults(func=run_fit)
