"""The node's parameters: one table with descriptors, and validation of a whole candidate set.

Dynamic parameters are validated when set and applied at the next frame; read-only ones
(model, device, short_side, threads, cameras, transport, managed) need a restart. Integers are
accepted for double parameters (see `as_declared_type`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, make_dataclass
from typing import Any, Iterable, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from eventful_perception.granularity import LadderConfig
from eventful_perception.ros.budget import MODES, BudgetConfig
from eventful_perception.stages import GRANULARITIES, load_ladder_config
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
    Spec("threads", 0, "torch CPU threads for inference, set at start (on a small CPU, fewer "
         "threads than cores leave room for the camera driver); 0 = torch's default",
         read_only=True, bounds=(0, 256)),
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
    Spec("granularity", "fixed", "fixed: every frame at short_side through one Eventful stream; "
         "adaptive: the granularity ladder (stages and exit thresholds from "
         "exit_thresholds_file): below the file's ladder_below budget (0 shipped: never), "
         "coarsest stage first, dense, while the camera moves; otherwise, and while it is "
         "still, the finest stage at the effective budget. A change starts the camera's state over",
         choices=GRANULARITIES),
    Spec("exit_thresholds_file", "", "granularity adaptive: JSON of the ladder's stages and exit "
         "thresholds (`eventful-perception fit-exits`); '' = the package's "
         "config/exit_thresholds.json. A change starts the camera's state over"),
    Spec("policy", "top_r", "top_r: update the token_budget fraction of tokens that changed "
         "most; threshold: update every token whose change exceeds `threshold`",
         choices=POLICIES),
    Spec("threshold", 0.2, "token change (L2 norm of the error) above which a token is updated "
         "with policy=threshold", bounds=(0.0, 1000.0)),
    Spec("refresh_interval", 0, "frames between full (dense) updates that clear accumulated "
         "error; 0 = never", bounds=(0, 100000)),
    Spec("score_priority", 4.0, "detection-aware gating: each token's change counts 1 + this x "
         "the previous frame's detection score within one patch, so objects are recomputed first "
         "at the same budget; 0 = off. A change starts the camera's stream over",
         bounds=(0.0, 100.0)),
    Spec("max_frame_gap_s", 10.0, "a frame stamped more than this many seconds after the "
         "previous one starts the camera's stream over (every token recomputed); 0 = never. "
         "A stamp going backwards (a bag that loops) always does", bounds=(0.0, 3600.0)),
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
    Spec("managed", False, "true: a lifecycle node that waits for configure/activate (model "
         "loaded on configure, subscriptions only while active); false: starts active",
         read_only=True),
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
SPECS = {spec.name: spec for spec in TABLE}


def _field_type(spec: Spec) -> type:
    return tuple if isinstance(spec.default, list) else type(spec.default)


def _from_values(cls: type, values: Mapping[str, Any]) -> Any:
    """Build from parameter values; raise ValueError naming the first invalid one.

    Checks what descriptors cannot express: choices, camera names and relations between values.
    """
    missing = [spec.name for spec in TABLE if spec.name not in values]
    if missing:
        raise ValueError(f"missing parameters: {', '.join(missing)}")
    values = {spec.name: as_declared_type(spec.name, values[spec.name]) for spec in TABLE}
    for spec in TABLE:
        if spec.choices and values[spec.name] not in spec.choices:
            raise ValueError(f"{spec.name} must be one of {', '.join(spec.choices)}, "
                             f"got {values[spec.name]!r}")
    problem = _camera_problem(values["cameras"]) or _granularity_problem(values)
    if problem:
        raise ValueError(problem)
    ladder = _ladder(values)
    budget = BudgetConfig(**{f.name: values[f.name] for f in fields(BudgetConfig)})
    tracker = TrackerConfig(**{f.name: values[f"tracking_{f.name}"] for f in fields(TrackerConfig)})
    return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()},
               budget=budget, tracker=tracker, ladder=ladder)


# One field per TABLE entry (a list parameter becomes a tuple) plus `budget`, `tracker` and
# `ladder`: the controller's BudgetConfig, the tracker's TrackerConfig (`tracking_<field>`) and
# the granularity ladder's LadderConfig (read from exit_thresholds_file; None with granularity
# fixed), built once from their parameters: a new parameter needs only its TABLE entry.
Settings = make_dataclass(
    "Settings", [(spec.name, _field_type(spec)) for spec in TABLE] + [
        ("budget", BudgetConfig), ("tracker", TrackerConfig), ("ladder", LadderConfig | None)],
    frozen=True, namespace={
        "__doc__": "A validated snapshot of every parameter, taken at a frame boundary.",
        "from_values": classmethod(_from_values)})


def as_declared_type(name: str, value: Any) -> Any:
    """`value` as the type `name` was declared with: an integer given for a double parameter
    becomes a float (`ros2 param set ... token_budget 1` sends an integer); the rest is kept."""
    spec = SPECS.get(name)
    if (spec is not None and isinstance(spec.default, float) and isinstance(value, int)
            and not isinstance(value, bool)):
        return float(value)
    return value


def _granularity_problem(values: Mapping[str, Any]) -> str | None:
    if values["granularity"] == "adaptive" and values["policy"] != "top_r":
        return ("granularity adaptive sets each stage's update fraction from token_budget: it "
                f"needs policy top_r, got {values['policy']!r}")
    return None


def _ladder(values: Mapping[str, Any]) -> LadderConfig | None:
    """The granularity ladder's config (None with granularity fixed)."""
    if values["granularity"] != "adaptive":
        return None
    return load_ladder_config(values["exit_thresholds_file"], values["score_threshold"])


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
