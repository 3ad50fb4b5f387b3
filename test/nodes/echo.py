"""Test peer: republish every message of TYPE from topic IN on topic OUT (a second process)."""
import importlib
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def main() -> None:
    type_name, topic_in, topic_out = sys.argv[1:4]
    module, _, name = type_name.rpartition(".")
    msg_type = getattr(importlib.import_module(module), name)
    rclpy.init()
    node = Node("echo")
    pub = node.create_publisher(msg_type, topic_out, 10)
    node.create_subscription(msg_type, topic_in, pub.publish, 10)
    print("echo ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A message taken while SIGINT closes the context fails to convert (an rclpy shutdown
        # race, seen once in a fresh-clone run); any other RuntimeError is a real failure.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
