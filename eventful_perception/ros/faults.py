"""Stream faults seen in header stamps, and a per-reason log throttle (no ROS import)."""
from __future__ import annotations

import math

# The same reason is logged at most this often per camera; every occurrence is still counted.
LOG_PERIOD_S = 5.0
BACKWARDS = "timestamps went backwards"
GAP = "gap between frames"
RESOLUTION = "resolution changed"


def stamp_fault(previous_ns: int | None, stamp_ns: int, max_gap_s: float) -> str:
    """Why the stream must start over before the frame stamped `stamp_ns` ('' when it need not).

    A stamp earlier than the previous frame's (a bag that loops, a clock that jumped back) or a
    gap longer than `max_gap_s` (0 = no limit) means the scene the stream's state remembers is not
    the one the frame continues. Unstamped frames (0) never reset.
    """
    if previous_ns is None or stamp_ns == 0 or previous_ns == 0:
        return ""
    if stamp_ns < previous_ns:
        return BACKWARDS
    if max_gap_s > 0 and (stamp_ns - previous_ns) / 1e9 > max_gap_s:
        return GAP
    return ""


class LogThrottle:
    """Lets each reason through at most once per `period_s` (monotonic seconds)."""

    def __init__(self, period_s: float = LOG_PERIOD_S) -> None:
        self._period_s = period_s
        self._last: dict[str, float] = {}

    def allow(self, reason: str, now: float) -> bool:
        """True when `reason` was not let through within the last period."""
        if now - self._last.get(reason, -math.inf) < self._period_s:
            return False
        self._last[reason] = now
        return True
