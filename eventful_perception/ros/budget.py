"""Budget controller: turns the requested token budget and the robot's state into the effective one.

Plain Python with no ROS import, so the law can be unit-tested and reused outside the node.

The law (adaptive mode; fixed mode always uses the requested budget):

    floor   = min(min_budget, requested)
    battery = 1 above battery_low, falling linearly to 0 at battery_critical (1 while charging/full)
    cpu     = 1 below cpu_load_high, falling linearly to 0 at cpu_load_critical
    cap     = floor + (requested - floor) * battery * cpu
    steer   = effective * target_latency / latency   (only outside a +-10 % dead band)
    target  = clamp(min(cap, steer), floor, requested)
    effective += budget_smoothing * (target - effective)   (changes below 0.005 are ignored)
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("fixed", "adaptive")
# Latency within +-10 % of the target is left alone, so measurement noise cannot make it oscillate.
LATENCY_DEAD_BAND = 0.10
# Budget changes smaller than this are not applied: a ragged budget costs more than it saves.
BUDGET_DEAD_BAND = 0.005


@dataclass(frozen=True)
class BudgetConfig:
    """Tuning of the controller; every field is the node parameter of the same name."""

    budget_mode: str = "fixed"
    min_budget: float = 0.05
    battery_low: float = 0.20
    battery_critical: float = 0.05
    cpu_load_high: float = 0.80
    cpu_load_critical: float = 1.0
    target_latency_ms: float = 0.0  # 0 = no latency target
    budget_smoothing: float = 0.5  # fraction of the gap to the target closed per frame

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Return why this configuration is invalid, or None when it is valid."""
        if self.budget_mode not in MODES:
            return f"budget_mode must be one of {', '.join(MODES)}, got {self.budget_mode!r}"
        if not 0.0 < self.min_budget <= 1.0:
            return f"min_budget must be in (0, 1], got {self.min_budget}"
        if not 0.0 <= self.battery_critical < self.battery_low <= 1.0:
            return (f"need 0 <= battery_critical < battery_low <= 1, got "
                    f"battery_critical={self.battery_critical}, battery_low={self.battery_low}")
        if not 0.0 <= self.cpu_load_high < self.cpu_load_critical <= 1.0:
            return (f"need 0 <= cpu_load_high < cpu_load_critical <= 1, got "
                    f"cpu_load_high={self.cpu_load_high}, "
                    f"cpu_load_critical={self.cpu_load_critical}")
        if self.target_latency_ms < 0.0:
            return f"target_latency_ms must be >= 0 (0 = off), got {self.target_latency_ms}"
        if not 0.0 < self.budget_smoothing <= 1.0:
            return f"budget_smoothing must be in (0, 1], got {self.budget_smoothing}"
        return None


@dataclass(frozen=True)
class BudgetInputs:
    """What the controller sees at one frame; None means unknown."""

    requested: float
    battery: float | None = None  # state of charge 0-1
    charging: bool = False  # charging or full: battery never limits
    cpu_load: float | None = None  # 0-1
    latency_ms: float | None = None  # latency of the previous frame


@dataclass(frozen=True)
class BudgetDecision:
    """The effective budget for one frame and why it differs from the requested one."""

    requested: float
    effective: float
    reason: str
    limited_by: tuple[str, ...] = ()  # subset of ("battery", "cpu", "latency", "min_budget")


@dataclass
class BudgetController:
    """Stateful controller (one per camera): smoothing and latency steering remember the past."""

    _effective: float | None = field(default=None, init=False)
    _mode: str | None = field(default=None, init=False)

    def update(self, config: BudgetConfig, inputs: BudgetInputs) -> BudgetDecision:
        """Return the budget for the next frame."""
        requested = inputs.requested
        mode = config.budget_mode
        if mode == "fixed" or self._effective is None or self._mode != mode:
            self._effective, self._mode = requested, mode
        if mode == "fixed":
            return BudgetDecision(requested, requested, "fixed")
        floor = min(config.min_budget, requested)
        limits: dict[str, str] = {}
        scale = _battery_scale(config, inputs, limits) * _cpu_scale(config, inputs, limits)
        target = floor + (requested - floor) * scale
        steered, why = self._steer(config, inputs)
        if steered < target:
            target = steered
            limits["latency"] = why
        if target <= floor:
            target = floor
            limits["min_budget"] = f"min_budget {floor:.2f}"
        target = min(target, requested)
        self._effective = self._approach(target, config.budget_smoothing, floor, requested)
        reason = "; ".join(limits.values()) if limits else "requested"
        return BudgetDecision(requested, self._effective, reason, tuple(limits))

    def _approach(self, target: float, smoothing: float, floor: float, requested: float) -> float:
        """Move the effective budget part of the way to the target, ignoring tiny changes."""
        current = min(max(self._effective, floor), requested)
        gap = target - current
        if abs(gap) < BUDGET_DEAD_BAND and target not in (floor, requested):
            return current
        step = current + smoothing * gap
        return target if abs(target - step) < BUDGET_DEAD_BAND else step

    def _steer(self, config: BudgetConfig, inputs: BudgetInputs) -> tuple[float, str]:
        """Budget that would meet the latency target (inf when there is none) and why."""
        latency, goal = inputs.latency_ms, config.target_latency_ms
        if goal <= 0.0 or latency is None or latency <= 0.0:
            return float("inf"), ""
        sign = ">" if latency > goal else "<="
        why = f"latency {latency:.0f} ms {sign} {goal:.0f} ms"
        ratio = goal / latency
        if abs(ratio - 1.0) <= LATENCY_DEAD_BAND:
            return self._effective, why
        return self._effective * ratio, why


def _battery_scale(config: BudgetConfig, inputs: BudgetInputs, limits: dict[str, str]) -> float:
    battery = inputs.battery
    if battery is None or battery != battery or inputs.charging or battery >= config.battery_low:
        return 1.0
    limits["battery"] = f"battery {battery * 100:.0f}% < {config.battery_low * 100:.0f}%"
    span = config.battery_low - config.battery_critical
    return min(max((battery - config.battery_critical) / span, 0.0), 1.0)


def _cpu_scale(config: BudgetConfig, inputs: BudgetInputs, limits: dict[str, str]) -> float:
    load = inputs.cpu_load
    if load is None or load != load or load <= config.cpu_load_high:
        return 1.0
    limits["cpu"] = f"cpu {load:.2f}"
    span = config.cpu_load_critical - config.cpu_load_high
    return min(max((config.cpu_load_critical - load) / span, 0.0), 1.0)
