"""Shared pieces of the node integration tests: the node as a real process, a test-side rclpy
node that publishes camera frames and collects the outputs, tiny random checkpoints, real frames."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from eventful_perception.ros.conversions import rgb_to_image

from ros_helpers import REPO, ros_env
from tiny_models import save_random

VIDEO = REPO / ".cache" / "data" / "vtest.avi"
FRAME_SIZE = (640, 480)  # the size camera drivers typically publish; > one UDP datagram
# All topics of a test run live under this namespace, on top of the per-run DDS domain.
NAMESPACE = f"/ep_test_{os.getpid()}"
RESEND_S = 10.0  # Peer.call: resend an unanswered service request after this long


def video_frames(count: int, size: tuple[int, int] = FRAME_SIZE,
                 start: int = 0) -> list[np.ndarray]:
    """`count` consecutive real RGB frames of the test clip, resized to `size` (width, height)."""
    capture = cv2.VideoCapture(str(VIDEO))
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            raise RuntimeError(f"{VIDEO} has fewer than {start + count} frames (run `make setup`)")
        frames.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA),
                                   cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@functools.lru_cache(maxsize=None)
def tiny_yolos() -> Path:
    """A random-weight YOLOS detector saved like a Hugging Face checkpoint (fast on CPU); made
    once per test session. Initial weights 10x the usual size, and every parameter perturbed
    (transformers zero-initialises detection tokens and position embeddings, which would make
    all detections identical), so its boxes differ from each other and follow the input."""
    from transformers import YolosConfig, YolosForObjectDetection

    folder = Path(tempfile.mkdtemp(prefix="ep_tiny_yolos_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config = YolosConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, image_size=[64, 96], patch_size=16,
                         num_detection_tokens=10, num_labels=3, initializer_range=0.2,
                         id2label={0: "person", 1: "car", 2: "dog"},
                         label2id={"person": 0, "car": 1, "dog": 2})
    return save_random(YolosForObjectDetection, config, folder, scale=0.2)


def image_msg(frame: np.ndarray, index: int, frame_id: str = "camera") -> Image:
    """An rgb8 Image of `frame` whose stamp (1000 + index s, index us) identifies it."""
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = 1000 + index, index * 1000
    return rgb_to_image(frame, header)


def stamp_of(msg: Any) -> tuple[int, int]:
    """(sec, nanosec) of a message's header."""
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def param_value(value: Any) -> str:
    """A `--ros-args -p name:=value` value (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"'{v}'" for v in value) + "]"
    return str(value)


class DetectorProcess:
    """`python -m eventful_perception.ros.node` (or `module`) in its own process, stopped with
    SIGINT."""

    def __init__(self, params: dict[str, Any], env: dict[str, str] | None = None,
                 params_file: Path | None = None,
                 module: str = "eventful_perception.ros.node") -> None:
        args = [sys.executable, "-m", module, "--ros-args", "-r", f"__ns:={NAMESPACE}"]
        if params_file is not None:
            args += ["--params-file", str(params_file)]
        for name, value in params.items():
            args += ["-p", f"{name}:={param_value(value)}"]
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", prefix="eventful_detector_")
        self.proc = subprocess.Popen(args, env=ros_env(**(env or {})), cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        """Everything the node printed so far."""
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGINT, wait, and return (exit code, output)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"node did not exit within {timeout} s of SIGINT:\n"
                                 f"{self.output()}")
        out = self.output()
        self.log.close()
        return self.proc.returncode, out

    def assert_clean_exit(self) -> str:
        """Stop and check the exit was clean (exit code 0, no traceback); return the output."""
        code, out = self.stop()
        assert code == 0, f"exit code {code}:\n{out}"
        assert "Traceback" not in out, out
        return out


class Peer:
    """The test's own rclpy node (its own context): publishes frames, collects outputs."""

    def __init__(self, name: str = "test_peer") -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, namespace=NAMESPACE, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        """Destroy the node and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def spin_until(self, condition: Callable[[], bool], timeout: float,
                   what: str = "condition", process: DetectorProcess | None = None) -> None:
        """Spin until `condition()`; on timeout fail with `what` and the node's output."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                log = process.output() if process else ""
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log}")
            if process is not None and process.proc.poll() is not None:
                raise AssertionError(f"node exited ({process.proc.returncode}) while waiting "
                                     f"for {what}:\n{process.output()}")
            self.executor.spin_once(timeout_sec=0.05)

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> list:
        """Subscribe to `topic` (relative to the test namespace); received messages go to a list."""
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def send_and_wait(self, publisher: Any, msg: Any, replies: list, process: DetectorProcess,
                      timeout: float = 60.0) -> Any:
        """Publish one frame; return the message in `replies` that carries its stamp."""
        stamp = stamp_of(msg)
        publisher.publish(msg)
        self.spin_until(lambda: any(stamp_of(r) == stamp for r in replies), timeout,
                        f"the reply to frame {stamp}", process)
        return next(r for r in replies if stamp_of(r) == stamp)

    def wait_for_subscriber(self, publisher: Any, process: DetectorProcess,
                            timeout: float = 30.0) -> None:
        """Wait until `publisher` has matched a subscription (messages before that are lost)."""
        self.spin_until(lambda: publisher.get_subscription_count() > 0, timeout,
                        f"a subscriber of {publisher.topic_name}", process)

    def wait_for_reliable_match(self, topic: str, process: DetectorProcess,
                                timeout: float = 60.0) -> None:
        """Wait until the node subscribes to `topic` reliably (image_qos auto has matched us)
        and both sides have matched: this peer's publishers on it match the subscription, and
        the node's diagnostics show its subscription matches as many publishers. Discovery is
        not symmetric, and a frame published in between is lost (fresh-clone runs: no frame
        received for 59 s, once before each side was waited for)."""
        full = f"{NAMESPACE}/{topic}"
        statuses: list = []
        diagnostics = self.node.create_subscription(
            DiagnosticArray, "/diagnostics", lambda array: statuses.extend(array.status), 10)

        def node_matched(count: int) -> bool:
            return any(v.get("image topic") == full and v.get("image qos", "").startswith(
                "reliable") and int(v.get("image publishers matched", 0)) >= count
                for v in node_values(statuses))

        def matched() -> bool:
            infos = self.node.get_subscriptions_info_by_topic(full)
            reliable = [i for i in infos if i.qos_profile.reliability == ReliabilityPolicy.RELIABLE]
            ours = [p for p in self.node.publishers if p.topic_name == full]
            return bool(reliable) and len(reliable) == len(infos) and all(
                p.get_subscription_count() == len(infos) for p in ours) and node_matched(len(ours))
        try:
            self.spin_until(matched, timeout, f"a reliable subscription on {full}", process)
        finally:
            self.node.destroy_subscription(diagnostics)

    def set_parameters(self, values: dict[str, Any], timeout: float = 60.0) -> list:
        """Call the node's `set_parameters` service, as `ros2 param set` does; return results.
        (A node still loading its model answers once it spins: 21.7 s once in a loaded full run.)"""
        request = SetParameters.Request(parameters=[
            ParameterMsg(name=name, value=_parameter_value(value))
            for name, value in values.items()])
        return self.call(SetParameters, "eventful_detector/set_parameters", request,
                         timeout).results

    def call(self, srv_type: Any, service: str, request: Any, timeout: float = 60.0,
             process: DetectorProcess | None = None) -> Any:
        """Call an idempotent service of the node; return the response.

        A request sent before the server has matched this client's response reader is never
        answered (DDS discovery; a 60 s timeout once in a fresh-clone run), so the same request
        goes out again every RESEND_S until one is answered."""
        client = self.node.create_client(srv_type, service)
        self.spin_until(client.service_is_ready, timeout, f"{service} service", process)
        futures, start = [], time.monotonic()

        def answered() -> bool:
            if any(future.done() for future in futures):
                return True
            if len(futures) * RESEND_S <= time.monotonic() - start:
                futures.append(client.call_async(request))
            return False
        self.spin_until(answered, timeout, f"{service} response", process)
        self.node.destroy_client(client)
        return next(future for future in futures if future.done()).result()


def node_values(statuses: Iterable[DiagnosticStatus], namespace: str = NAMESPACE) -> list[dict[str, str]]:
    """The key-values of each of the detector node's statuses (one per camera) among `statuses`."""
    return [{kv.key: kv.value for kv in s.values} for s in statuses
            if s.hardware_id == f"{namespace}/eventful_detector"]


def reliable(depth: int = 10) -> QoSProfile:
    """Reliable keep-last QoS, what camera drivers and image_transport offer by default."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def _parameter_value(value: Any) -> ParameterValue:
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))


def camera_main(namespace: str, count: int, period_s: float, width: int, height: int) -> None:
    """A best-effort (sensor-data QoS) camera in its own process: waits until the detector's
    diagnostics show it sees this publisher, publishes `count` real frames of `width` x
    `height` every `period_s`, then exits."""
    from rclpy.qos import qos_profile_sensor_data

    rclpy.init()
    node = Node("camera", namespace=namespace)
    publisher = node.create_publisher(Image, "image_raw", qos_profile_sensor_data)
    seen: list[bool] = []

    def on_diagnostics(array: DiagnosticArray) -> None:
        if any(v.get("image publishers", "0") != "0" for v in node_values(array.status, namespace)):
            seen.append(True)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    while not seen:
        rclpy.spin_once(node, timeout_sec=0.1)
    for i, frame in enumerate(video_frames(count, (width, height))):
        publisher.publish(image_msg(frame, i))
        time.sleep(period_s)  # the camera's frame rate
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    camera_main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
