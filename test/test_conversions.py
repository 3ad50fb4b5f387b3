"""Message <-> numpy conversions (no ROS graph needed, real messages)."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from eventful_perception.ros.conversions import (detections_to_msg, image_to_rgb, label_info_msg,
                                                 msg_to_detections, rgb_to_compressed,
                                                 rgb_to_image)

VIDEO = Path(__file__).resolve().parents[1] / ".cache" / "data" / "vtest.avi"


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A real RGB frame (from the test clip when present), cropped to an odd size."""
    capture = cv2.VideoCapture(str(VIDEO))
    ok, bgr = capture.read()
    capture.release()
    if not ok:
        bgr = np.random.default_rng(0).integers(0, 255, (576, 768, 3), np.uint8)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[:101, :131].copy()


def raw(array: np.ndarray, encoding: str, pad: int = 0) -> Image:
    height, width = array.shape[:2]
    rows = array.reshape(height, -1).view(np.uint8)  # (H, W*C*bytes)
    padded = np.zeros((height, rows.shape[1] + pad), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return Image(height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=padded.shape[1], data=padded.tobytes())


def test_rgb8_bgr8_rgba8_and_padded_rows(frame):
    assert np.array_equal(image_to_rgb(raw(frame, "rgb8")), frame)
    assert np.array_equal(image_to_rgb(raw(frame[..., ::-1].copy(), "bgr8")), frame)
    rgba = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
    assert np.array_equal(image_to_rgb(raw(rgba, "rgba8")), frame)
    assert np.array_equal(image_to_rgb(raw(frame, "rgb8", pad=7)), frame)


def test_mono8_mono16_and_depth_images(frame):
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(image_to_rgb(raw(gray, "mono8")), np.dstack([gray] * 3))
    wide = gray.astype(np.uint16) * 257
    np.testing.assert_allclose(image_to_rgb(raw(wide, "mono16"))[..., 0], gray, atol=1)
    depth = image_to_rgb(raw(wide, "16UC1", pad=2))
    assert depth.shape == frame.shape and depth.dtype == np.uint8
    np.testing.assert_allclose(depth[..., 1], gray, atol=1)
    floats = image_to_rgb(raw(gray.astype(np.float32) / 10.0, "32FC1"))
    assert floats.shape == frame.shape and floats.max() == 255


def test_yuv422_decodes_to_nearly_the_same_colours(frame):
    even = frame[:, :130]
    yuyv = cv2.cvtColor(cv2.cvtColor(even, cv2.COLOR_RGB2YUV_YUYV), cv2.COLOR_YUV2RGB_YUYV)
    uyvy = cv2.cvtColor(even, cv2.COLOR_RGB2YUV_UYVY)
    decoded = image_to_rgb(raw(uyvy, "yuv422"))
    assert decoded.shape == even.shape
    assert np.abs(decoded.astype(int) - yuyv.astype(int)).mean() < 3.0


def test_compressed_jpeg_and_png(frame):
    header = Header(frame_id="cam")
    jpeg = rgb_to_compressed(frame, header)
    assert jpeg.format == "jpeg" and jpeg.header.frame_id == "cam"
    assert np.abs(image_to_rgb(jpeg).astype(int) - frame.astype(int)).mean() < 4.0
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    jpeg.format, jpeg.data = "png", png.tobytes()
    assert np.array_equal(image_to_rgb(jpeg), frame)


def test_bad_messages_raise_value_error_naming_the_problem(frame):
    with pytest.raises(ValueError, match="encoding 'weird8'"):
        image_to_rgb(raw(frame, "weird8"))
    short = raw(frame, "rgb8")
    short.data = short.data[:-10]
    with pytest.raises(ValueError, match="data size: .* needs 39693 bytes, got 39683"):
        image_to_rgb(short)
    compressed = rgb_to_compressed(frame, Header())
    compressed.data = b"not a jpeg"
    with pytest.raises(ValueError, match="format 'jpeg'"):
        image_to_rgb(compressed)
    with pytest.raises(ValueError, match="expected an RGB uint8 array"):
        rgb_to_image(frame[..., 0], Header())


def test_rgb_to_image_round_trip(frame):
    msg = rgb_to_image(frame, Header(frame_id="cam"))
    assert (msg.width, msg.height, msg.step, msg.encoding) == (131, 101, 393, "rgb8")
    assert np.array_equal(image_to_rgb(msg), frame)


def test_detections_message_uses_centre_size_in_pixels_and_label_strings():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    boxes = np.array([[10.0, 20.0, 110.0, 70.0], [0.5, 1.5, 2.5, 9.5]], np.float32)
    msg = detections_to_msg(header, boxes, np.array([0.9, 0.25], np.float32), ["person", "car"])
    first = msg.detections[0]
    assert msg.header.stamp.sec == 12 and first.header.stamp.nanosec == 345
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (60.0, 45.0)
    assert (first.bbox.size_x, first.bbox.size_y, first.bbox.center.theta) == (100.0, 50.0, 0.0)
    assert first.results[0].hypothesis.class_id == "person"
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    back_boxes, back_scores, back_labels = msg_to_detections(msg)
    np.testing.assert_allclose(back_boxes, boxes)
    np.testing.assert_allclose(back_scores, [0.9, 0.25], rtol=1e-6)
    assert back_labels == ["person", "car"]
    assert [d.id for d in msg.detections] == ["", ""]  # no tracker: no IDs
    tracked = detections_to_msg(header, boxes, [0.9, 0.25], ["person", "car"], ["7", ""])
    assert [d.id for d in tracked.detections] == ["7", ""]
    assert detections_to_msg(header, np.zeros((0, 4)), [], []).detections == []
    with pytest.raises(ValueError, match="2 boxes, 1 scores, 2 labels and 2 ids"):
        detections_to_msg(header, boxes, [0.5], ["a", "b"])
    with pytest.raises(ValueError, match="2 boxes, 2 scores, 2 labels and 1 ids"):
        detections_to_msg(header, boxes, [0.5, 0.6], ["a", "b"], ["1"])


def test_label_info_lists_classes_in_order():
    msg = label_info_msg(Header(), ["person", "car"], 0.4)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "person"), (1, "car")]
    assert msg.threshold == pytest.approx(0.4)


def test_conversions_import_neither_torch_nor_rclpy():
    code = ("import sys, eventful_perception.ros.conversions; "
            "print(sorted(m for m in ('rclpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
