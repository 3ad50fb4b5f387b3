"""Choice of the image subscription's QoS: fixed profiles, or `auto` matching like rosbag2."""
from __future__ import annotations

from typing import Sequence

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def subscription_qos(mode: str, publishers: Sequence[QoSProfile], depth: int = 1) -> QoSProfile:
    """QoS for a subscription (images keep only the newest frame: depth 1).

    `auto` does what rosbag2 does: reliable only when every publisher offers reliable, transient
    local only when every publisher offers it; best effort (compatible with anyone) otherwise and
    while no publisher is known.
    """
    if mode == "sensor_data":
        reliable, transient = False, False
    elif mode == "reliable":
        reliable, transient = True, False
    elif mode == "auto":
        reliable = bool(publishers) and all(
            p.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
        transient = bool(publishers) and all(
            p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    else:
        raise ValueError(f"image_qos must be auto, sensor_data or reliable, got {mode!r}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)


def describe(qos: QoSProfile) -> str:
    """Short text such as 'reliable' or 'best_effort, transient_local'."""
    text = "reliable" if qos.reliability == ReliabilityPolicy.RELIABLE else "best_effort"
    if qos.durability == DurabilityPolicy.TRANSIENT_LOCAL:
        text += ", transient_local"
    return text
