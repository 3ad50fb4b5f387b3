"""The node's overhead: Image publish -> Detection2DArray receipt vs the model's own time.

Starts `eventful_detector` as its own process (loopback, the large-data Fast DDS profile on both
ends, reliable QoS), publishes real frames one at a time and waits for each frame's detections
(the stamp identifies the frame). After each frame the same frame goes through the same model
in this process, on a stream with the same budget, so both timings see the same machine load.
Overhead = end-to-end latency - model time: decode, publish, bookkeeping and DDS transport.

    python benchmarks/bench_node.py --frames 30 --size 640x480 --budget 0.5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default="vtest.avi", help="video file or set-up video name")
    parser.add_argument("--frames", type=int, default=30, help="measured frames (after 3 warm-up frames)")
    parser.add_argument("--size", default="640x480", help="frame size WxH published (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=0.5, help="token_budget (default: %(default)s)")
    parser.add_argument("--model", default="default", help="model parameter (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, node and here (default: %(default)s)")
    parser.add_argument("--json", help="write the summary here")
    return parser.parse_args()


def start_node(args: argparse.Namespace, namespace: str) -> subprocess.Popen:
    params = {"model": args.model, "token_budget": args.budget, "threads": args.threads,
              "image_qos": "reliable", "publish_detection_image": False}
    ros_args = [arg for name, value in params.items() for arg in ("-p", f"{name}:={value}")]
    return subprocess.Popen(
        [sys.executable, "-m", "eventful_perception.ros.node", "--ros-args", "-r", f"__ns:={namespace}", *ros_args],
        cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


class Client:
    """Publishes frames and records when each frame's detections arrive (spun in this thread:
    an executor spinning in a background thread could hang `shutdown` at the end)."""

    def __init__(self, namespace: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray

        rclpy.init()
        self.node = rclpy.create_node("bench_node_client", namespace=namespace)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(Image, "image_raw", qos)
        self.received: dict[int, float] = {}
        self.node.create_subscription(Detection2DArray, "detections", self._on_detections, qos)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def _on_detections(self, msg) -> None:
        self.received[msg.header.stamp.sec - 1000] = time.perf_counter()

    def send(self, frame: np.ndarray, index: int, timeout: float = 120.0) -> float:
        """Publish frame `index`; seconds until its detections arrived."""
        from std_msgs.msg import Header

        from eventful_perception.ros.conversions import rgb_to_image

        header = Header(frame_id="camera")
        header.stamp.sec = 1000 + index
        msg = rgb_to_image(frame, header)
        sent = time.perf_counter()
        self.publisher.publish(msg)
        self._spin_until(lambda: index in self.received, timeout, f"detections for frame {index}")
        return self.received[index] - sent

    def wait_for_node(self, timeout: float = 300.0) -> None:
        self._spin_until(lambda: self.publisher.get_subscription_count() > 0
                         and self.node.count_publishers("detections") > 0, timeout, "the node")

    def _spin_until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout} s")
            self.executor.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown()


def main() -> int:
    args = parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_large_data.xml")
    os.environ["PYTHONPATH"] = str(REPO)
    import torch
    from tqdm import tqdm

    from eventful_perception import load_model
    from eventful_perception.bench import read_frames
    from eventful_perception.assets import resolve_video

    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    frames = read_frames(resolve_video(args.video), 0, args.frames + 3, (width, height), 0)
    namespace = f"/bench_node_{os.getpid()}"
    node = start_node(args, namespace)
    client = Client(namespace)
    try:
        model = load_model(args.model)
        stream = model.new_stream()
        client.wait_for_node()
        end_to_end, model_ms = [], []
        for i, frame in enumerate(tqdm(frames, desc="node vs model", unit="frame", file=sys.stderr)):
            seconds = client.send(frame, i)
            result = model(frame, stream, budget=args.budget)
            if i >= 3:
                end_to_end.append(seconds * 1e3)
                model_ms.append(result.usage.latency_ms)
    finally:
        client.close()
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    summary = summarize(end_to_end, model_ms, args)
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def summarize(end_to_end: list[float], model_ms: list[float], args: argparse.Namespace) -> dict:
    p50, p95 = np.percentile(end_to_end, [50, 95])
    model_p50 = float(np.median(model_ms))
    return {"size": args.size, "budget": args.budget, "frames": len(end_to_end), "threads": args.threads,
            "fps": round(1e3 / float(np.mean(end_to_end)), 3),
            "latency_p50_ms": round(float(p50), 1), "latency_p95_ms": round(float(p95), 1),
            "model_p50_ms": round(model_p50, 1),
            "overhead_ms": round(float(p50) - model_p50, 1),
            "overhead_fraction": round((float(p50) - model_p50) / model_p50, 4)}


if __name__ == "__main__":
    sys.exit(main())
