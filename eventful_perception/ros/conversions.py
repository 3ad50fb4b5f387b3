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


# Larger frames are rejected before decoding: 8192 x 6144 is past any camera a robot carries,
# and a 16k x 16k frame would cost 0.8 GB as RGB before the model even starts.
MAX_PIXELS = 8192 * 6144
# The model resizes the short side to a fixed length, so a 1 x 30000 strip would become millions
# of tokens; 360-degree panoramas are 2:1 to 4:1.
MAX_ASPECT_RATIO = 8.0
COMPRESSED_FORMATS = {"jpeg": b"\xff\xd8", "jpg": b"\xff\xd8", "png": b"\x89PNG"}
# How complete files end: libjpeg fills a truncated JPEG with grey instead of failing.
_ENDINGS = {b"\xff\xd8": b"\xff\xd9", b"\x89PNG": b"IEND\xaeB`\x82"}
_PLANAR_YUV = ("nv12", "nv21")  # a full-size luma plane plus a half-height chroma plane


class ImageRejected(ValueError):
    """An input image the node cannot use; `reason` is a short category for the statistics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def image_to_rgb(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs Image or CompressedImage into an RGB uint8 array (H, W, 3).

    Raises ImageRejected (a ValueError) naming the reason when the message cannot be used.
    """
    try:
        if hasattr(msg, "format"):
            return _compressed_to_rgb(msg)
        return _raw_to_rgb(msg)
    except (ImageError, cv2.error) as error:
        kind = f"format {msg.format!r}" if hasattr(msg, "format") else f"encoding {msg.encoding!r}"
        raise ImageRejected("undecodable", f"cannot decode image with {kind}: {error}") from None


def _compressed_to_rgb(msg: Any) -> np.ndarray:
    data = bytes(msg.data)
    if not data:
        raise ImageRejected("empty data", f"compressed image (format {msg.format!r}) has no data")
    magic = _format_magic(msg.format)
    if not data.startswith(magic):
        raise ImageRejected("format mismatch", f"format {msg.format!r} but the data does not "
                            f"start like one ({data[:4]!r})")
    if not data.rstrip(b"\0").endswith(_ENDINGS[magic]):
        raise ImageRejected("truncated", f"compressed image (format {msg.format!r}) does not "
                            "end like a complete file")
    size = compressed_size(data)
    if size is not None:
        _check_size(*size)
    # Decoded here rather than by rosbags-image, which asserts instead of reporting corrupt data.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ImageRejected("undecodable", f"compressed image (format {msg.format!r}) is "
                            "corrupt or truncated")
    if image.ndim == 2:
        return cv2.cvtColor(_to_uint8(image), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(_to_uint8(image), cv2.COLOR_BGRA2RGB if image.shape[2] == 4
                        else cv2.COLOR_BGR2RGB)


def _format_magic(fmt: str) -> bytes:
    """The leading bytes the data of a CompressedImage `format` must have.

    image_transport writes e.g. 'jpeg', 'png' or 'rgb8; jpeg compressed bgr8'."""
    words = fmt.lower().replace(";", " ").split()
    for word in words:
        if word in COMPRESSED_FORMATS:
            return COMPRESSED_FORMATS[word]
    raise ImageRejected("unsupported format", f"format {fmt!r} is neither jpeg nor png")


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None when not found."""
    if data.startswith(b"\x89PNG") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7],
                                                                            "big")
        i += 2 + length
    return None


def _check_size(width: int, height: int) -> None:
    if width == 0 or height == 0:
        raise ImageRejected("zero size", f"image is {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageRejected("too large", f"image is {width}x{height}, more than "
                            f"{MAX_PIXELS / 1e6:.0f} megapixels")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageRejected("aspect ratio", f"image is {width}x{height}, more elongated than "
                            f"{MAX_ASPECT_RATIO:.0f}:1")


def _raw_to_rgb(msg: Any) -> np.ndarray:
    _check_size(msg.width, msg.height)
    try:
        depth, _, _, channels = to_cvtype(msg.encoding)
    except ImageError:
        raise ImageRejected("unknown encoding", f"encoding {msg.encoding!r} is not "
                            "supported") from None
    row_bytes = msg.width * channels * depth // 8
    rows = msg.height * 3 // 2 if msg.encoding in _PLANAR_YUV else msg.height
    if msg.step < row_bytes:
        raise ImageRejected("step too small", f"image {msg.width}x{msg.height} {msg.encoding} "
                            f"needs step >= {row_bytes}, got {msg.step}")
    if len(msg.data) != msg.step * rows:
        raise ImageRejected("data size", f"image {msg.width}x{msg.height} {msg.encoding} with "
                            f"step {msg.step} needs {msg.step * rows} bytes, got {len(msg.data)}")
    if msg.step != row_bytes:
        msg = _unpadded(msg, row_bytes)
    if channels == 1 and msg.encoding not in ("mono8", "mono16") and "bayer" not in msg.encoding:
        return cv2.cvtColor(_depth_to_uint8(image_to_cvimage(msg)), cv2.COLOR_GRAY2RGB)
    rgb = image_to_cvimage(msg, "rgb8")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageRejected("unknown encoding", f"encoding {msg.encoding!r} does not convert "
                            f"to rgb8 (got {rgb.dtype} {rgb.shape})")
    return np.ascontiguousarray(rgb)


def _depth_to_uint8(image: np.ndarray) -> np.ndarray:
    """Depth-like images (16UC1, 32FC1) shown with contrast; non-finite pixels become 0, and a
    frame without a single finite pixel is rejected."""
    if image.dtype.kind == "f" and not np.isfinite(image).any():
        raise ImageRejected("no finite pixels", f"every pixel of the {image.dtype} image is "
                            "NaN or infinite")
    return _to_uint8(image)


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
    """LabelInfo mapping each label's position in `labels` (uint16 `class_id`) to its name.

    Detections carry the name itself as `ObjectHypothesis.class_id` (a string in vision_msgs
    4.x): readable in `ros2 topic echo` and RViz, and stable across models whose label order
    differs; a consumer that wants the numeric id finds it by `class_name` here.
    """
    class_map = [VisionClass(class_id=index, class_name=name) for index, name in enumerate(labels)]
    return LabelInfo(header=header, class_map=class_map, threshold=float(threshold))
