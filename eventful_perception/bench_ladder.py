"""`eventful-perception bench VIDEO --ladder`: the granularity ladder against each knob alone.

Every frame goes through the reference, the dense finest stage (`model.dense(frame)` at the
model's own short side), and through every variant at every budget, interleaved frame by frame
in one process, after `--warmup` frames. Variants (`VARIANTS`):

- `eventful`: the finest stage only, eventful at update fraction = budget (the plain bench);
- `eventful_motion_pixel`, `eventful_motion_patch`: the same with motion-compensated gating
  (`motion` from the stream's own `GlobalMotion`; `StreamConfig.motion_alignment`);
- `ladder_dense`: the ladder without reuse, every frame from the coarsest stage, every stage
  dense, exits fitted for the budget (the controller's moving-camera plan);
- `ladder_eventful`: the same plan and exits, every stage eventful at update fraction = budget
  with motion-compensated gating (the default patch alignment; each stage's motion summed over
  the frames since that stage last ran);
- `ladder_dense_reuse`, `ladder_eventful_reuse`: the two ladders with DVT feature reuse
  (`reuse.FeatureReuse`, `--reuse`) into every stage that has a module;
- `controller`: the product's `Ladder` (`plan_frame`'s law: below `ladder_below` a moving
  camera runs the ladder, otherwise the finest stage gated, following a moving camera's motion
  by whole patches), with the same reuse modules.

Each coarser stage alone (dense, no exits) is measured too: the granularity knob alone, and each
stage with a reuse module fed by the stage before it (both dense). Relation reuse is not built
(`NOT_BUILT`).

JSON: `{"machine", "exit_thresholds": {file, footage, command}, "reuse" (what `--reuse` loaded,
or null), "not_built", "stages": [{short_side, tokens, reuse_from, gflops, ms, speedup,
speedup_mean, map50_vs_dense}, ...], "stale_map50_vs_dense" (see `bench`), "results":
[{variant, budget, gflops, gflops_dense, ms, dense_ms, speedup, mean_ms, dense_mean_ms,
speedup_mean, map50_vs_dense, exit_rates}, ...]}`: mean GFLOPs (every stage run), medians of
per-frame ms (motion estimation included where a variant uses it) and speedup = their ratio,
the same from means (the throughput: a ladder's frame times are bimodal, so its median says
little about its mean cost),
mAP50 against the reference's detections (scored as the plain bench scores them), and the
fraction of frames exiting at each stage (null for the finest-only variants).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eventful_perception.assets import config_file
from eventful_perception.bench import _SCORE_FLOOR, DenseReference, _timed, machine, stale_line
from eventful_perception.eventful.stream import Stream, StreamConfig
from eventful_perception.granularity import ExitRule, Ladder, LadderConfig, Plan
from eventful_perception.models.base import EventfulViT
from eventful_perception.models.results import Result
from eventful_perception.motion import GlobalMotion
from eventful_perception.reuse import FeatureReuse, check_reuse, load_reuse, pass_on
from eventful_perception.stages import EXIT_THRESHOLDS
from eventful_perception.training.metrics import mean_average_precision

VARIANTS = ("eventful", "eventful_motion_pixel", "eventful_motion_patch", "ladder_dense",
            "ladder_eventful", "ladder_dense_reuse", "ladder_eventful_reuse", "controller")
_ALIGNMENTS = {"eventful": None, "eventful_motion_pixel": "pixel", "eventful_motion_patch": "patch"}
NOT_BUILT = ("relation reuse (DVT's upstream attention maps added to the downstream logits) is not "
             "built: for 224 -> 336 its 1x1 convolutions alone cost 3.5 GFLOPs (LH = 72 maps of "
             "337 x 337, 72 -> 216 -> 72), 43 % of the whole 224 stage, before the 72 x 769 x 769 "
             "resized maps that every attention would have to read")

Motion = tuple[float, float] | None
# One variant's per-frame step: frame -> (result scored down to _SCORE_FLOOR, GFLOPs, exit stage)
Step = Callable[[np.ndarray], tuple[Result, float, int | None]]


@dataclass
class _Runner:
    """One (variant, budget): its step and its per-frame measurements."""

    variant: str
    budget: float
    step: Step
    ms: list[float] = field(default_factory=list)
    gflops: list[float] = field(default_factory=list)
    detections: list = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    tokens: int = 0


def eventful_step(model: EventfulViT, budget: float, alignment: str | None) -> Step:
    """The finest stage alone; `alignment` None: no motion compensation."""
    config = StreamConfig() if alignment is None else StreamConfig(motion_alignment=alignment)
    stream = model.new_stream(config)
    motion = GlobalMotion() if alignment else None

    def step(frame: np.ndarray) -> tuple[Result, float, None]:
        result = model(frame, stream, budget=budget, motion=motion(frame) if motion else None,
                       score_threshold=_SCORE_FLOOR)
        return result, result.usage.gflops, None
    return step


def ladder_step(model: EventfulViT, config: LadderConfig, budget: float, variant: str,
                reuse: dict[int, FeatureReuse]) -> Step:
    """`ladder_dense[_reuse]`, `ladder_eventful[_reuse]` or `controller` (module docstring).

    `controller` is the product's `Ladder`, its detections kept down to _SCORE_FLOOR for scoring.
    The plans without the controller's law run the same stage loop (`run_stages`) on a fixed
    plan: every frame from the coarsest stage, dense or eventful at the budget.
    """
    if variant == "controller":
        ladder = Ladder(model, config, reuse)
        state = ladder.new_state(StreamConfig())

        def controlled(frame: np.ndarray) -> tuple[Result, float, int]:
            out = ladder(frame, state, budget, score_floor=_SCORE_FLOOR)
            return out.result, out.gflops, out.stage
        return controlled
    sides = config.short_sides
    streams = [Stream(StreamConfig(), f"stage{k}") for k in range(len(sides))]
    rule = config.exit_rule(budget, model.default_score_threshold)
    dense = variant.startswith("ladder_dense")
    plan = Plan(0, (1.0 if dense else budget,) * len(sides), moving=True)
    reuse = reuse if variant.endswith("_reuse") else {}
    if dense:
        return lambda frame: run_stages(model, frame, streams, sides, plan, rule, None, reuse)
    camera = GlobalMotion()
    pending: list[Motion] = [(0.0, 0.0)] * len(sides)  # motion since each stage's last frame

    def step(frame: np.ndarray) -> tuple[Result, float, int]:
        motion = camera(frame)
        for k in range(len(sides)):
            pending[k] = None if motion is None or pending[k] is None else (
                pending[k][0] + motion[0], pending[k][1] + motion[1])
        return run_stages(model, frame, streams, sides, plan, rule, pending, reuse)
    return step


def run_stages(model: EventfulViT, frame: np.ndarray, streams: list[Stream], sides: tuple[int, ...],
               plan: Plan, rule: ExitRule, pending: list[Motion] | None,
               reuse: dict[int, FeatureReuse]) -> tuple[Result, float, int]:
    """The planned stages up to the first exit: (its result, GFLOPs of all run, its index)."""
    gflops, reused = 0.0, None
    for stage in range(plan.first_stage, len(streams)):
        motion = None if pending is None else pending[stage]
        result = model(frame, streams[stage], budget=plan.update_fractions[stage], motion=motion,
                       score_threshold=_SCORE_FLOOR, short_side=sides[stage], reuse=reused)
        if pending is not None:
            pending[stage] = (0.0, 0.0)
        gflops += result.usage.gflops
        if rule.exits(stage, rule.confidence(result.detections)):
            break
        reused = pass_on(reuse.get(stage + 1), result, model.device)
    return result, gflops, stage


def runners(model: EventfulViT, config: LadderConfig, budgets: list[float],
            reuse: dict[int, FeatureReuse]) -> list[_Runner]:
    """One runner per variant and budget, each with its own streams (no `_reuse` variants
    without modules)."""
    made = []
    for variant in VARIANTS:
        if variant.endswith("_reuse") and not reuse:
            continue
        for budget in budgets:
            if variant in _ALIGNMENTS:
                step = eventful_step(model, budget, _ALIGNMENTS[variant])
            else:
                step = ladder_step(model, config, budget, variant, reuse)
            made.append(_Runner(variant, budget, step))
    return made


def _stage_runners(model: EventfulViT, config: LadderConfig, reuse: dict[int, FeatureReuse]
                   ) -> list[_Runner]:
    """Each coarser stage alone, dense: the granularity knob without exits; then each stage with
    a reuse module, dense, fed by the stage before it run dense on the same frame."""
    sides = config.short_sides

    def dense_step(stage: int, module: FeatureReuse | None) -> Step:
        def step(frame: np.ndarray) -> tuple[Result, float, None]:
            reused, gflops = None, 0.0
            if module is not None:
                upstream = model.dense(frame, score_threshold=_SCORE_FLOOR, short_side=sides[stage - 1])
                reused, gflops = pass_on(module, upstream, model.device), upstream.usage.gflops
            result = model.dense(frame, score_threshold=_SCORE_FLOOR, short_side=sides[stage], reuse=reused)
            return result, gflops + result.usage.gflops, None
        return step
    alone = [_Runner(f"stage{k}", 1.0, dense_step(k, None)) for k in range(len(sides) - 1)]
    return alone + [_Runner(f"stage{k}_reuse", 1.0, dense_step(k, reuse[k])) for k in sorted(reuse)]


def bench_ladder(model: EventfulViT, config: LadderConfig, frames: list[np.ndarray], budgets: list[float],
                 warmup: int, reuse: dict[int, FeatureReuse] | None = None
                 ) -> tuple[list[dict], list[dict], DenseReference]:
    """Over `frames` (RGB uint8), after `warmup` frames: one result dict per (variant, budget),
    one per coarser stage alone and per stage with reuse (dense; `short_side`, `tokens`,
    `reuse_from` (the upstream short side or None) and `_STAGE_KEYS`), and the dense reference."""
    if config.short_sides[-1] != model.short_side:
        raise ValueError(f"the ladder's finest stage ({config.short_sides[-1]}) must be the model's own "
                         f"short side ({model.short_side}), the reference")
    reuse = check_reuse(dict(reuse or {}), config.short_sides, model)
    rows, alone = runners(model, config, budgets, reuse), _stage_runners(model, config, reuse)
    reference = DenseReference()
    for i, frame in enumerate(tqdm(frames, desc="bench ladder", unit="frame", file=sys.stderr)):
        reference.run(model, frame, i >= warmup)
        for row in rows + alone:
            (result, gflops, stage), ms = _timed(lambda: row.step(frame), model.device)
            if i >= warmup:
                row.ms.append(ms)
                row.gflops.append(gflops)
                row.detections.append(result.detections)
                row.tokens = result.usage.tokens_total
                if stage is not None:
                    row.exits.append(stage)
    stages = len(config.short_sides)
    summaries = [_summary(row, reference.ms, reference.gflops, reference.truths, stages) for row in rows + alone]
    singles = [_stage_summary(config.short_sides, row, summary) for row, summary in zip(alone, summaries[len(rows):])]
    return summaries[:len(rows)], singles, reference


def _stage_summary(sides: tuple[int, ...], row: _Runner, summary: dict) -> dict:
    stage, reused = int(row.variant[len("stage"):].split("_")[0]), row.variant.endswith("_reuse")
    return ({"short_side": sides[stage], "tokens": row.tokens, "reuse_from": sides[stage - 1] if reused else None}
            | {key: summary[key] for key in _STAGE_KEYS})


_STAGE_KEYS = ("gflops", "ms", "speedup", "speedup_mean", "map50_vs_dense")


def _summary(row: _Runner, dense_ms: list[float], dense_gflops: list[float], truths: list,
             stages: int) -> dict:
    map50 = None
    if truths and truths[0] is not None:
        map50 = mean_average_precision(row.detections, truths)
        map50 = None if np.isnan(map50) else round(map50, 4)  # NaN: the dense model found nothing
    dense_median, median = float(np.median(dense_ms)), float(np.median(row.ms))
    exit_rates = None
    if row.exits:
        exit_rates = [round(row.exits.count(k) / len(row.exits), 4) for k in range(stages)]
    return {
        "variant": row.variant,
        "budget": row.budget,
        "gflops": round(float(np.mean(row.gflops)), 4),
        "gflops_dense": round(float(np.mean(dense_gflops)), 4),
        "ms": round(median, 2),
        "dense_ms": round(dense_median, 2),
        "speedup": round(dense_median / median, 3),
        "mean_ms": round(float(np.mean(row.ms)), 2),
        "dense_mean_ms": round(float(np.mean(dense_ms)), 2),
        "speedup_mean": round(float(np.mean(dense_ms) / np.mean(row.ms)), 3),
        "map50_vs_dense": map50,
        "exit_rates": exit_rates,
    }


def plot(results: list[dict], stages: list[dict], title: str, path: Path) -> None:
    """Speedup against mAP50 vs dense, one line per variant through its budgets, and a marker
    per coarser stage alone (a Pareto picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 5))
    for variant in VARIANTS:
        rows = [r for r in results if r["variant"] == variant and r["map50_vs_dense"] is not None]
        if not rows:
            continue
        line, = axis.plot([r["map50_vs_dense"] for r in rows], [r["speedup_mean"] for r in rows], "o-",
                          label=variant, alpha=0.8)
        for r in rows:
            axis.annotate(f"{r['budget']:g}", (r["map50_vs_dense"], r["speedup_mean"]), fontsize=7,
                          color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    for r in stages:
        if r["map50_vs_dense"] is not None:
            axis.plot(r["map50_vs_dense"], r["speedup_mean"], "k^", alpha=0.6)
            axis.annotate(_stage_name(r) + ", dense",
                          (r["map50_vs_dense"], r["speedup_mean"]), fontsize=7, xytext=(4, -9),
                          textcoords="offset points")
    axis.axvline(0.98, color="gray", linestyle=":", label="target: mAP50 0.98, 2x")
    axis.axhline(2.0, color="gray", linestyle=":")
    axis.set(xlabel="mAP50 vs dense finest stage", ylabel="x faster than dense finest stage (mean ms)",
             yscale="log")
    axis.set_yticks([0.5, 1, 2, 5, 10], ["0.5", "1", "2", "5", "10"])
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    fig.suptitle(title + "\n(labels: budget; relation reuse: not built)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_config(path: str | None) -> tuple[LadderConfig, dict]:
    """The ladder config and the raw JSON of an `--exit-thresholds` file (ValueError if unusable)."""
    try:
        path = Path(path) if path else config_file(EXIT_THRESHOLDS)
        return LadderConfig.from_file(path), json.loads(path.read_text()) | {"file": path.name}
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"--exit-thresholds {path}: {type(error).__name__}: {error}") from None


def _stage_name(row: dict) -> str:
    reused = f" with reuse from {row['reuse_from']}" if row["reuse_from"] else " alone"
    return f"short side {row['short_side']}{reused}"


def read_reuse(folder: str | None, config: LadderConfig) -> tuple[dict[int, FeatureReuse], str | None]:
    """`--reuse`: the modules of a folder ("default": the default detector's, "none"; None: the
    exit thresholds file's `reuse`) keyed by stage, and what was used (ValueError if unusable)."""
    folder = config.reuse if folder is None else folder
    try:
        modules = load_reuse(folder, config.short_sides)
    except (OSError, ValueError) as error:
        raise ValueError(f"--reuse {folder}: {error}") from None
    return modules, (folder if modules else None)


def run_ladder(args: argparse.Namespace, model: EventfulViT, fitted: tuple[LadderConfig, dict],
               frames: list[np.ndarray], budgets: list[float] | None, video: Path,
               reuse: tuple[dict[int, FeatureReuse], str | None]) -> int:
    """`bench --ladder` once `bench.run_bench` has read the frames, the config, the reuse
    modules and the model."""
    config, raw = fitted
    modules, folder = reuse
    try:
        results, stages, reference = bench_ladder(model, config, frames, budgets or sorted(config.exit_thresholds),
                                       args.warmup, modules)
    except ValueError as error:
        print(f"eventful-perception bench: error: {error}", file=sys.stderr)
        return 2
    report = {"machine": machine(model.device),
              "exit_thresholds": {key: raw.get(key) for key in ("file", "footage", "command")},
              "reuse": folder, "not_built": NOT_BUILT, "stages": stages,
              "stale_map50_vs_dense": reference.stale_map50(), "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    tokens = model.dense(frames[0]).usage.tokens_total
    title = (f"{args.model} on {video.name}: {tokens} tokens at the finest stage, {args.frames} frames, "
             f"pan {args.pan} px/frame, stages {'/'.join(map(str, config.short_sides))}; "
             f"{report['machine']['cpu']}, {report['machine']['threads']} threads")
    _print_table(title, results, stages)
    print(stale_line(report["stale_map50_vs_dense"]))
    if args.plot:
        plot(results, stages, title, Path(args.plot))
    print(f"wrote {Path(args.json).resolve()}" + (f" and {Path(args.plot).resolve()}" if args.plot else ""))
    return 0


def _print_table(title: str, results: list[dict], stages: list[dict]) -> None:
    print(title)
    print("variant               | budget |  GFLOPs | ms      | speedup | mean speedup | mAP50 vs dense "
          "| exit rates")
    for r in results:
        map50 = "n/a" if r["map50_vs_dense"] is None else f"{r['map50_vs_dense']:.3f}"
        rates = "-" if r["exit_rates"] is None else " / ".join(f"{x:.2f}" for x in r["exit_rates"])
        print(f"{r['variant']:21} | {r['budget']:6g} | {r['gflops']:7.2f} | {r['ms']:7.1f} | "
              f"{r['speedup']:6.2f}x | {r['speedup_mean']:11.2f}x | {map50:>14} | {rates}")
    for r in stages:
        print(f"{_stage_name(r)}, dense: {r['tokens']} tokens, {r['gflops']:.2f} GFLOPs, "
              f"{r['ms']:.1f} ms, {r['speedup']:.2f}x (means {r['speedup_mean']:.2f}x), "
              f"mAP50 vs dense {r['map50_vs_dense']}")
    print(f"dense finest: {results[0]['gflops_dense']:.2f} GFLOPs, {results[0]['dense_ms']:.1f} ms; {NOT_BUILT}")
