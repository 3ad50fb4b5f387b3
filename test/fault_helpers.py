"""Shared pieces of the fault tests: one node process per scenario, its /diagnostics watched,
and the clean-run reference computed with the library in the test process."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from eventful_perception.eventful.stream import StreamConfig
from eventful_perception.msg import ComputeUsage
from eventful_perception.ros.conversions import msg_to_detections
from node_harness import NAMESPACE, DetectorProcess, Peer, reliable, stamp_of, tiny_yolos
from ros_helpers import REPO

PARAMS = {"short_side": 128, "score_threshold": 0.0, "token_budget": 0.5,
          "image_qos": "reliable"}


@contextmanager
def running_node(params: dict[str, Any],
                 **options: Any) -> Iterator[tuple[DetectorProcess, Peer]]:
    """A detector process (`options` as DetectorProcess takes them) and the test's peer; on exit
    the node must stop cleanly."""
    process = DetectorProcess(params, **options)
    peer = Peer()
    try:
        yield process, peer
    finally:
        peer.close()
        process.assert_clean_exit()


def library_run(frames: Iterable[np.ndarray], budget: float = 0.5) -> list:
    """What the node must publish for these frames in one fresh stream, without faults."""
    import eventful_perception

    model = eventful_perception.load_model(str(tiny_yolos()), short_side=PARAMS["short_side"])
    stream = model.new_stream(StreamConfig())
    return [model(f, stream, budget=budget, score_threshold=0.0) for f in frames]


def assert_same_detections(msg: Detection2DArray, want: Any) -> None:
    boxes, scores, labels = msg_to_detections(msg)
    np.testing.assert_allclose(boxes, want.detections.boxes, atol=0.05)
    np.testing.assert_allclose(scores, want.detections.scores, atol=1e-4)
    assert labels == want.detections.labels


class NodeUnderFault:
    """A detector process, the test's peer, and the node's outputs as they arrive."""

    def __init__(self, params: dict[str, Any], image_type: Any = Image,
                 topic: str = "image_raw", **process: Any) -> None:
        self.process = DetectorProcess({"model": str(tiny_yolos()), **PARAMS, **params},
                                       **process)
        self.peer = Peer()
        self.arrays = self.peer.collect(DiagnosticArray, "/diagnostics")
        self.detections = self.peer.collect(Detection2DArray, "detections")
        self.usage = self.peer.collect(ComputeUsage, "compute_usage")
        self.publisher = self.peer.node.create_publisher(image_type, topic, reliable(depth=1))
        self.peer.wait_for_reliable_match(topic, self.process, timeout=120.0)

    @classmethod
    def faulty(cls, params: dict[str, Any]) -> "NodeUnderFault":
        """The node with a model that raises on frames 111 px wide (test/nodes/faulty_detector)."""
        path = f"{REPO}:{REPO / 'test' / 'nodes'}"
        return cls(params, module="faulty_detector", env={"PYTHONPATH": path})

    def close(self) -> str:
        """Stop the node (clean exit asserted); return its log."""
        self.peer.close()
        return self.process.assert_clean_exit()

    def status(self) -> DiagnosticStatus | None:
        """The node's newest status of its (only) camera."""
        for array in reversed(self.arrays):
            for status in array.status:
                if status.hardware_id == f"{NAMESPACE}/eventful_detector":
                    return status
        return None

    def values(self) -> dict[str, str]:
        status = self.status()
        return {kv.key: kv.value for kv in status.values} if status else {}

    def wait_for_value(self, key: str, value: str, timeout: float = 30.0) -> DiagnosticStatus:
        """Spin until the newest status shows `key: value`; return that status."""
        self.peer.spin_until(lambda: self.values().get(key) == value, timeout,
                             f"diagnostics showing {key}: {value} (now {self.values()})",
                             self.process)
        return self.status()

    def send(self, msg: Any, timeout: float = 60.0) -> Detection2DArray:
        """Publish one frame the node must process; return its detections."""
        return self.peer.send_and_wait(self.publisher, msg, self.detections, self.process,
                                       timeout)

    def usage_of(self, msg: Any) -> ComputeUsage:
        self.peer.spin_until(lambda: any(stamp_of(u) == stamp_of(msg) for u in self.usage),
                             30.0, "compute usage", self.process)
        return next(u for u in self.usage if stamp_of(u) == stamp_of(msg))
