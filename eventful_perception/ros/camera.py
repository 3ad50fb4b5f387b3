"""One camera of the node: matched-QoS subscription, newest-frame slot, outputs, stream state."""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from eventful_perception.drawing import draw_detections, draw_text_panel
from eventful_perception.eventful.stream import StreamConfig
from eventful_perception.models.results import Detections
from eventful_perception.msg import ComputeUsage
from eventful_perception.ros import conversions, qos
from eventful_perception.ros.budget import BudgetController, BudgetDecision, BudgetInputs
from eventful_perception.ros.diagnostics import CameraStats, FrameReport
from eventful_perception.ros.params import Settings
from eventful_perception.ros.system_load import Battery
from eventful_perception.tracking import StreamTracker

try:  # Jazzy and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

# A publisher that has sent no frame for this long is reported (log + diagnostics).
FRAME_SILENCE_S = 5.0
SILENCE_LOG_PERIOD_S = 10.0
SILENCE_HINT = ("check that its QoS is compatible (image_qos), and for large images across "
                "processes give the camera driver and this node a Fast DDS profile with a large "
                "shared-memory segment (config/fastdds_large_data.xml)")


class Camera:
    """Everything one camera needs; frames go in through the slot, out through `process()`."""

    def __init__(self, node: Node, name: str, settings: Settings, model: Any,
                 wake: Callable[[], None]) -> None:
        self.name, self.stats = name, CameraStats(name)
        self._budget, self._latency_ms = BudgetController(), None
        self._node, self._wake, self._model = node, wake, model
        self._stream = self._new_stream(settings.refresh_interval)
        self._tracker: StreamTracker | None = None  # made at the first frame with tracking on
        prefix = f"{name}/" if name else ""
        compressed = settings.transport == "compressed"
        self._topic = prefix + ("image_raw/compressed" if compressed else "image_raw")
        self._type = CompressedImage if compressed else Image
        self._lock = threading.Lock()
        self._latest: Any = None
        self._publishers_since: float | None = None
        self._last_frame_at = -math.inf
        self._silence_logged_at = -math.inf
        self._detections = node.create_publisher(Detection2DArray, prefix + "detections", 10)
        self._image = node.create_publisher(Image, prefix + "detection_image", 1)
        self._usage = node.create_publisher(ComputeUsage, prefix + "compute_usage", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_info = node.create_publisher(LabelInfo, prefix + "label_info", latched)
        self._subscription = self._subscribe(qos.subscription_qos(settings.image_qos, []))
        self.match_qos(settings.image_qos)

    @property
    def topic(self) -> str:
        """Fully resolved (and remapped) image topic."""
        return self._subscription.topic_name

    def publish_label_info(self, labels: list[str], threshold: float) -> None:
        """Publish the label list once (transient local: late subscribers get it too)."""
        header = Header(stamp=self._node.get_clock().now().to_msg())
        self._label_info.publish(conversions.label_info_msg(header, labels, threshold))

    def match_qos(self, mode: str) -> None:
        """Resubscribe when the QoS that `mode` asks for (given the publishers) has changed."""
        publishers = [info.qos_profile for info in
                      self._node.get_publishers_info_by_topic(self.topic)]
        wanted = qos.subscription_qos(mode, publishers)
        if qos.describe(wanted) == qos.describe(self._qos):
            return
        self._node.destroy_subscription(self._subscription)
        self._subscription = self._subscribe(wanted)
        self._node.get_logger().info(
            f"subscribed to {self.topic} ({self._type.__name__}, {qos.describe(wanted)}; "
            f"image_qos={mode}, {len(publishers)} publisher(s))")

    def _subscribe(self, profile: QoSProfile) -> Any:
        self._qos, self._incompatible = profile, ""
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        return self._node.create_subscription(self._type, self._topic, self._on_image, profile,
                                              event_callbacks=events)

    def check_silence(self, now: float) -> str:
        """Why frames are not arriving although a publisher exists ('' when all is well);
        also logged, at most every SILENCE_LOG_PERIOD_S per camera."""
        text = self._silence(now)
        if text and now - self._silence_logged_at >= SILENCE_LOG_PERIOD_S:
            self._silence_logged_at = now
            self._node.get_logger().warn(text)
        return text

    def _silence(self, now: float) -> str:
        publishers = self._node.count_publishers(self.topic)
        if publishers == 0:
            self._publishers_since, self._incompatible = None, ""
            return ""
        if self._publishers_since is None:
            self._publishers_since = now
        quiet = now - max(self._publishers_since, self._last_frame_at)
        if self._incompatible:
            return f"{self._incompatible}; {SILENCE_HINT}"
        if quiet < FRAME_SILENCE_S:
            return ""
        return (f"{publishers} publisher(s) on {self.topic} but no frame received for "
                f"{quiet:.0f} s: {SILENCE_HINT}")

    def publishers(self) -> int:
        """Publishers currently on the image topic."""
        return self._node.count_publishers(self.topic)

    def qos_text(self) -> str:
        """The subscription's reliability/durability."""
        return qos.describe(self._qos)

    def take(self) -> Any:
        """The newest unprocessed frame, or None."""
        with self._lock:
            msg, self._latest = self._latest, None
        return msg

    def _on_image(self, msg: Any) -> None:
        self.stats.count("in")
        self._last_frame_at, self._incompatible = time.monotonic(), ""
        with self._lock:
            if self._latest is not None:
                self.stats.count("dropped")
            self._latest = msg
        self._wake()

    def _on_incompatible_qos(self, event: Any) -> None:
        policy = str(getattr(event.last_policy_kind, "name", event.last_policy_kind))
        policy = policy.replace("RMW_QOS_POLICY_", "")
        self._incompatible = (f"a publisher on {self.topic} has QoS incompatible with this "
                              f"subscription ({self.qos_text()}; policy {policy})")
        self._node.get_logger().warn(f"{self._incompatible}; {SILENCE_HINT}")

    def process(self, msg: Any, settings: Settings, battery: Battery,
                cpu_load: float | None) -> None:
        """Run the model on one frame and publish detections, compute usage and the overlay."""
        start = time.perf_counter()
        try:
            rgb = conversions.image_to_rgb(msg)
        except ValueError as error:
            self.stats.count("rejected", str(error))
            self._node.get_logger().warn(f"{self.topic}: {error}", throttle_duration_sec=5.0)
            return
        decision = self._budget.update(settings.budget_config(), BudgetInputs(
            requested=settings.token_budget, battery=battery.fraction, charging=battery.charging,
            cpu_load=cpu_load, latency_ms=self._latency_ms))
        if settings.refresh_interval != self._stream.config.refresh_interval:
            self._stream, self._tracker = self._new_stream(settings.refresh_interval), None
        threshold = settings.threshold if settings.policy == "threshold" else None
        try:
            result = self._model(rgb, self._stream, budget=decision.effective,
                                 threshold=threshold, score_threshold=settings.score_threshold)
        except (RuntimeError, ValueError) as error:
            self.stats.failed(str(error))
            self._node.get_logger().error(f"{self.topic}: model failed: {error}",
                                          throttle_duration_sec=5.0)
            return
        detections = result.detections or Detections.empty()
        ids = self._track(detections, rgb.shape[:2], msg.header.stamp, settings)
        self._detections.publish(conversions.detections_to_msg(
            msg.header, detections.boxes, detections.scores, detections.labels, ids))
        self._latency_ms = (time.perf_counter() - start) * 1000.0
        self._publish_usage(msg.header, decision, result.usage)
        if settings.publish_detection_image and self._image.get_subscription_count() > 0:
            self._publish_overlay(msg.header, rgb, detections, ids, decision, result.usage)
        self.stats.processed(FrameReport(
            self._latency_ms, decision, result.usage.tokens_updated, result.usage.tokens_total,
            result.usage.gflops, result.usage.gflops_dense, len(detections)))

    def _track(self, detections: Detections, frame_size: tuple[int, int], stamp: Any,
               settings: Settings) -> list[str] | None:
        """Track IDs (None with tracking off); the tracks restart when a tracking parameter
        changes or tracking is switched back on."""
        if not settings.tracking:
            self._tracker = None
            return None
        config = settings.tracker_config()
        if self._tracker is None or self._tracker.config != config:
            self._tracker = StreamTracker(config)
        return self._tracker.update(detections.boxes, detections.scores, frame_size,
                                    stamp.sec + stamp.nanosec * 1e-9)

    def _new_stream(self, refresh_interval: int) -> Any:
        return self._model.new_stream(StreamConfig(refresh_interval=refresh_interval),
                                      name=self.name)

    def _publish_usage(self, header: Any, decision: BudgetDecision, usage: Any) -> None:
        self._usage.publish(ComputeUsage(
            header=header, stream=self.name, budget_requested=decision.requested,
            budget_effective=decision.effective, budget_reason=decision.reason,
            tokens_updated=int(usage.tokens_updated), tokens_total=int(usage.tokens_total),
            gflops=float(usage.gflops), gflops_dense=float(usage.gflops_dense),
            latency_ms=float(self._latency_ms)))

    def _publish_overlay(self, header: Any, rgb: Any, detections: Detections,
                         ids: list[str] | None, decision: BudgetDecision, usage: Any) -> None:
        summary = (f"budget {decision.effective:.2f} ({decision.reason}) | tokens "
                   f"{usage.tokens_updated}/{usage.tokens_total} | {usage.gflops:.1f}/"
                   f"{usage.gflops_dense:.1f} GFLOPs | {self._latency_ms:.0f} ms")
        image = draw_detections(rgb, detections.boxes, detections.scores, detections.labels, ids)
        image = draw_text_panel(image, [summary])
        self._image.publish(conversions.rgb_to_image(image, header))

