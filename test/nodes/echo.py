"""Test peer: republish every message of TYPE from topic IN on topic OUT (a second process)."""
import importlib
import sys

from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from eventful_perception.ros.shutdown import ignore_interrupts, init, shutdown, spin


def main() -> None:
    type_name, topic_in, topic_out = sys.argv[1:4]
    module, _, name = type_name.rpartition(".")
    msg_type = getattr(importlib.import_module(module), name)
    init()
    node = Node("echo")
    pub = node.create_publisher(msg_type, topic_out, 10)
    node.create_subscription(msg_type, topic_in, pub.publish, 10)
    print("echo ready", flush=True)
    try:
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        ignore_interrupts()
        node.destroy_node()
        shutdown()


if __name__ == "__main__":
    main()
