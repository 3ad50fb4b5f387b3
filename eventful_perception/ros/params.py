"""The node's parameters: one table with descriptors, and validation of a whole candidate set.

Dynamic parameters are validated when set and applied at the next frame; read-only ones
(model, device, cameras, transport) need a restart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from eventful_perception.ros.budget import MODES, BudgetConfig
from eventful_perception.tracking import TrackerConfig

POLICIES = ("top_r", "threshold")
DEVICES = ("cpu", "cuda", "auto")
TRANSPORTS = ("raw", "compressed")
IMAGE_QOS = ("auto", "sensor_data", "reliable")
_CAMERA_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class Spec:
    """One parameter: default (which fixes its type), meaning, constraints."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        """ROS descriptor carrying the description, range and read-only flag."""
        constraints = f"one of: {', '.join(self.choices)}" if self.choices else ""
        descriptor = ParameterDescriptor(name=self.name, description=self.description,
                                         read_only=self.read_only,
                                         additional_constraints=constraints)
        if self.bounds is not None and isinstance(self.default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(self.bounds[0]), to_value=float(self.bounds[1]))]
        elif self.bounds is not None:
            descriptor.integer_range = [IntegerRange(
                from_value=int(self.bounds[0]), to_value=int(self.bounds[1]), step=1)]
        return descriptor


TABLE: tuple[Spec, ...] = (
    Spec("model", "default", "'default' (the embedded detector) or a Hugging Face checkpoint "
         "folder (config.json + weights)", read_only=True),
    Spec("device", "cpu", "torch device for the model; auto = cuda when available",
         read_only=True, choices=DEVICES),
    Spec("short_side", 0, "frames are resized so their short side has this many pixels before "
         "the model (fewer tokens: faster, less accurate); 0 = the model's default",
         read_only=True, bounds=(0, 4096)),
    Spec("cameras", [""], "camera names; each gets its own stateful stream and topics "
         "<camera>/image_raw -> <camera>/detections ... ('' = no prefix)", read_only=True),
    Spec("transport", "raw", "raw: subscribe to image_raw (sensor_msgs/Image); compressed: "
         "image_raw/compressed (sensor_msgs/CompressedImage)", read_only=True, choices=TRANSPORTS),
    Spec("image_qos", "auto", "auto: match the reliability/durability of the image publishers "
         "(re-matched when they change); sensor_data: best effort; reliable", choices=IMAGE_QOS),
    Spec("token_budget", 0.5, "requested fraction of tokens recomputed per frame",
         bounds=(0.02, 1.0)),
    Spec("budget_mode", "fixed", "fixed: use token_budget; adaptive: lower it on low battery, "
         "high CPU load and above target_latency_ms", choices=MODES),
    Spec("policy", "top_r", "top_r: update the token_budget fraction of tokens that changed "
         "most; threshold: update every token whose change exceeds `threshold`",
         choices=POLICIES),
    Spec("threshold", 0.2, "token change (L2 norm of the error) above which a token is updated "
         "with policy=threshold", bounds=(0.0, 1000.0)),
    Spec("refresh_interval", 0, "frames between full (dense) updates that clear accumulated "
         "error; 0 = never", bounds=(0, 100000)),
    Spec("score_threshold", 0.5, "detections below this score are not published",
         bounds=(0.0, 1.0)),
    Spec("target_latency_ms", 0.0, "adaptive mode steers the budget toward this per-frame "
         "latency; 0 = off", bounds=(0.0, 60000.0)),
    Spec("min_budget", 0.05, "adaptive mode never goes below this budget", bounds=(0.02, 1.0)),
    Spec("battery_low", 0.2, "battery fraction below which adaptive mode lowers the budget",
         bounds=(0.0, 1.0)),
    Spec("battery_critical", 0.05, "battery fraction at which adaptive mode reaches min_budget",
         bounds=(0.0, 1.0)),
    Spec("cpu_load_high", 0.8, "CPU load above which adaptive mode lowers the budget",
         bounds=(0.0, 1.0)),
    Spec("cpu_load_critical", 1.0, "CPU load at which adaptive mode reaches min_budget",
         bounds=(0.0, 1.0)),
    Spec("budget_smoothing", 0.5, "fraction of the gap to the adaptive target closed per frame "
         "(1 = no smoothing)", bounds=(0.01, 1.0)),
    Spec("publish_detection_image", True, "publish detection_image (only drawn while someone "
         "subscribes)"),
    Spec("tracking", True, "track objects per camera (ByteTrack): Detection2D.id carries a track "
         "ID that stays the same while the object is tracked ('' = not yet confirmed); off = ''"),
    Spec("tracking_activation_threshold", 0.25, "detections scoring at least this can continue "
         "tracks in the first association, and start new ones at 0.1 above it",
         bounds=(0.0, 1.0)),
    Spec("tracking_lost_frames", 30, "processed frames a lost track is kept to be found again "
         "with the same ID", bounds=(1, 10000)),
    Spec("tracking_matching_threshold", 0.8, "highest IoU distance (1 - IoU, weighted by the "
         "score) at which a detection continues a track", bounds=(0.0, 1.0)),
    Spec("tracking_min_frames", 1, "frames an object must be tracked before it gets an ID",
         bounds=(1, 100)),
    Spec("tracking_max_gap_s", 5.0, "a header stamp jump forward by more than this (or any jump "
         "backward) restarts the camera's tracks", bounds=(0.001, 86400.0)),
)


@dataclass(frozen=True)
class Settings:
    """A validated snapshot of every parameter, taken at a frame boundary."""

    model: str
    device: str
    short_side: int
    cameras: tuple[str, ...]
    transport: str
    image_qos: str
    token_budget: float
    budget_mode: str
    policy: str
    threshold: float
    refresh_interval: int
    score_threshold: float
    target_latency_ms: float
    min_budget: float
    battery_low: float
    battery_critical: float
    cpu_load_high: float
    cpu_load_critical: float
    budget_smoothing: float
    publish_detection_image: bool
    tracking: bool
    tracking_activation_threshold: float
    tracking_lost_frames: int
    tracking_matching_threshold: float
    tracking_min_frames: int
    tracking_max_gap_s: float

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Settings:
        """Build from parameter values; raise ValueError naming the first invalid one."""
        problem = find_problem(values)
        if problem:
            raise ValueError(problem)
        kwargs = {f.name: values[f.name] for f in fields(cls)}
        kwargs["cameras"] = tuple(values["cameras"])
        return cls(**kwargs)

    def budget_config(self) -> BudgetConfig:
        """The budget controller's view of these settings."""
        return BudgetConfig(mode=self.budget_mode, min_budget=self.min_budget,
                            battery_low=self.battery_low, battery_critical=self.battery_critical,
                            cpu_high=self.cpu_load_high, cpu_critical=self.cpu_load_critical,
                            target_latency_ms=self.target_latency_ms,
                            smoothing=self.budget_smoothing)

    def tracker_config(self) -> TrackerConfig:
        """The tracker's view of these settings (its fields are the `tracking_*` parameters)."""
        return _tracker_config(self.__dict__)


def find_problem(values: Mapping[str, Any]) -> str | None:
    """Why this complete set of parameter values is invalid, or None.

    Checks what descriptors cannot express: choices, camera names and relations between values.
    """
    missing = [spec.name for spec in TABLE if spec.name not in values]
    if missing:
        return f"missing parameters: {', '.join(missing)}"
    for spec in TABLE:
        if spec.choices and values[spec.name] not in spec.choices:
            return (f"{spec.name} must be one of {', '.join(spec.choices)}, "
                    f"got {values[spec.name]!r}")
    problem = _camera_problem(values["cameras"])
    if problem:
        return problem
    try:
        BudgetConfig(mode=values["budget_mode"], min_budget=values["min_budget"],
                     battery_low=values["battery_low"],
                     battery_critical=values["battery_critical"],
                     cpu_high=values["cpu_load_high"], cpu_critical=values["cpu_load_critical"],
                     target_latency_ms=values["target_latency_ms"],
                     smoothing=values["budget_smoothing"])
        _tracker_config(values)
    except ValueError as error:
        return str(error)
    return None


def _tracker_config(values: Mapping[str, Any]) -> TrackerConfig:
    return TrackerConfig(**{f.name: values[f"tracking_{f.name}"] for f in fields(TrackerConfig)})


def _camera_problem(cameras: Iterable[str]) -> str | None:
    cameras = list(cameras)
    if not cameras:
        return "cameras must name at least one camera ('' for topics without a prefix)"
    for name in cameras:
        if not _CAMERA_NAME.match(name):
            return (f"camera name {name!r} must start with a letter and contain only letters, "
                    "digits and '_' (or be '' for no prefix)")
    if len(set(cameras)) != len(cameras):
        return f"camera names must be unique, got {cameras}"
    return None
