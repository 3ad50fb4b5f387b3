"""A camera's processing side: its stream (or granularity ladder) and budget, the model step
and the outputs.

The input side (subscription, QoS matching, newest-frame slot) is `camera_input.CameraInput`.
"""
from __future__ import annotations

import time
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from eventful_perception.drawing import draw_detections, draw_text_panel, stage_text
from eventful_perception.eventful.stream import StreamConfig
from eventful_perception.models.results import Detections
from eventful_perception.msg import ComputeUsage
from eventful_perception.ros import conversions, faults
from eventful_perception.ros.budget import BudgetController, BudgetDecision, BudgetInputs
from eventful_perception.ros.camera_input import image_topic
from eventful_perception.ros.diagnostics import CameraStats, FrameReport
from eventful_perception.ros.model import DetectorModel
from eventful_perception.ros.params import Settings
from eventful_perception.ros.system_load import Battery
from eventful_perception.stages import StagedResult, StagedStream
from eventful_perception.tracking import StreamTracker


class CameraPipeline:
    """One camera's stream state (a `StagedStream`: one Eventful stream, or the granularity
    ladder's state) and outputs; `process()` turns a frame into its messages."""

    def __init__(self, node: Node, name: str, settings: Settings, model: DetectorModel,
                 stats: CameraStats) -> None:
        self.name, self.stats = name, stats
        self._budget, self._latency_ms = BudgetController(), None
        self._node, self._model = node, model
        self._topic = node.resolve_topic_name(image_topic(name, settings.transport))
        self._throttle = faults.LogThrottle()
        self._stream = self._new_stream(settings)
        self._last_stamp_ns: int | None = None
        self._last_shape: tuple[int, ...] | None = None
        self._tracker: StreamTracker | None = None  # made at the first frame with tracking on
        prefix = f"{name}/" if name else ""
        self._detections = node.create_publisher(Detection2DArray, prefix + "detections", 10)
        self._image = node.create_publisher(Image, prefix + "detection_image", 1)
        self._usage = node.create_publisher(ComputeUsage, prefix + "compute_usage", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_info = node.create_publisher(LabelInfo, prefix + "label_info", latched)

    def close(self) -> None:
        """Destroy the publishers; the stream state goes with this object."""
        for publisher in (self._detections, self._image, self._usage, self._label_info):
            self._node.destroy_publisher(publisher)

    def publish_label_info(self, labels: list[str], threshold: float) -> None:
        """Publish the label list once (transient local: late subscribers get it too)."""
        header = Header(stamp=self._node.get_clock().now().to_msg())
        self._label_info.publish(conversions.label_info_msg(header, labels, threshold))

    def stream_bytes(self) -> int:
        """Memory held by the stream's state tensors."""
        return self._stream.memory_bytes()

    def process(self, msg: Any, settings: Settings, battery: Battery,
                cpu_load: float | None) -> None:
        """Run the model on one frame and publish detections, compute usage and the overlay."""
        start = time.perf_counter()
        try:
            rgb = conversions.image_to_rgb(msg)
        except conversions.ImageRejected as error:
            self.stats.rejected(error.reason, str(error))
            self._log("warn", error.reason, f"input rejected: {error}")
            return
        self._check_stream(msg.header.stamp, rgb.shape, settings.max_frame_gap_s)
        decision = self._budget.update(settings.budget, BudgetInputs(
            requested=settings.token_budget, battery=battery.fraction, charging=battery.charging,
            cpu_load=cpu_load, latency_ms=self._latency_ms))
        if (self._stream.stream_config != _stream_config(settings)
                or settings.ladder != self._stream.ladder_config):
            self._stream, self._tracker = self._new_stream(settings), None
        threshold = settings.threshold if settings.policy == "threshold" else None
        try:
            staged = self._stream(rgb, decision.effective, threshold, settings.score_threshold)
        except (RuntimeError, ValueError) as error:
            self.stats.failed(str(error))
            self._log("error", "model", f"model failed: {error}")
            return
        result = staged.result
        detections = result.detections or Detections.empty()
        ids = self._track(detections, rgb.shape[:2], msg.header.stamp, settings)
        self._detections.publish(conversions.detections_to_msg(
            msg.header, detections.boxes, detections.scores, detections.labels, ids))
        self._latency_ms = (time.perf_counter() - start) * 1000.0
        self._publish_usage(msg.header, decision, staged)
        if settings.publish_detection_image and self._image.get_subscription_count() > 0:
            self._publish_overlay(msg.header, rgb, detections, ids, decision, staged)
        self.stats.processed(FrameReport(
            self._latency_ms, decision, result.usage.tokens_updated, result.usage.tokens_total,
            result.usage.gflops, result.usage.gflops_dense, len(detections),
            self._stream.memory_bytes(), staged.stage, staged.short_side,
            tuple(self._stream.exit_rates())))

    def _track(self, detections: Detections, frame_size: tuple[int, int], stamp: Any,
               settings: Settings) -> list[str] | None:
        """Track IDs (None with tracking off); the tracks restart when a tracking parameter
        changes or tracking is switched back on."""
        if not settings.tracking:
            self._tracker = None
            return None
        if self._tracker is None or self._tracker.config != settings.tracker:
            self._tracker = StreamTracker(settings.tracker)
        return self._tracker.update(detections.boxes, detections.scores, frame_size,
                                    stamp.sec + stamp.nanosec * 1e-9)

    def _check_stream(self, stamp: Any, shape: tuple[int, ...], max_gap_s: float) -> None:
        """Start the stream over when its state no longer describes the scene of this frame."""
        stamp_ns = stamp.sec * 10**9 + stamp.nanosec
        reason = faults.stamp_fault(self._last_stamp_ns, stamp_ns, max_gap_s)
        if self._last_shape is not None and shape != self._last_shape:
            reason = faults.RESOLUTION  # the model would reset by itself; say so and count it
        self._last_stamp_ns, self._last_shape = stamp_ns, shape
        if reason:
            self._stream.reset()
            self._tracker = None  # tracks restart with the stream
            self.stats.stream_reset(reason)
            self._log("info", reason, f"stream reset: {reason}")

    def _log(self, level: str, reason: str, text: str) -> None:
        if not self._throttle.allow(reason, time.monotonic()):
            return
        # rclpy refuses one call site logging at different severities: one line per level.
        logger, text = self._node.get_logger(), f"{self._topic}: {text}"
        if level == "error":
            logger.error(text)
        elif level == "warn":
            logger.warn(text)
        else:
            logger.info(text)

    def _new_stream(self, settings: Settings) -> StagedStream:
        return StagedStream(self._model, _stream_config(settings), settings.ladder, name=self.name)

    def _publish_usage(self, header: Any, decision: BudgetDecision, staged: StagedResult) -> None:
        usage = staged.result.usage
        self._usage.publish(ComputeUsage(
            header=header, stream=self.name, budget_requested=decision.requested,
            budget_effective=decision.effective, budget_reason=decision.reason,
            stage=staged.stage, stages_run=staged.stages_run, short_side=staged.short_side,
            tokens_updated=int(usage.tokens_updated), tokens_total=int(usage.tokens_total),
            gflops=float(usage.gflops), gflops_dense=float(usage.gflops_dense),
            latency_ms=float(self._latency_ms)))

    def _publish_overlay(self, header: Any, rgb: Any, detections: Detections,
                         ids: list[str] | None, decision: BudgetDecision,
                         staged: StagedResult) -> None:
        usage = staged.result.usage
        summary = (f"budget {decision.effective:.2f} ({decision.reason}) | tokens "
                   f"{usage.tokens_updated}/{usage.tokens_total} | {usage.gflops:.1f}/"
                   f"{usage.gflops_dense:.1f} GFLOPs | {self._latency_ms:.0f} ms")
        lines = [summary]
        if staged.stages > 1:
            lines.append(stage_text(staged.stage, staged.short_side))
        image = draw_detections(rgb, detections.boxes, detections.scores, detections.labels, ids)
        image = draw_text_panel(image, lines)
        self._image.publish(conversions.rgb_to_image(image, header))


def _stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(refresh_interval=settings.refresh_interval, score_priority=settings.score_priority)
