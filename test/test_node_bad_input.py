"""Bad input through the real node: every malformed Image / CompressedImage is rejected with one
(throttled) log line, counted per reason in /diagnostics (WARN), and the next good frame is
processed exactly as in a clean run. All cases of a transport go through one node process."""
from __future__ import annotations

import math
import re
import time
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from eventful_perception.ros.conversions import ImageRejected, image_to_rgb, rgb_to_compressed
from eventful_perception.ros.faults import LOG_PERIOD_S
from fault_helpers import NodeUnderFault, assert_same_detections, library_run
from node_harness import image_msg, stamp_of, video_frames

SIZE = (64, 48)  # good frames: small, so each case costs little


def header(index: int) -> Header:
    stamp = Header()
    stamp.stamp.sec, stamp.stamp.nanosec = 1000 + index, 0
    return stamp


def raw(encoding: str, width: int, height: int, step: int, data: bytes) -> Image:
    return Image(encoding=encoding, width=width, height=height, step=step, data=data)


def float_image(values: np.ndarray) -> Image:
    height, width = values.shape
    return raw("32FC1", width, height, width * 4, values.astype(np.float32).tobytes())


RGB = np.zeros((48, 64, 3), np.uint8).tobytes()
RAW_CASES = [  # (name, message, reason)
    ("unknown encoding", raw("not_an_encoding", 64, 48, 192, RGB), "unknown encoding"),
    ("step < width x channels", raw("rgb8", 64, 48, 100, bytes(100 * 48)), "step too small"),
    ("data shorter than step x height", raw("rgb8", 64, 48, 192, RGB[:-1]), "data size"),
    ("data longer than step x height", raw("rgb8", 64, 48, 192, RGB + b"\0"), "data size"),
    ("empty data", raw("rgb8", 64, 48, 192, b""), "data size"),
    ("zero width", raw("rgb8", 0, 48, 0, b""), "zero size"),
    ("zero height", raw("mono8", 64, 0, 64, b""), "zero size"),
    ("16k x 16k", raw("mono8", 16384, 16384, 16384, b""), "too large"),
    ("1 x 300 strip", raw("mono8", 300, 1, 300, bytes(300)), "aspect ratio"),
    ("all NaN 32FC1", float_image(np.full((48, 64), np.nan)), "no finite pixels"),
    ("all inf 32FC1", float_image(np.full((48, 64), np.inf)), "no finite pixels"),
    ("bayer16 with an 8-bit step", raw("bayer_rggb16", 64, 48, 64, bytes(64 * 48)),
     "step too small"),
    ("yuv422 with an odd width", raw("yuv422", 63, 48, 126, bytes(126 * 48)), "undecodable"),
]


def _jpeg(rgb: np.ndarray) -> bytes:
    return bytes(rgb_to_compressed(rgb, Header()).data)


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def compressed_cases(frame: np.ndarray) -> list[tuple[str, CompressedImage, str]]:
    jpeg, png = _jpeg(frame), _png(frame)
    corrupt_png = png[:40] + bytes(len(png) - 52) + png[-12:]  # zeroed IDAT: CRC error
    cases = [
        ("corrupt JPEG", "jpeg", jpeg[:4] + bytes(range(256)) * 4 + b"\xff\xd9", "undecodable"),
        ("truncated JPEG", "jpeg", jpeg[:len(jpeg) // 2], "truncated"),
        ("JPEG without its last 2 bytes", "jpeg", jpeg[:-2], "truncated"),
        ("truncated PNG", "png", png[:len(png) // 2], "truncated"),
        ("corrupt PNG", "png", corrupt_png, "undecodable"),
        ("empty data", "jpeg", b"", "empty data"),
        ("wrong format string", "h264", jpeg, "unsupported format"),
        ("format png, data jpeg", "png", jpeg, "format mismatch"),
        ("16k x 16k PNG", "png", _png(np.zeros((16384, 16384), np.uint8)), "too large"),
    ]
    return [(name, CompressedImage(format=fmt, data=data), reason)
            for name, fmt, data, reason in cases]


# Accepted with a documented fallback: the node processes them (they are not faults).
def accepted_raw_cases(frame: np.ndarray) -> list[tuple[str, Image]]:
    partial = np.where(np.arange(48 * 64).reshape(48, 64) % 7 == 0, np.nan,
                       frame[..., 0].astype(np.float32))
    bayer = frame[..., 1].copy()  # any 8-bit plane is a valid bayer mosaic
    return [("32FC1 with some NaN (shown as 0)", float_image(partial)),
            ("bayer_rggb8", raw("bayer_rggb8", 64, 48, 64, bayer.tobytes()))]


def run_corpus(node: NodeUnderFault, cases: list, accepted: list,
               good: list[np.ndarray], encode) -> tuple[list, list, dict[str, int]]:
    """Send each bad case, then a good frame; return (replies to processed frames, the frames
    they were, rejections per reason). The node's state must see only the processed frames."""
    replies, processed, counts, index = [], [], {}, 0
    for (name, msg, reason), frame in zip(cases, good):
        msg.header = header(index)
        counts[reason] = counts.get(reason, 0) + 1
        node.publisher.publish(msg)
        status = node.wait_for_value(f"inputs rejected: {reason}", str(counts[reason]))
        assert status.level == DiagnosticStatus.WARN, (name, status.message)
        assert f"inputs rejected: {reason}: " in status.message, (name, status.message)
        good_msg = encode(frame, index + 1)
        replies.append(node.send(good_msg))
        processed.append(image_to_rgb(good_msg))
        index += 2
    for name, msg in accepted:
        msg.header = header(index)
        replies.append(node.send(msg))
        processed.append(image_to_rgb(msg))
        index += 1
    return replies, processed, counts


def assert_logged_once_per_period(log: str, counts: dict[str, int], seconds: float) -> None:
    for reason, count in counts.items():
        lines = re.findall(rf"input rejected: {re.escape(reason)}: ", log)
        assert 1 <= len(lines) <= min(count, 1 + math.ceil(seconds / LOG_PERIOD_S)), (reason, log)


def raw_good(frame: np.ndarray, index: int) -> Image:
    return image_msg(frame, index)


def compressed_good(frame: np.ndarray, index: int) -> CompressedImage:
    return rgb_to_compressed(frame, header(index))


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_bad_input_is_rejected_counted_and_the_next_frame_is_processed(transport):
    frames = video_frames(16, size=SIZE)
    if transport == "raw":
        cases, accepted, encode = RAW_CASES, accepted_raw_cases(frames[-1]), raw_good
        node = NodeUnderFault({})
    else:
        cases, accepted, encode = compressed_cases(frames[0]), [], compressed_good
        node = NodeUnderFault({"transport": "compressed"}, CompressedImage,
                              "image_raw/compressed")
    assert len(frames) >= len(cases)
    start = time.monotonic()
    try:
        replies, processed, counts = run_corpus(node, cases, accepted, frames, encode)
        node.wait_for_value("frames processed", str(len(replies)))
        final = node.values()
    finally:
        elapsed, log = time.monotonic() - start, node.close()
    assert int(final["inputs rejected"]) == len(cases)
    assert final["model errors"] == "0"
    assert final["frames dropped (newest kept)"] == "0"  # every case was seen, none skipped
    for reason, count in counts.items():
        assert final[f"inputs rejected: {reason}"] == str(count)
    assert_logged_once_per_period(log, counts, elapsed)
    # Rejected frames never touch the stream: the node's answers equal a clean run's.
    for reply, want in zip(replies, library_run(processed)):
        assert_same_detections(reply, want)


@pytest.fixture(scope="module")
def raw_node():
    node = NodeUnderFault({})
    yield node
    node.close()


ENCODINGS = ["rgb8", "bgr8", "rgba8", "mono8", "mono16", "16UC1", "32FC1", "bayer_rggb8",
             "yuv422", "", "garbage"]


@st.composite
def images(draw: Any) -> Image:
    """Random Image messages: half with consistent step and size, half with anything."""
    encoding = draw(st.sampled_from(ENCODINGS))
    width, height = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    if draw(st.booleans()):
        pixel = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "mono16": 2, "16UC1": 2, "32FC1": 4,
                 "yuv422": 2}.get(encoding, 1)
        step = width * pixel + draw(st.integers(0, 3))
        data = draw(st.binary(min_size=step * height, max_size=step * height))
    else:
        step = draw(st.integers(0, 200))
        data = draw(st.binary(max_size=400))
    return raw(encoding, width, height, step, data)


@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(msg=images())
def test_random_images_are_processed_or_rejected_and_the_node_stays_alive(raw_node, msg):
    """Each message is either processed or rejected for the reason the decoder gives, and the
    next good frame is processed."""
    node = raw_node
    index = 10 * len(node.detections) + 5000
    msg.header = header(index)
    try:
        image_to_rgb(msg)
        reason = None
    except ImageRejected as error:
        reason = error.reason
    if reason is None:
        node.send(msg)
    else:
        before = int(node.values().get(f"inputs rejected: {reason}", "0"))
        node.publisher.publish(msg)
        node.wait_for_value(f"inputs rejected: {reason}", str(before + 1))
    good = image_msg(video_frames(1, size=SIZE)[0], index + 1)
    assert stamp_of(node.send(good)) == stamp_of(good)
    assert node.values()["model errors"] == "0"
