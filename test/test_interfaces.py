"""The package's interfaces build, install and travel between two real rclpy processes."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from eventful_perception.msg import ComputeUsage
from ros_helpers import REPO, spin_until, start, stop
from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose


def _detections() -> Detection2DArray:
    msg = Detection2DArray()
    msg.header.frame_id = "camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    for i, (label, score) in enumerate([("person", 0.87), ("car", 0.42)]):
        det = Detection2D(header=msg.header, id=str(i))
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = label, score
        det.results.append(hyp)
        det.bbox = BoundingBox2D(size_x=40.5 + i, size_y=90.25)
        det.bbox.center.position.x, det.bbox.center.position.y = 320.5, 240.0 + i
        msg.detections.append(det)
    return msg


def _usage() -> ComputeUsage:
    msg = ComputeUsage(stream="front", budget_requested=0.5, budget_effective=0.25,
                       budget_reason="battery 18% < 20%", stage=2, stages_run=3, short_side=448,
                       tokens_updated=4128, tokens_total=16524,
                       gflops=3.5, gflops_dense=12.25, latency_ms=87.5)
    msg.header.frame_id = "front_camera"
    msg.header.stamp.sec = 42
    return msg


@pytest.fixture(scope="module")
def node():
    rclpy.init()
    node = Node("interface_test")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    yield node, executor
    node.destroy_node()
    rclpy.shutdown()


@pytest.mark.parametrize("make_msg", [_detections, _usage], ids=["Detection2DArray", "ComputeUsage"])
def test_round_trip_through_second_process(node, make_msg):
    node, executor = node
    sent = make_msg()
    type_name = f"{type(sent).__module__.rsplit('.', 1)[0]}.{type(sent).__name__}"
    topic = f"rt_{type(sent).__name__.lower()}"
    echo = start([str(REPO / "test/nodes/echo.py"), type_name, topic, topic + "_echo"])
    received = []
    pub = node.create_publisher(type(sent), topic, 10)
    sub = node.create_subscription(type(sent), topic + "_echo", received.append, 10)
    try:
        # Publish until the echo process has discovered us and answered (discovery takes ~1 s).
        def answered() -> bool:
            if not received:
                pub.publish(sent)
            return bool(received)
        assert spin_until(node, executor, answered, timeout=30.0), stop(echo)[1]
    finally:
        code, out = stop(echo)
        node.destroy_publisher(pub)
        node.destroy_subscription(sub)
    assert received[0] == sent
    assert code == 0, out


def test_installed_package_layout():
    """The CMake install puts sources beside the generated msg/ and installs the executables."""
    prefix = Path(sys.prefix)
    site = Path(sysconfig.get_paths()["purelib"])
    for rel in ["lib/eventful_perception/eventful_detector", "lib/eventful_perception/eventful-perception"]:
        assert os.access(prefix / rel, os.X_OK), rel
    for rel in ["share/eventful_perception/package.xml", "share/eventful_perception/launch",
                "share/eventful_perception/config", "share/vision_msgs/package.xml"]:
        assert (prefix / rel).exists(), rel
    # Import the installed copy alone (no source tree on the path), as a robot would.
    code = ("import eventful_perception, eventful_perception.cli;"
            "from eventful_perception.msg import ComputeUsage;"
            "print(eventful_perception.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True,
                         text=True, check=True).stdout
    assert Path(out.strip()).parent == site / "eventful_perception"
