"""A camera's input side: the image subscription with matched QoS and the newest-frame slot."""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image

from eventful_perception.ros import qos
from eventful_perception.ros.diagnostics import CameraStats

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


def image_topic(camera: str, transport: str) -> str:
    """The (unresolved) image topic of `camera`: `<camera>/image_raw[/compressed]`."""
    prefix = f"{camera}/" if camera else ""
    return prefix + ("image_raw/compressed" if transport == "compressed" else "image_raw")


class CameraInput:
    """Subscribes to one camera's images and keeps only the newest unprocessed frame.

    A frame arriving while the previous one still waits replaces it (counted as dropped), so a
    slow model never builds a backlog. `wake` tells the inference thread a frame is waiting.
    """

    def __init__(self, node: Node, camera: str, transport: str, image_qos: str,
                 stats: CameraStats, wake: Callable[[], None]) -> None:
        self._node, self._stats, self._wake = node, stats, wake
        self._topic = image_topic(camera, transport)
        self._type = CompressedImage if transport == "compressed" else Image
        self._lock = threading.Lock()
        self._latest: Any = None
        self._publishers_since: float | None = None
        self._last_frame_at = -math.inf
        self._silence_logged_at = -math.inf
        self._subscription = self._subscribe(qos.subscription_qos(image_qos, []))
        self.match_qos(image_qos)

    @property
    def topic(self) -> str:
        """Fully resolved (and remapped) image topic."""
        return self._subscription.topic_name

    def close(self) -> None:
        """Unsubscribe and forget the waiting frame."""
        self._node.destroy_subscription(self._subscription)
        with self._lock:
            self._latest = None

    def take(self) -> Any:
        """The newest unprocessed frame, or None."""
        with self._lock:
            msg, self._latest = self._latest, None
        return msg

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

    def publishers(self) -> int:
        """Publishers currently on the image topic."""
        return self._node.count_publishers(self.topic)

    def matched_publishers(self) -> int:
        """Publishers this subscription has matched (fewer than `publishers()` while discovery
        is under way or when QoS is incompatible); frames from the others do not arrive."""
        return self._subscription.get_publisher_count()

    def qos_text(self) -> str:
        """The subscription's reliability/durability."""
        return qos.describe(self._qos)

    def check_silence(self, now: float) -> str:
        """Why frames are not arriving although a publisher exists ('' when all is well);
        also logged, at most every SILENCE_LOG_PERIOD_S per camera."""
        text = self._silence(now)
        if text and now - self._silence_logged_at >= SILENCE_LOG_PERIOD_S:
            self._silence_logged_at = now
            self._node.get_logger().warn(text)
        return text

    def _silence(self, now: float) -> str:
        publishers = self.publishers()
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

    def _subscribe(self, profile: QoSProfile) -> Any:
        self._qos, self._incompatible = profile, ""
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        return self._node.create_subscription(self._type, self._topic, self._on_image, profile,
                                              event_callbacks=events)

    def _on_image(self, msg: Any) -> None:
        self._stats.count("in")
        self._last_frame_at, self._incompatible = time.monotonic(), ""
        with self._lock:
            if self._latest is not None:
                self._stats.count("dropped")
            self._latest = msg
        self._wake()

    def _on_incompatible_qos(self, event: Any) -> None:
        policy = str(getattr(event.last_policy_kind, "name", event.last_policy_kind))
        policy = policy.replace("RMW_QOS_POLICY_", "")
        self._incompatible = (f"a publisher on {self.topic} has QoS incompatible with this "
                              f"subscription ({self.qos_text()}; policy {policy})")
        self._node.get_logger().warn(f"{self._incompatible}; {SILENCE_HINT}")
