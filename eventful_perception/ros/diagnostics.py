"""Per-camera statistics and their DiagnosticStatus (level, message, key-values)."""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from eventful_perception.ros.budget import BudgetDecision

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)
LATENCY_WINDOW = 100  # latency percentiles cover the last frames, not the whole run


@dataclass(frozen=True)
class FrameReport:
    """What one processed frame cost and produced."""

    latency_ms: float
    decision: BudgetDecision
    tokens_updated: int
    tokens_total: int
    gflops: float
    gflops_dense: float
    detections: int
    stream_bytes: int = 0  # memory held by the camera's stream state after the frame
    stage: int = 0  # granularity stage the frame exited at
    short_side: int = 0  # the model input's short side at that stage
    # (short side, fraction of the frames exiting there) per stage since the camera's ladder
    # state started; () with granularity fixed
    exit_rates: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Context:
    """Node-wide facts shown in every camera's status."""

    hardware_id: str
    topic: str
    publishers: int
    matched: int  # publishers the image subscription has matched
    qos: str
    target_latency_ms: float
    battery: str
    cpu_load: str
    silence: str = ""  # why frames are not arriving, when they are not


class CameraStats:
    """Counts one camera's frames; `status()` summarises the period since its previous call.

    Written by the executor (received, dropped) and the worker thread (processed), hence the lock.
    """

    def __init__(self, camera: str) -> None:
        self.camera = camera or "camera"
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last: FrameReport | None = None
        self._error = ""
        self._period = {"in": 0, "out": 0, "dropped": 0, "rejected": 0}
        self._totals = {"in": 0, "out": 0, "dropped": 0, "rejected": 0}
        self._last_rejection = ""
        self._rejections: Counter[str] = Counter()
        self._resets: Counter[str] = Counter()
        self._model_errors = 0

    def count(self, what: str) -> None:
        """Count an event: 'in' (received) or 'dropped' (overwritten unprocessed)."""
        with self._lock:
            self._period[what] += 1
            self._totals[what] += 1

    def rejected(self, reason: str, detail: str) -> None:
        """An input could not be used: counted per `reason`, `detail` shown in the message."""
        with self._lock:
            self._period["rejected"] += 1
            self._totals["rejected"] += 1
            self._rejections[reason] += 1
            self._last_rejection = detail

    def stream_reset(self, reason: str) -> None:
        """The camera's stream started over (bag loop, gap, resolution change)."""
        with self._lock:
            self._resets[reason] += 1

    def processed(self, report: FrameReport) -> None:
        """A frame went through the model and its outputs were published."""
        with self._lock:
            self._period["out"] += 1
            self._totals["out"] += 1
            self._latencies.append(report.latency_ms)
            self._last, self._error = report, ""

    def failed(self, error: str) -> None:
        """The model raised on a frame."""
        with self._lock:
            self._error = error
            self._model_errors += 1

    def status(self, context: Context, period_s: float) -> DiagnosticStatus:
        """Status over the period since the previous call; resets the period counters."""
        with self._lock:
            period, self._period = self._period, dict.fromkeys(self._period, 0)
            latencies = np.array(self._latencies) if self._latencies else None
            last, error, totals = self._last, self._error, dict(self._totals)
            rejection = self._last_rejection
            counters = {**{f"inputs rejected: {r}": n for r, n in sorted(self._rejections.items())},
                        **{f"stream resets: {r}": n for r, n in sorted(self._resets.items())},
                        "model errors": self._model_errors}
        p50, p95 = (np.percentile(latencies, [50, 95]) if latencies is not None
                    else (float("nan"), float("nan")))
        level, message = _level(period, totals, last, error, context, p50, rejection)
        values = {
            "fps in": f"{period['in'] / period_s:.1f}",
            "fps out": f"{period['out'] / period_s:.1f}",
            "frames received": totals["in"],
            "frames processed": totals["out"],
            "frames dropped (newest kept)": totals["dropped"],
            "inputs rejected": totals["rejected"],
            **counters,
            "latency p50 ms": f"{p50:.1f}",
            "latency p95 ms": f"{p95:.1f}",
            "target latency ms": f"{context.target_latency_ms:.0f}",
            "image topic": context.topic,
            "image publishers": context.publishers,
            "image publishers matched": context.matched,
            "image qos": context.qos,
            "battery": context.battery,
            "cpu load": context.cpu_load,
            **_frame_values(last),
        }
        return DiagnosticStatus(
            level=level, name=f"eventful_detector: {self.camera}", message=message,
            hardware_id=context.hardware_id,
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])


def _frame_values(last: FrameReport | None) -> dict[str, str]:
    if last is None:
        return {}
    savings = 1.0 - last.gflops / last.gflops_dense if last.gflops_dense > 0 else 0.0
    return {
        "budget requested": f"{last.decision.requested:.3f}",
        "budget effective": f"{last.decision.effective:.3f}",
        "budget reason": last.decision.reason,
        "tokens updated": str(last.tokens_updated),
        "tokens total": str(last.tokens_total),
        "gflops": f"{last.gflops:.2f}",
        "gflops dense": f"{last.gflops_dense:.2f}",
        "gflops savings vs dense": f"{savings * 100:.0f}%",
        "detections": str(last.detections),
        "stream state MB": f"{last.stream_bytes / 1e6:.3f}",
        **_stage_values(last),
    }


def _stage_values(last: FrameReport) -> dict[str, str]:
    """The granularity ladder's keys (none with granularity fixed)."""
    if not last.exit_rates:
        return {}
    return {"stage": f"{last.stage} ({last.short_side})",
            **{f"exit rate stage {k} ({side})": f"{rate:.3f}"
               for k, (side, rate) in enumerate(last.exit_rates)}}


def _level(period: dict[str, int], totals: dict[str, int], last: FrameReport | None, error: str,
           context: Context, p50: float, rejection: str) -> tuple[bytes, str]:
    if error:
        return ERROR, f"model failed: {error}"
    warnings = []
    if context.silence:
        warnings.append(context.silence)
    if period["dropped"]:
        warnings.append(f"{period['dropped']} frames dropped (camera faster than the model)")
    if period["rejected"]:
        warnings.append(f"{period['rejected']} inputs rejected: {rejection}")
    if context.target_latency_ms > 0 and p50 > context.target_latency_ms:
        warnings.append(f"latency p50 {p50:.0f} ms > target {context.target_latency_ms:.0f} ms")
    if last is not None and "battery" in last.decision.limited_by:
        warnings.append(f"budget clamped: {last.decision.reason}")
    if warnings:
        return WARN, "; ".join(warnings)
    if totals["in"] == 0 and context.publishers == 0:
        return STALE, f"waiting for a publisher on {context.topic}"
    if last is None:
        return OK, "waiting for the first frame"
    return OK, (f"budget {last.decision.effective:.2f} ({last.decision.reason}), "
                f"{last.tokens_updated}/{last.tokens_total} tokens, {last.gflops:.1f} GFLOPs")
