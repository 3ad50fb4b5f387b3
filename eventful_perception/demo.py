"""`make demo`: the node on the default detector against a bag of real video, battery 100% -> 10%.

Makes a bag from the demo clip (with a battery ramp), starts the `eventful_detector` node in
adaptive mode, replays the bag through rclpy, prints a per-second summary, and writes the
annotated video and a plot of budget / GFLOPs / latency (and, with `--granularity adaptive`, the
granularity stage) over time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import BatteryState, Image
from vision_msgs.msg import Detection2DArray

from eventful_perception import assets
from eventful_perception.bags import make_bag
from eventful_perception.msg import ComputeUsage
from eventful_perception.ros.conversions import image_to_rgb
from eventful_perception.ros.shutdown import init, shutdown, spin
from eventful_perception.stages import GRANULARITIES

BATTERY_LOW, BATTERY_CRITICAL = 0.6, 0.15


@dataclass
class Timeline:
    """What the demo saw, one row per processed frame."""

    t: list[float] = field(default_factory=list)
    budget_requested: list[float] = field(default_factory=list)
    budget_effective: list[float] = field(default_factory=list)
    gflops: list[float] = field(default_factory=list)
    gflops_dense: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    stage: list[int] = field(default_factory=list)
    battery_t: list[float] = field(default_factory=list)
    battery: list[float] = field(default_factory=list)


class DemoMonitor(Node):
    """Subscribes to the node's outputs; prints a per-second summary; writes the video."""

    def __init__(self, video_path: Path, fps: float, granularity: str = "fixed") -> None:
        super().__init__("eventful_demo_monitor")
        self.timeline, self.granularity = Timeline(), granularity
        self._start = time.monotonic()
        self._video_path, self._fps, self._writer = video_path, fps, None
        self._second: list[ComputeUsage] = []
        self._detections = 0
        self._last_reason = ""
        self.create_subscription(ComputeUsage, "compute_usage", self._on_usage, 10)
        self.create_subscription(Detection2DArray, "detections", self._on_detections, 10)
        self.create_subscription(Image, "detection_image", self._on_image, qos_profile_sensor_data)
        self.create_subscription(BatteryState, "battery_state", self._on_battery, 10)
        self.create_timer(1.0, self._print_second)

    @property
    def frames(self) -> int:
        return len(self.timeline.t)

    def _now(self) -> float:
        return time.monotonic() - self._start

    def _on_usage(self, msg: ComputeUsage) -> None:
        tl = self.timeline
        tl.t.append(self._now())
        tl.budget_requested.append(msg.budget_requested)
        tl.budget_effective.append(msg.budget_effective)
        tl.gflops.append(msg.gflops)
        tl.gflops_dense.append(msg.gflops_dense)
        tl.latency_ms.append(msg.latency_ms)
        tl.stage.append(msg.stage)
        self._second.append(msg)

    def _on_detections(self, msg: Detection2DArray) -> None:
        self._detections += len(msg.detections)

    def _on_battery(self, msg: BatteryState) -> None:
        self.timeline.battery_t.append(self._now())
        self.timeline.battery.append(msg.percentage)

    def _on_image(self, msg: Image) -> None:
        bgr = cv2.cvtColor(image_to_rgb(msg), cv2.COLOR_RGB2BGR)
        if self._writer is None:
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            size = (bgr.shape[1], bgr.shape[0])
            self._writer = cv2.VideoWriter(str(self._video_path), fourcc, self._fps, size)
        self._writer.write(bgr)

    def _print_second(self) -> None:
        usages, self._second = self._second, []
        battery = self.timeline.battery[-1] if self.timeline.battery else float("nan")
        if not usages:
            print(f"[{self._now():5.1f} s] battery {battery:4.0%}  waiting for frames ...", flush=True)
            return
        last = usages[-1]
        reason = last.budget_reason or "as requested"
        stage = (f"stage {last.stage} ({last.short_side} px)  "
                 if self.granularity == "adaptive" else "")
        print(f"[{self._now():5.1f} s] battery {battery:4.0%}  frames {len(usages)}  "
              f"budget {last.budget_requested:.2f}->{last.budget_effective:.2f} ({reason})  "
              f"{stage}tokens {last.tokens_updated}/{last.tokens_total}  "
              f"GFLOPs {np.mean([u.gflops for u in usages]):.1f} "
              f"(dense {last.gflops_dense:.1f})  "
              f"latency {np.mean([u.latency_ms for u in usages]):.0f} ms  "
              f"detections {self._detections}", flush=True)
        self._detections = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def plot(timeline: Timeline, path: Path, granularity: str = "fixed") -> None:
    """Budget (and battery), GFLOPs (and the dense cost), latency (and the granularity stage
    with granularity adaptive) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 4 if granularity == "adaptive" else 3
    fig, axes = plt.subplots(rows, 1, figsize=(9, 8 + 2 * (rows - 3)), sharex=True)
    tl = timeline
    axes[0].plot(tl.t, tl.budget_requested, "--", label="budget requested")
    axes[0].plot(tl.t, tl.budget_effective, label="budget effective")
    axes[0].plot(tl.battery_t, tl.battery, ":", label="battery")
    axes[0].set_ylabel("fraction")
    axes[0].set_ylim(0, 1.05)
    axes[1].plot(tl.t, tl.gflops_dense, "--", label="dense")
    axes[1].plot(tl.t, tl.gflops, label="eventful")
    axes[1].set_ylabel("GFLOPs / frame")
    axes[2].plot(tl.t, tl.latency_ms, label="latency")
    axes[2].set_ylabel("ms / frame")
    if rows == 4:
        axes[3].step(tl.t, tl.stage, where="post", label="stage (0 = coarsest)")
        axes[3].set_ylabel("stage")
        axes[3].yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[-1].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    fig.suptitle("eventful_detector on a real clip, battery draining 100% -> 10%")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _use_large_data_profile() -> None:
    """Images cross processes here (player -> node -> monitor): give all of them the profile."""
    profile = str(assets.config_file("fastdds_large_data.xml"))
    for name in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):  # Fast DDS 2, 3
        os.environ.setdefault(name, profile)


def _start_node(args: argparse.Namespace) -> subprocess.Popen:
    command = [sys.executable, "-m", "eventful_perception.ros.node", "--ros-args",
               "-p", f"model:={args.model}", "-p", "budget_mode:=adaptive",
               "-p", f"token_budget:={args.budget}", "-p", f"device:={args.device}",
               # Start saving early so the 100% -> 10% ramp shows the whole battery law.
               "-p", f"battery_low:={BATTERY_LOW}", "-p", f"battery_critical:={BATTERY_CRITICAL}",
               "-p", f"granularity:={args.granularity}"]
    if args.exit_thresholds:
        command += ["-p", f"exit_thresholds_file:={args.exit_thresholds}"]
    return subprocess.Popen(command)


def _replay(bag: Path, rate: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "eventful_perception.cli", "replay", str(bag),
               "--rate", str(rate), "--wait-for-subscribers", "1"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    bag = out / "demo_bag"
    shutil.rmtree(bag, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    print(f"making a bag of {args.frames} frames of {args.video.name} with a battery ramp 100% -> 10%")
    make_bag(args.video, bag, max_frames=args.frames, battery_ramp=(1.0, 0.1))
    _use_large_data_profile()
    init()
    monitor = DemoMonitor(out / "demo_annotated.mp4", fps=10.0 * args.rate,
                          granularity=args.granularity)
    node = _start_node(args)
    try:
        print(f"replaying at {args.rate}x (the node drops frames it cannot keep up with); adaptive "
          f"budget: lowered below {BATTERY_LOW:.0%} battery, min_budget at {BATTERY_CRITICAL:.0%}")
        replay = _replay(bag, args.rate)
        spin(monitor, until=lambda: replay.poll() is not None)
        deadline = time.monotonic() + 5.0  # let the last frame come through
        spin(monitor, until=lambda: time.monotonic() >= deadline)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
        monitor.close()
        monitor.destroy_node()
        shutdown()
    if monitor.frames == 0:
        print("the node published no result: see its log above", file=sys.stderr)
        return 1
    plot(monitor.timeline, out / "demo_plot.png", args.granularity)
    tl = monitor.timeline
    saving = 1.0 - sum(tl.gflops) / sum(tl.gflops_dense)
    print(f"\n{monitor.frames} frames processed; {saving:.0%} of the dense GFLOPs saved; "
          f"median latency {np.median(tl.latency_ms):.0f} ms")
    print(f"annotated video: {out / 'demo_annotated.mp4'}")
    print(f"plot:            {out / 'demo_plot.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventful_perception.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None, help="default: the vtest.avi clip")
    parser.add_argument("--frames", type=int, default=150, help="frames of the video to use")
    parser.add_argument("--rate", type=float, default=0.25, help="replay speed factor")
    parser.add_argument("--budget", type=float, default=0.5, help="requested token budget")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--granularity", choices=GRANULARITIES, default="fixed",
                        help="the node's granularity parameter (adaptive: the granularity ladder)")
    parser.add_argument("--exit-thresholds", default="",
                        help="the node's exit_thresholds_file ('' = config/exit_thresholds.json)")
    args = parser.parse_args(argv)
    args.video = args.video or assets.video_path("vtest.avi")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
