"""Dynamic token granularity (DVT, Wang et al. 2021) on one Eventful detector, and the one
controller that sets both knobs per frame.

A ladder of stages runs the same backbone and head at growing input scales (short side 224 ->
336 -> 448: 337 -> 769 -> 1377 tokens for 4:3 frames), each stage with its own Eventful stream
(a stage that skipped the previous frame updates all its tokens). A frame stops at the first
stage whose exit rule is satisfied. The controller's law, per frame:

- it measures the camera's motion (`GlobalMotion`, in pixels of the finest stage);
- static camera (motion <= `still_px`), or any camera at a budget >= `ladder_below`: the
  finest stage only, recomputing `budget` of its tokens (the Eventful method alone); a moving
  camera's motion is given to that stage's stream, whose state then follows the content by whole
  patches (motion-compensated gating), a still camera's is not (its estimates are noise that
  would add up);
- moving camera (or motion unknown) at a budget < `ladder_below`: the ladder from the coarsest
  stage, every stage dense (gating saves little when everything moves), a stage fed by the one
  before it where a feature-reuse module exists (`reuse.py`), exits fitted so that the mean cost
  is `budget` of the finest dense stage (DVT's fitting; `fit_exits`, thresholds in `config/`).

Budget means one thing in every case: the fraction of the finest stage's dense compute.
`ladder_below` comes from measurement (README "Performance") and is 0 by default, so the
ladder runs only for a thresholds file that asks for it: with detection-aware gating
(`StreamConfig.score_priority`) the gated finest stage kept more of the dense detections than the
ladder at every budget measured, on a panning `vtest.avi` (budget 0.2: mAP50 0.961 against the
ladder's 0.577) and on `bikes.mp4`; the ladder is faster per frame only at a fidelity (about
0.55) that the 224 stage alone also reaches. (Before that gating, 0.3 was the measured crossover.)
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .eventful.stream import Stream, StreamConfig
from .models.base import EventfulViT
from .models.results import Detections, Result
from .motion import GlobalMotion
from .reuse import FeatureReuse, check_reuse, load_reuse, pass_on

DEFAULT_SHORT_SIDES = (224, 336, 448)


@dataclass(frozen=True)
class ExitRule:
    """Stop at a stage when its least certain candidate detection is certain enough.

    A candidate is a detection (after NMS) scoring at least `score_low`; its certainty is its
    distance to the decision threshold `score_threshold`, normalised to 0..1 on either side. A
    frame's confidence is the smallest certainty (1.0 with no candidate). Stage k exits when its
    confidence >= `thresholds[k]`; the last stage always exits.
    """

    thresholds: tuple[float, ...]
    score_low: float = 0.1
    score_threshold: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if not 0.0 <= self.score_low < self.score_threshold < 1.0:
            raise ValueError(f"need 0 <= score_low < score_threshold < 1, got "
                             f"{self.score_low} and {self.score_threshold}")

    def confidence(self, detections: Detections | None) -> float:
        """The frame's confidence from detections scored down to `score_low`."""
        if detections is None or len(detections) == 0:
            return 1.0
        scores = detections.scores[detections.scores >= self.score_low]
        if len(scores) == 0:
            return 1.0
        t, low = self.score_threshold, self.score_low
        certainty = np.where(scores >= t, (scores - t) / (1.0 - t), (t - scores) / (t - low))
        return float(certainty.min())

    def exits(self, stage: int, confidence: float) -> bool:
        return stage >= len(self.thresholds) or confidence >= self.thresholds[stage]


@dataclass(frozen=True)
class LadderConfig:
    """The stages, the exit thresholds fitted per budget, and the controller's constants."""

    short_sides: tuple[int, ...] = DEFAULT_SHORT_SIDES
    # budget -> one threshold per stage but the last (from `fit_exits`); the controller uses the
    # set of the largest fitted budget not above the frame's budget (the smallest otherwise).
    exit_thresholds: dict[float, tuple[float, ...]] = field(default_factory=dict)
    score_low: float = 0.1
    still_px: float = 0.5  # camera motion per frame, in finest-stage pixels, still called static
    ladder_below: float = 0.0  # a moving camera uses the ladder only at budgets below this
    # DVT feature reuse between stages: "" none, "default" the default detector's, or a folder
    # (`reuse.load_reuse`); the exit thresholds are fitted with it, so it belongs to this file.
    reuse: str = ""

    def __post_init__(self) -> None:
        sides = tuple(int(s) for s in self.short_sides)
        if not sides or list(sides) != sorted(set(sides)):
            raise ValueError(f"short_sides must be increasing, got {self.short_sides!r}")
        object.__setattr__(self, "short_sides", sides)
        for name, low, high in (("score_low", 0.0, 1.0), ("still_px", 0.0, math.inf),
                                ("ladder_below", 0.0, math.inf)):
            object.__setattr__(self, name, _number(name, getattr(self, name), low, high))
        thresholds = {_number("budget", b, 0.0, 1.0):
                      tuple(_number(f"budget {b} threshold", t, -math.inf, math.inf) for t in values)
                      for b, values in self.exit_thresholds.items()}
        for budget, values in thresholds.items():
            if len(values) != len(sides) - 1:
                raise ValueError(f"budget {budget}: expected {len(sides) - 1} exit thresholds, got {len(values)}")
        object.__setattr__(self, "exit_thresholds", thresholds)

    @classmethod
    def from_file(cls, path: str | Path) -> LadderConfig:
        """A config written by `eventful-perception fit-exits` (JSON)."""
        data = json.loads(Path(path).read_text())
        return cls(short_sides=tuple(data["short_sides"]), score_low=data["score_low"],
                   still_px=data.get("still_px", cls.still_px),
                   ladder_below=data.get("ladder_below", cls.ladder_below), reuse=data.get("reuse", ""),
                   exit_thresholds={float(b): tuple(t) for b, t in data["exit_thresholds"].items()})

    def exit_rule(self, budget: float, score_threshold: float) -> ExitRule:
        """The exit rule for a frame's budget (no early exit when none was fitted)."""
        if not self.exit_thresholds:
            return ExitRule((math.inf,) * (len(self.short_sides) - 1), self.score_low, score_threshold)
        fitted = sorted(self.exit_thresholds)
        chosen = max((b for b in fitted if b <= budget), default=fitted[0])
        return ExitRule(self.exit_thresholds[chosen], self.score_low, score_threshold)


def _number(name: str, value: object, low: float, high: float) -> float:
    """`value` as a float in [low, high] (infinite thresholds: never exit); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not low <= float(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Plan:
    """What the controller chose for a frame: the first stage to run and the update fraction
    of every stage (1.0 = dense)."""

    first_stage: int
    update_fractions: tuple[float, ...]
    moving: bool


@dataclass
class LadderState:
    """Everything the ladder keeps for one camera: one stream per stage, the motion estimator,
    how many frames exited at each stage and which stages ran on the previous frame."""

    streams: list[Stream]
    motion: GlobalMotion
    exits: list[int]
    ran: list[bool]

    @classmethod
    def create(cls, config: LadderConfig, stream_config: StreamConfig | None = None) -> LadderState:
        """Fresh state: every stream empty, no frame seen."""
        stages = len(config.short_sides)
        streams = [Stream(stream_config, f"stage{k}") for k in range(stages)]
        return cls(streams, GlobalMotion(), [0] * stages, [False] * stages)

    def reset(self) -> None:
        """Start over, as on a new camera (the exit counts are kept)."""
        for stream in self.streams:
            stream.reset()
        self.motion.reset()
        self.ran = [False] * len(self.streams)

    def memory_bytes(self) -> int:
        """Bytes held by every stage's stream."""
        return sum(stream.memory_bytes() for stream in self.streams)

    def exit_rates(self) -> list[float]:
        """Fraction of the frames so far that exited at each stage."""
        total = sum(self.exits)
        return [count / total if total else 0.0 for count in self.exits]


@dataclass(frozen=True)
class LadderResult:
    """The exiting stage's result, which stage it was, and what each stage run cost."""

    result: Result
    stage: int
    plan: Plan
    confidences: tuple[float, ...]
    gflops: float  # every stage run on this frame
    gflops_dense: float  # the finest stage, dense, on this frame
    motion_px: float | None  # camera motion in finest-stage pixels (None: unknown or not needed)


def plan_frame(config: LadderConfig, budget: float, motion_px: float | None) -> Plan:
    """The controller's law (module docstring) for a frame's budget and camera motion."""
    stages = len(config.short_sides)
    moving = motion_px is None or motion_px > config.still_px
    if moving and budget < config.ladder_below:
        return Plan(0, (1.0,) * stages, moving=True)
    return Plan(stages - 1, (1.0,) * (stages - 1) + (budget,), moving=moving)


def finest_px(config: LadderConfig, frame: np.ndarray, motion: tuple[float, float] | None) -> float | None:
    """The length of a motion (dx, dy) in `frame` pixels, in pixels of the finest stage."""
    if motion is None:
        return None
    return math.hypot(*motion) * config.short_sides[-1] / min(frame.shape[:2])


class Ladder:
    """Runs a frame through the stages the controller plans, stopping at the first exit.

    DVT feature reuse (`reuse.FeatureReuse`) feeds a stage from the one before it whenever both
    run on a frame: the modules named by `config.reuse`, or `reuse` (stage index -> module).
    """

    def __init__(self, model: EventfulViT, config: LadderConfig,
                 reuse: Mapping[int, FeatureReuse] | None = None) -> None:
        if not getattr(model, "labels", None):
            raise ValueError("the granularity ladder needs a detector (a model with labels)")
        self.model = model
        self.config = config
        modules = load_reuse(config.reuse, config.short_sides) if reuse is None else dict(reuse)
        self.reuse = check_reuse(modules, config.short_sides, model)
        self._finest_gflops: dict[tuple[int, int], float] = {}  # frame size -> finest dense GFLOPs

    def new_state(self, stream_config: StreamConfig | None = None) -> LadderState:
        return LadderState.create(self.config, stream_config)

    def __call__(self, frame: np.ndarray, state: LadderState, budget: float,
                 score_threshold: float | None = None,
                 score_floor: float | None = None) -> LadderResult:
        """The next frame of the camera whose `state` this is. The exit rule decides at
        `score_threshold` (the model's default when None); the returned detections score at
        least `score_floor` (default: that threshold; lower keeps a whole PR curve for scoring,
        without changing any exit, since the rule ignores scores below its `score_low`)."""
        threshold = self.model.default_score_threshold if score_threshold is None else score_threshold
        floor = threshold if score_floor is None else score_floor
        rule = self.config.exit_rule(budget, threshold)
        motion = state.motion(frame)
        motion_px = finest_px(self.config, frame, motion)
        plan = plan_frame(self.config, budget, motion_px)
        follow = motion if plan.moving else None
        gflops, confidences, reused = 0.0, [], None
        for stage in range(plan.first_stage, len(self.config.short_sides)):
            # A stage that skipped the previous frame holds an older view (after a run of early
            # exits, many frames old): a partial update would keep ghosts of it, so it updates all.
            fraction = plan.update_fractions[stage] if state.ran[stage] else 1.0
            result = self.model(frame, state.streams[stage], budget=fraction,
                                score_threshold=min(rule.score_low, floor),
                                motion=follow if fraction < 1.0 else None,  # a full update needs none
                                short_side=self.config.short_sides[stage], reuse=reused)
            gflops += result.usage.gflops
            confidences.append(rule.confidence(result.detections))
            if rule.exits(stage, confidences[-1]):
                break
            reused = pass_on(self.reuse.get(stage + 1), result, self.model.device)
        state.exits[stage] += 1
        state.ran = [plan.first_stage <= k <= stage for k in range(len(state.ran))]
        return LadderResult(_above(result, floor), stage, plan, tuple(confidences), gflops,
                            self._finest_dense(frame, stage, result), motion_px)

    def _finest_dense(self, frame: np.ndarray, stage: int, result: Result) -> float:
        """The finest stage's dense GFLOPs for this frame size: counted once it ran, until then
        scaled from this stage's by the token ratio, an underestimate (for 224 -> 448 on a 4:3
        frame 33 of 47 GFLOPs: attention grows with the square of the tokens)."""
        size = frame.shape[:2]
        sides = self.config.short_sides
        if stage == len(sides) - 1:
            self._finest_gflops[size] = result.usage.gflops_dense
        return self._finest_gflops.get(size, result.usage.gflops_dense * (sides[-1] / sides[stage]) ** 2)


def _above(result: Result, threshold: float) -> Result:
    """`result` with only the detections scoring at least `threshold`."""
    d = result.detections
    if d is None:
        return result
    keep = d.scores >= threshold
    kept = Detections(d.boxes[keep], d.scores[keep], [label for label, k in zip(d.labels, keep) if k])
    return replace(result, detections=kept)


def fit_exits(confidences: np.ndarray, stage_costs: Sequence[float], budgets: Sequence[float]
              ) -> dict[float, tuple[float, ...]]:
    """DVT's threshold fitting: per budget, exit shares proportional to q^k, q solved so that
    the mean cost is `budget`, each threshold the quantile of the confidences of the frames
    that reach its stage.

    confidences: (frames, stages) every stage's confidence on every calibration frame.
    stage_costs: each stage's cost as a fraction of the finest stage's (the last is 1.0).
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    cumulative = np.cumsum(stage_costs)
    fitted = {}
    for budget in budgets:
        shares = _shares(cumulative, float(budget))
        fitted[float(budget)] = _thresholds(confidences, shares)
    return fitted


def _shares(cumulative: np.ndarray, budget: float) -> np.ndarray:
    """Exit shares q^k / sum(q^j) whose expected cumulative cost is `budget` (bisection on log q)."""
    def cost(log_q: float) -> float:
        weights = np.exp(log_q * np.arange(len(cumulative)))
        return float((weights / weights.sum()) @ cumulative)

    low, high = -30.0, 30.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if cost(middle) < budget else (low, middle)
    weights = np.exp(low * np.arange(len(cumulative)))
    return weights / weights.sum()


def _thresholds(confidences: np.ndarray, shares: np.ndarray) -> tuple[float, ...]:
    remaining = np.ones(len(confidences), dtype=bool)
    thresholds = []
    for stage, share in enumerate(shares[:-1]):
        exiting = int(round(share * len(confidences)))
        values = np.sort(confidences[remaining, stage])[::-1]  # most confident first
        if exiting <= 0 or len(values) == 0:
            threshold = math.inf
        else:
            threshold = float(values[min(exiting, len(values)) - 1])
        thresholds.append(threshold)
        remaining &= confidences[:, stage] < threshold
    return tuple(thresholds)
