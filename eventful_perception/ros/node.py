"""The `eventful_detector` node: cameras in, detections + compute usage + diagnostics out.

It is a lifecycle (managed) node. With `managed: false` (the default) it configures and
activates itself at start-up; with `managed: true` it waits in `unconfigured` for a lifecycle
manager (or `ros2 lifecycle set`): configure loads the model and creates the publishers,
activate subscribes and starts the inference thread, deactivate unsubscribes, cleanup releases
the model.
"""
from __future__ import annotations

import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Float32

from eventful_perception.granularity import Ladder
from eventful_perception.ros import model as models
from eventful_perception.ros.camera import CameraPipeline
from eventful_perception.ros.camera_input import CameraInput
from eventful_perception.ros.diagnostics import CameraStats, Context
from eventful_perception.ros.params import SPECS, TABLE, Settings, as_declared_type
from eventful_perception.ros.shutdown import ignore_interrupts, init, shutdown, spin
from eventful_perception.ros.system_load import Battery, CpuLoad
from eventful_perception.ros.worker import Camera, InferenceWorker

DIAGNOSTICS_PERIOD_S = 1.0
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class StartupError(Exception):
    """The node cannot start; the message says why in one line."""


class EventfulDetectorNode(LifecycleNode):
    """Runs one shared Eventful detector over one stateful stream per camera."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("eventful_detector", **kwargs)
        self._coerce_overrides()
        for spec in TABLE:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._settings = Settings.from_values(self._values())
        self.add_pre_set_parameters_callback(self._coerce)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._model: models.DetectorModel | None = None
        self._cameras: list[Camera] = []
        self._worker: InferenceWorker | None = None
        self._robot_inputs: list[Any] = []  # battery and CPU load, only while active
        self._timer: Any = None  # diagnostics, only while active
        self._battery, self._cpu = Battery(), CpuLoad()
        self._failure, self.worker_error = "", ""
        if self._settings.managed:
            self.get_logger().info("managed: waiting for configure (ros2 lifecycle set)")
            return
        if self.trigger_configure() != SUCCESS or self.trigger_activate() != SUCCESS:
            raise StartupError(self._failure or "configure or activate failed (see the log above)")

    # Lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create each camera's stream and publishers."""
        settings = self._settings
        self.get_logger().info(f"loading model {settings.model!r} on {settings.device}")
        try:
            self._model = models.load(settings.model, settings.device, settings.short_side,
                                      settings.threads)
        except models.ModelLoadError as error:
            self._failure = str(error)
            if settings.managed:
                self.get_logger().error(f"configure failed: {error}")
            return FAILURE
        for name in settings.cameras:
            stats = CameraStats(name)
            pipeline = CameraPipeline(self, name, settings, self._model, stats)
            pipeline.publish_label_info(list(self._model.labels), settings.score_threshold)
            self._cameras.append(Camera(name, stats, pipeline))
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the cameras, battery and CPU load; start the inference thread."""
        settings = self._settings
        self._worker = InferenceWorker(self._cameras, self._step, self._on_worker_failure)
        for camera in self._cameras:
            camera.input = CameraInput(self, camera.name, settings.transport,
                                       settings.image_qos, camera.stats, self._worker.wake)
        self._robot_inputs = [
            self.create_subscription(BatteryState, "battery_state", self._on_battery, 10),
            self.create_subscription(Float32, "cpu_load", self._on_cpu_load, 10)]
        self._timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_timer)
        self._last_diagnostics = time.monotonic()
        self.get_logger().info(
            f"ready: {len(self._cameras)} camera(s) "
            f"[{', '.join(camera.input.topic for camera in self._cameras)}]")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the inference thread (after the frame in flight)."""
        self._deactivate()
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model, the streams and the publishers."""
        self._cleanup()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Shutdown from any state: deactivate and clean up what exists."""
        self._deactivate()
        self._cleanup()
        return SUCCESS

    def destroy_node(self) -> None:
        """Stop the inference thread before the node's publishers go away."""
        self._deactivate()
        super().destroy_node()

    def _deactivate(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        for camera in self._cameras:
            if camera.input is not None:
                camera.input.close()
                camera.input = None
        for subscription in self._robot_inputs:
            self.destroy_subscription(subscription)
        if self._timer is not None:
            self.destroy_timer(self._timer)
        self._robot_inputs, self._timer = [], None

    def _cleanup(self) -> None:
        if self._model is None:
            return
        for camera in self._cameras:
            camera.pipeline.close()
        self.destroy_publisher(self._diagnostics)
        self._cameras, self._model = [], None
        models.release_memory()
        self.get_logger().info("model released")

    # Parameters -----------------------------------------------------------------------------
    def _values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in TABLE}

    def _coerce_overrides(self) -> None:
        # `-p token_budget:=1` and `token_budget: 1` in a params file arrive as integers, which
        # declare_parameter would refuse for a double; the set service goes through `_coerce`.
        self._parameter_overrides = {
            name: self._coerce([parameter])[0] if name in SPECS else parameter
            for name, parameter in self._parameter_overrides.items()}

    @staticmethod
    def _coerce(parameters: list[Parameter]) -> list[Parameter]:
        return [Parameter(p.name, value=as_declared_type(p.name, p.value)) for p in parameters]

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        values = self._values()
        values.update({parameter.name: parameter.value for parameter in parameters})
        try:
            settings = Settings.from_values(values)
            self._check_ladder(settings)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self._settings = settings  # picked up by the inference thread at its next frame
        return SetParametersResult(successful=True)

    def _check_ladder(self, settings: Settings) -> None:
        """A new ladder config must fit the loaded model (its feature reuse: width and depth),
        or the next frame would fail to build the camera's ladder; ValueError otherwise."""
        if settings.ladder is None or self._model is None or settings.ladder == self._settings.ladder:
            return
        try:
            Ladder(self._model, settings.ladder)
        except ValueError as error:
            raise ValueError(f"exit_thresholds_file: {error}") from None

    # Inputs, frames and diagnostics ---------------------------------------------------------
    def _on_battery(self, msg: BatteryState) -> None:
        self._battery = Battery.from_report(msg.percentage, msg.power_supply_status)

    def _on_cpu_load(self, msg: Float32) -> None:
        self._cpu.report(msg.data, time.monotonic())

    def _step(self, camera: Camera, msg: Any) -> None:
        load, _ = self._cpu.current(time.monotonic())
        camera.pipeline.process(msg, self._settings, self._battery, load)

    def _on_worker_failure(self, text: str) -> None:
        if not self.context.ok():
            return  # rclpy's signal handler shut the context down while a frame was in flight
        self.worker_error = text
        self.get_logger().fatal(f"inference thread failed:\n{text}")
        shutdown(self.context)

    def _on_timer(self) -> None:
        now = time.monotonic()
        period, self._last_diagnostics = now - self._last_diagnostics, now
        self._cpu.measure()
        settings = self._settings
        load, source = self._cpu.current(now)
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for camera in self._cameras:
            camera.input.match_qos(settings.image_qos)
            context = Context(
                hardware_id=self.get_fully_qualified_name(), topic=camera.input.topic,
                publishers=camera.input.publishers(),
                matched=camera.input.matched_publishers(), qos=camera.input.qos_text(),
                target_latency_ms=settings.target_latency_ms, battery=self._battery.describe(),
                cpu_load="unknown" if load is None else f"{load:.2f} ({source})",
                silence=camera.input.check_silence(now))
            array.status.append(camera.stats.status(context, max(period, 1e-3)))
        self._diagnostics.publish(array)


def main(args: list[str] | None = None) -> None:
    """Entry point of the `eventful_detector` executable."""
    init(args)
    node = None
    try:
        node = EventfulDetectorNode()
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # The inference thread shuts the context down when it fails, possibly while spin builds
        # its wait set (ros2/rclpy#1166): that is a shutdown; anything else is a real error.
        if rclpy.ok():
            raise
    except (ParameterException, ValueError, StartupError) as error:
        # Bad parameters or a model that cannot be loaded: say why in one line, no traceback.
        rclpy.logging.get_logger("eventful_detector").fatal(f"cannot start: {error}")
        raise SystemExit(1) from None
    finally:
        ignore_interrupts()
        if node is not None:
            node.destroy_node()
        shutdown()
    if node is not None and node.worker_error:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
