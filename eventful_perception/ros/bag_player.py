"""`eventful-perception replay`: publish a bag's messages through rclpy at their recorded pace."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader

from eventful_perception.bag_io import message_class
from eventful_perception.ros.shutdown import init, shutdown

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
SUBSCRIBER_TIMEOUT_S = 60.0
ACK_TIMEOUT_S = 5.0
SETTLE_S = 2.0  # reliable subscribers get the last messages before the process exits


def offered_qos(connection: Any) -> QoSProfile:
    """The QoS the recorder saw offered (reliable, volatile, depth 10 when the bag has none)."""
    profiles = connection.ext.offered_qos_profiles
    profile = QoSProfile(depth=10)
    if profiles:
        if profiles[0].reliability.name == "BEST_EFFORT":
            profile.reliability = ReliabilityPolicy.BEST_EFFORT
        if profiles[0].durability.name == "TRANSIENT_LOCAL":
            profile.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return profile


class BagPlayerNode(Node):
    """Publishes raw (still serialized) bag messages on their topics."""

    def __init__(self, connections: Sequence[Any]) -> None:
        super().__init__("bag_player")
        self.publishers_by_topic = {
            c.topic: self.create_publisher(message_class(c.msgtype), c.topic, offered_qos(c))
            for c in connections}
        self.image_topics = [c.topic for c in connections if c.msgtype in IMAGE_TYPES]

    def wait_for_subscribers(self, count: int, timeout: float = SUBSCRIBER_TIMEOUT_S) -> None:
        """Block until every image topic has had `count` matched subscriptions for SETTLE_S
        (a subscriber that matches QoS to its publishers resubscribes once after discovery)."""
        deadline = time.monotonic() + timeout
        settled_since = None
        while settled_since is None or time.monotonic() - settled_since < SETTLE_S:
            counts = [self.publishers_by_topic[t].get_subscription_count()
                      for t in self.image_topics]
            if all(c >= count for c in counts):
                settled_since = settled_since or time.monotonic()
            else:
                settled_since = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"image topics {self.image_topics} have {counts} subscribers, "
                                   f"waited {timeout:.0f} s for {count}")
            time.sleep(0.05)


def replay(bag: Path, rate: float = 1.0, topics: Sequence[str] | None = None,
           subscribers: int = 0, loop: bool = False) -> int:
    """Publish the bag's messages at `rate` times their recorded pace; return how many."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    init()
    published = 0
    try:
        with Reader(bag) as reader:
            connections = [c for c in reader.connections if not topics or c.topic in topics]
            if not connections:
                raise ValueError(f"bag {bag} has none of the topics {list(topics or [])}")
            node = BagPlayerNode(connections)
            if subscribers:
                node.wait_for_subscribers(subscribers)
            published = _play(reader, connections, node, rate, loop)
            for publisher in node.publishers_by_topic.values():
                publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        shutdown()
    return published


def _play(reader: Reader, connections: Sequence[Any], node: BagPlayerNode, rate: float,
          loop: bool) -> int:
    published = 0
    while True:
        start_wall, start_bag = time.monotonic(), None
        for connection, stamp, raw in reader.messages(connections=connections):
            start_bag = stamp if start_bag is None else start_bag
            delay = start_wall + (stamp - start_bag) / 1e9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            node.publishers_by_topic[connection.topic].publish(bytes(raw))
            published += 1
        if not loop:
            return published
