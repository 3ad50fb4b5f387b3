"""Message <-> numpy conversion for the node and the bag tools; imports neither torch nor rclpy.

Image decoding goes through `rosbags-image`, which reads rclpy messages and `rosbags` messages alike
(both have the same field names), so bags and live topics share one code path.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
from rosbags.image import ImageError, image_to_cvimage
from rosbags.image.image import to_cvtype
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo,
                             ObjectHypothesisWithPose, VisionClass)


def image_to_rgb(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs Image or CompressedImage into an RGB uint8 array (H, W, 3).

    Raises ValueError naming the encoding when the message cannot be decoded.
    """
    try:
        if hasattr(msg, "format"):
            return _compressed_to_rgb(msg)
        return _raw_to_rgb(msg)
    except (ImageError, cv2.error) as error:
        kind = f"format {msg.format!r}" if hasattr(msg, "format") else f"encoding {msg.encoding!r}"
        raise ValueError(f"cannot decode image with {kind}: {error}") from error


def _compressed_to_rgb(msg: Any) -> np.ndarray:
    # Decoded here rather than by rosbags-image, which asserts instead of reporting corrupt data.
    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ValueError(f"compressed image (format {msg.format!r}) could not be decoded")
    if image.ndim == 2:
        return cv2.cvtColor(_to_uint8(image), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(_to_uint8(image), cv2.COLOR_BGRA2RGB if image.shape[2] == 4
                        else cv2.COLOR_BGR2RGB)


def _raw_to_rgb(msg: Any) -> np.ndarray:
    depth, _, _, channels = to_cvtype(msg.encoding)
    row_bytes = msg.width * channels * depth // 8
    expected = msg.step * (msg.height - 1) + row_bytes if msg.height else 0
    if msg.step < row_bytes or len(msg.data) < expected:
        raise ValueError(f"image {msg.width}x{msg.height} {msg.encoding} needs step >= {row_bytes} "
                         f"and {expected} bytes, got step {msg.step} and {len(msg.data)} bytes")
    if msg.step != row_bytes:
        msg = _unpadded(msg, row_bytes)
    if channels == 1 and msg.encoding not in ("mono8", "mono16") and "bayer" not in msg.encoding:
        gray = _to_uint8(image_to_cvimage(msg))  # depth-like images (16UC1, 32FC1): show contrast
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    rgb = image_to_cvimage(msg, "rgb8")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encoding {msg.encoding!r} does not convert to rgb8 "
                         f"(got {rgb.dtype} {rgb.shape})")
    return np.ascontiguousarray(rgb)


def _unpadded(msg: Any, row_bytes: int) -> Any:
    """Copy of an Image whose rows are padded (step > row size) with the padding removed."""
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * msg.height).reshape(msg.height,
                                                                                  msg.step)
    return Image(header=msg.header, height=msg.height, width=msg.width, encoding=msg.encoding,
                 is_bigendian=msg.is_bigendian, step=row_bytes,
                 data=rows[:, :row_bytes].tobytes())  # (H, W*C*bytes)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    finite = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return ((finite - low) * scale).astype(np.uint8)


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """Wrap an RGB uint8 array (H, W, 3) in an rgb8 sensor_msgs/Image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    return Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                 step=width * 3, data=np.ascontiguousarray(rgb).tobytes())


def rgb_to_compressed(rgb: np.ndarray, header: Header, quality: int = 90) -> CompressedImage:
    """Encode an RGB uint8 array as a JPEG sensor_msgs/CompressedImage."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    return CompressedImage(header=header, format="jpeg", data=data.tobytes())


def detections_to_msg(header: Header, boxes: np.ndarray, scores: np.ndarray,
                      labels: Sequence[str], ids: Sequence[str] | None = None) -> Detection2DArray:
    """Boxes (K, 4) x1, y1, x2, y2 in image pixels, scores (K,), labels (K,) and track IDs (K,)
    ('' = untracked; None = all untracked) -> Detection2DArray."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ids = [""] * len(boxes) if ids is None else ids
    if not len(boxes) == len(scores) == len(labels) == len(ids):
        raise ValueError(f"got {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels "
                         f"and {len(ids)} ids")
    out = Detection2DArray(header=header)
    for (x1, y1, x2, y2), score, label, track_id in zip(boxes, scores, labels, ids):
        bbox = BoundingBox2D(size_x=float(x2 - x1), size_y=float(y2 - y1))
        bbox.center.position.x = float(x1 + x2) / 2.0
        bbox.center.position.y = float(y1 + y2) / 2.0
        bbox.center.theta = 0.0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(label)
        hypothesis.hypothesis.score = float(score)
        out.detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox,
                                          id=str(track_id)))
    return out


def msg_to_detections(msg: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Inverse of `detections_to_msg`: (boxes (K, 4) x1y1x2y2, scores (K,), labels)."""
    boxes, scores, labels = [], [], []
    for det in msg.detections:
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        half_w, half_h = det.bbox.size_x / 2.0, det.bbox.size_y / 2.0
        boxes.append([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
        scores.append(det.results[0].hypothesis.score if det.results else 0.0)
        labels.append(det.results[0].hypothesis.class_id if det.results else "")
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), labels)


def label_info_msg(header: Header, labels: Sequence[str], threshold: float) -> LabelInfo:
    """LabelInfo whose class ids are the label strings' positions in `labels`."""
    class_map = [VisionClass(class_id=index, class_name=name) for index, name in enumerate(labels)]
    return LabelInfo(header=header, class_map=class_map, threshold=float(threshold))
