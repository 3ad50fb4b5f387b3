"""Bags without rosbag2: `make-bag` (video -> mcap), `replay` and `record` (through rclpy).

Bags are rosbag2 bags (mcap storage) written and read with `rosbags`, so `ros2 bag play/info`
work on them too. This module imports no rclpy; `replay` and `record` load the ROS side
(`eventful_perception.ros.bag_player` / `bag_recorder`) only when run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from eventful_perception import assets
from eventful_perception.bag_io import new_writer, typestore_for
from eventful_perception.ros.conversions import image_to_rgb

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
BATTERY = "sensor_msgs/msg/BatteryState"
DISCHARGING = 2  # sensor_msgs/BatteryState.POWER_SUPPLY_STATUS_DISCHARGING
BATTERY_PERIOD_S = 1.0


def add_parser(subparsers: Any) -> None:
    """Register the `make-bag`, `replay` and `record` subcommands."""
    make = subparsers.add_parser("make-bag", help="write a video into a bag of sensor_msgs/Image")
    make.add_argument("video", help="video file, or a set-up video name such as vtest.avi")
    make.add_argument("bag", type=Path, help="output bag folder (must not exist)")
    make.add_argument("--topic", default="/image_raw")
    make.add_argument("--frame-id", default="camera")
    make.add_argument("--max-frames", type=int, default=0, help="0 = the whole video")
    make.add_argument("--compressed", action="store_true",
                      help="write JPEG sensor_msgs/CompressedImage on TOPIC/compressed")
    make.add_argument("--battery-ramp", type=float, nargs=2, metavar=("FROM", "TO"),
                      help="also write /battery_state (1 Hz, discharging) going FROM -> TO (0-1)")
    make.add_argument("--battery-topic", default="/battery_state")
    make.set_defaults(func=_make_bag_command)

    replay = subparsers.add_parser("replay", help="publish a bag's messages with their timing")
    replay.add_argument("bag", type=Path)
    replay.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    replay.add_argument("--topics", nargs="*", help="only these topics (default: all)")
    replay.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="wait until N subscribers match every image topic before starting")
    replay.add_argument("--loop", action="store_true", help="start over at the end")
    replay.set_defaults(func=_replay_command)

    record = subparsers.add_parser("record", help="record topics (default: the node's outputs)")
    record.add_argument("bag", type=Path, help="output bag folder (must not exist)")
    record.add_argument("--topics", nargs="*", help="default: every detections, compute_usage, "
                        "label_info and /diagnostics topic found")
    record.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until Ctrl-C")
    record.add_argument("--count", type=int, default=0,
                        help="stop once every topic has this many messages; 0 = no limit")
    record.set_defaults(func=_record_command)


def _make_bag_command(args: argparse.Namespace) -> int:
    frames = make_bag(assets.resolve_video(args.video), args.bag, topic=args.topic, frame_id=args.frame_id,
                      max_frames=args.max_frames, compressed=args.compressed,
                      battery_ramp=args.battery_ramp, battery_topic=args.battery_topic)
    print(f"wrote {frames} frames to {args.bag}")
    return 0


def _replay_command(args: argparse.Namespace) -> int:
    from eventful_perception.ros.bag_player import replay  # needs rclpy: only for this command

    replay(args.bag, rate=args.rate, topics=args.topics, subscribers=args.wait_for_subscribers,
           loop=args.loop)
    return 0


def _record_command(args: argparse.Namespace) -> int:
    from eventful_perception.ros.bag_recorder import record  # needs rclpy: only for this command

    counts = record(args.bag, topics=args.topics, duration=args.duration, count=args.count)
    print(", ".join(f"{topic}: {n}" for topic, n in counts.items()) or "nothing recorded")
    return 0


def make_bag(video: Path, bag: Path, *, topic: str = "/image_raw", frame_id: str = "camera",
             max_frames: int = 0, compressed: bool = False,
             battery_ramp: tuple[float, float] | None = None,
             battery_topic: str = "/battery_state", start_ns: int | None = None) -> int:
    """Write the frames of `video` at its frame rate into a new mcap bag; return the frame count.

    Images are rgb8 `sensor_msgs/Image` (or JPEG `CompressedImage` on `topic/compressed`) whose
    header stamps equal the bag times; `battery_ramp` adds a 1 Hz discharging BatteryState.
    """
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {video}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    count = min(total, max_frames) if max_frames > 0 else total
    start_ns = time.time_ns() if start_ns is None else start_ns
    store = get_typestore(Stores.ROS2_JAZZY)
    writer = new_writer(bag)
    written = 0
    with writer:
        image_type = COMPRESSED if compressed else IMAGE
        image_conn = writer.add_connection(topic + ("/compressed" if compressed else ""),
                                           image_type, typestore=store)
        battery_conn = (writer.add_connection(battery_topic, BATTERY, typestore=store)
                        if battery_ramp else None)
        next_battery_ns = start_ns
        while written < count:
            ok, bgr = capture.read()
            if not ok:
                break
            stamp = start_ns + round(written * 1e9 / fps)
            msg = _image(store, bgr, stamp, frame_id, compressed)
            writer.write(image_conn, stamp, store.serialize_cdr(msg, image_type))
            if battery_conn is not None and stamp >= next_battery_ns:
                level = np.interp(written, [0, max(count - 1, 1)], battery_ramp)
                battery = _battery(store, float(level), stamp)
                writer.write(battery_conn, stamp, store.serialize_cdr(battery, BATTERY))
                next_battery_ns += round(BATTERY_PERIOD_S * 1e9)
            written += 1
    capture.release()
    return written


def _header(store: Typestore, stamp_ns: int, frame_id: str) -> Any:
    time_type = store.types["builtin_interfaces/msg/Time"]
    stamp = time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return store.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _image(store: Typestore, bgr: np.ndarray, stamp_ns: int, frame_id: str,
           compressed: bool) -> Any:
    header = _header(store, stamp_ns, frame_id)
    if compressed:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise ValueError(f"JPEG encoding failed for a frame of shape {bgr.shape}")
        return store.types[COMPRESSED](header=header, format="jpeg", data=data.reshape(-1))
    rgb = np.ascontiguousarray(bgr[..., ::-1])  # (H, W, 3) BGR -> RGB
    height, width = rgb.shape[:2]
    return store.types[IMAGE](header=header, height=height, width=width, encoding="rgb8",
                              is_bigendian=0, step=width * 3, data=rgb.reshape(-1))


def _battery(store: Typestore, level: float, stamp_ns: int) -> Any:
    unknown = float("nan")
    return store.types[BATTERY](
        header=_header(store, stamp_ns, "battery"), voltage=unknown, temperature=unknown,
        current=unknown, charge=unknown, capacity=unknown, design_capacity=unknown,
        percentage=level, power_supply_status=DISCHARGING, power_supply_health=0,
        power_supply_technology=0, present=True, cell_voltage=np.zeros(0, np.float32),
        cell_temperature=np.zeros(0, np.float32), location="", serial_number="")


def read_images(bag: Path, topic: str) -> Iterator[tuple[int, np.ndarray]]:
    """(header stamp in ns, RGB uint8 frame) of every image on `topic`, in bag order."""
    for msg in read_messages(bag, topic):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        yield stamp, image_to_rgb(msg)


def read_messages(bag: Path, topic: str) -> Iterator[Any]:
    """Deserialized messages (rosbags dataclasses) of `topic`, in bag order."""
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise ValueError(f"bag {bag} has no topic {topic!r}; it has "
                             f"{sorted({c.topic for c in reader.connections})}")
        store = typestore_for([c.msgtype for c in connections])
        for connection, _, raw in reader.messages(connections=connections):
            yield store.deserialize_cdr(raw, connection.msgtype)
