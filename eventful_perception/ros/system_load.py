"""The robot's state as the budget controller sees it: battery and CPU load (no ROS import)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import psutil

# After this long without a cpu_load message the node measures its own machine instead.
CPU_TOPIC_TIMEOUT_S = 3.0
# sensor_msgs/BatteryState power_supply_status values during which the battery never limits.
CHARGING, FULL = 1, 4


@dataclass(frozen=True)
class Battery:
    """Last battery report: charge 0-1 (None when unknown) and whether it charges or is full."""

    fraction: float | None = None
    charging: bool = False

    @classmethod
    def from_report(cls, percentage: float, power_supply_status: int) -> Battery:
        """Build from BatteryState fields; NaN or out-of-range percentages count as unknown."""
        known = not math.isnan(percentage) and 0.0 <= percentage <= 1.0
        return cls(percentage if known else None, power_supply_status in (CHARGING, FULL))

    def describe(self) -> str:
        """e.g. '18%', '18% charging', 'unknown'."""
        text = "unknown" if self.fraction is None else f"{self.fraction * 100:.0f}%"
        return text + (" charging" if self.charging else "")


class CpuLoad:
    """CPU load 0-1 from the `cpu_load` topic, or, while it is silent, the load of this machine's
    other processes measured with psutil (or by `sample`, which returns the machine's load and
    this process's share of it, both 0-1, since its previous call)."""

    def __init__(self, timeout_s: float = CPU_TOPIC_TIMEOUT_S,
                 sample: Callable[[], tuple[float, float]] | None = None) -> None:
        self._timeout_s = timeout_s
        self._reported: float | None = None
        self._reported_at = -math.inf
        self._sample = sample or _psutil_sampler()
        self._measured: float | None = None

    def report(self, load: float, now: float) -> None:
        """A value from the topic (clamped to 0-1) at monotonic time `now`."""
        self._reported, self._reported_at = min(max(float(load), 0.0), 1.0), now

    def measure(self) -> None:
        """Sample the load of the machine's *other* processes since the previous call (~1 Hz).

        The detector's own work is left out: counting it would make the budget chase its own
        load (a busy model lowers its budget, which frees the CPU, which raises it again).
        """
        machine, own = self._sample()
        self._measured = min(max(machine - own, 0.0), 1.0)

    def current(self, now: float) -> tuple[float | None, str]:
        """(load, source) where source is 'topic' or 'psutil'."""
        if self._reported is not None and now - self._reported_at <= self._timeout_s:
            return self._reported, "topic"
        return self._measured, "psutil"


def _psutil_sampler() -> Callable[[], tuple[float, float]]:
    process = psutil.Process()
    # The first calls only start the measurements.
    psutil.cpu_percent(interval=None)
    process.cpu_percent(interval=None)

    def sample() -> tuple[float, float]:
        machine = psutil.cpu_percent(interval=None) / 100.0
        own = process.cpu_percent(interval=None) / 100.0 / (psutil.cpu_count() or 1)
        return machine, own
    return sample
