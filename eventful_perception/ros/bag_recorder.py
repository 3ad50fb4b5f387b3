"""`eventful-perception record`: write topics (by default the node's outputs) into an mcap bag."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rosbags.rosbag2 import Writer

from eventful_perception.bag_io import message_class, new_writer, typestore_for
from eventful_perception.ros import qos
from eventful_perception.ros.shutdown import init, shutdown, spin

OUTPUT_NAMES = ("detections", "compute_usage", "label_info")
DISCOVERY_PERIOD_S = 0.5


class BagRecorderNode(Node):
    """Subscribes (raw, QoS matched to the publishers) to topics as they appear; writes them."""

    def __init__(self, writer: Writer, topics: Sequence[str] | None) -> None:
        super().__init__("bag_recorder")
        self._writer, self._topics = writer, set(topics or ())
        self._store = typestore_for([])
        self._subscribed: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.create_timer(DISCOVERY_PERIOD_S, self._discover)
        self._discover()

    def _wanted(self, topic: str) -> bool:
        if self._topics:
            return topic in self._topics
        return topic == "/diagnostics" or topic.rsplit("/", 1)[-1] in OUTPUT_NAMES

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self._subscribed or not self._wanted(topic):
                continue
            publishers = [i.qos_profile for i in self.get_publishers_info_by_topic(topic)]
            if not publishers:
                continue
            msgtype = types[0]
            self._store = typestore_for([msgtype], self._store)
            connection = self._writer.add_connection(topic, msgtype, typestore=self._store)
            self.counts[topic] = 0
            self._subscribed[topic] = self.create_subscription(
                message_class(msgtype), topic,
                lambda raw, c=connection: self._write(c, raw),
                qos.subscription_qos("auto", publishers, depth=100), raw=True)
            self.get_logger().info(f"recording {topic} ({msgtype})")

    def recorded(self, count: int) -> bool:
        """True once every wanted topic (or, without a list, every one found) has `count` messages."""
        topics = self._topics or set(self.counts)
        return bool(topics) and all(self.counts.get(topic, 0) >= count for topic in topics)

    def _write(self, connection: Any, raw: bytes) -> None:
        self._writer.write(connection, self.get_clock().now().nanoseconds, raw)
        self.counts[connection.topic] += 1


def record(bag: Path, topics: Sequence[str] | None = None, duration: float = 0.0,
           count: int = 0) -> dict[str, int]:
    """Record until Ctrl-C, for `duration` seconds, or until every topic has `count` messages;
    return messages written per topic."""
    init()
    writer = new_writer(bag)
    writer.open()
    node = None
    try:
        node = BagRecorderNode(writer, topics)
        deadline = time.monotonic() + duration if duration > 0 else float("inf")
        spin(node, until=lambda: time.monotonic() >= deadline or bool(count and node.recorded(count)))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        counts = dict(node.counts) if node else {}
        if node is not None:
            node.destroy_node()
        writer.close()
        shutdown()
    return counts
