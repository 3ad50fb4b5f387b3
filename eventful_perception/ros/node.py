"""The `eventful_detector` node: cameras in, detections + compute usage + diagnostics out."""
from __future__ import annotations

import threading
import time
import traceback
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Float32
import torch

import eventful_perception
from eventful_perception.ros.camera import Camera
from eventful_perception.ros.diagnostics import Context
from eventful_perception.ros.params import TABLE, Settings
from eventful_perception.ros.system_load import Battery, CpuLoad

DIAGNOSTICS_PERIOD_S = 1.0


class EventfulDetectorNode(Node):
    """Runs one shared Eventful detector over one stateful stream per camera."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("eventful_detector", **kwargs)
        for spec in TABLE:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._settings = Settings.from_values(self._values())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        settings = self._settings
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.get_logger().info(f"loading model {settings.model!r} on {settings.device}, "
                               f"{torch.get_num_threads()} CPU threads")
        self._model = eventful_perception.load_model(settings.model, settings.device,
                                                     short_side=settings.short_side or None)
        self._wake_event, self._stop = threading.Event(), threading.Event()
        self._cameras = [Camera(self, name, settings, self._model, self._wake_event.set)
                         for name in settings.cameras]
        for camera in self._cameras:
            camera.publish_label_info(list(self._model.labels), settings.score_threshold)
        self._battery, self._cpu = Battery(), CpuLoad()
        self.create_subscription(BatteryState, "battery_state", self._on_battery, 10)
        self.create_subscription(Float32, "cpu_load", self._on_cpu_load, 10)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._last_diagnostics = time.monotonic()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_timer)
        self.worker_error = ""
        self._worker = threading.Thread(target=self._run_worker, name="inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {len(self._cameras)} camera(s) "
            f"[{', '.join(camera.topic for camera in self._cameras)}]")

    def destroy_node(self) -> None:
        """Stop the inference thread before the node's publishers go away."""
        self._stop.set()
        self._wake_event.set()
        self._worker.join()
        super().destroy_node()

    def _values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in TABLE}

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        values = self._values()
        values.update({parameter.name: parameter.value for parameter in parameters})
        try:
            settings = Settings.from_values(values)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self._settings = settings  # picked up by the inference thread at its next frame
        return SetParametersResult(successful=True)

    def _on_battery(self, msg: BatteryState) -> None:
        self._battery = Battery.from_report(msg.percentage, msg.power_supply_status)

    def _on_cpu_load(self, msg: Float32) -> None:
        self._cpu.report(msg.data, time.monotonic())

    def _on_timer(self) -> None:
        now = time.monotonic()
        period, self._last_diagnostics = now - self._last_diagnostics, now
        self._cpu.measure()
        settings = self._settings
        load, source = self._cpu.current(now)
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for camera in self._cameras:
            camera.match_qos(settings.image_qos)
            silence = camera.check_silence(now)
            context = Context(
                hardware_id=self.get_fully_qualified_name(), topic=camera.topic,
                publishers=camera.publishers(), qos=camera.qos_text(),
                target_latency_ms=settings.target_latency_ms, battery=self._battery.describe(),
                cpu_load="unknown" if load is None else f"{load:.2f} ({source})",
                silence=silence)
            array.status.append(camera.stats.status(context, max(period, 1e-3)))
        self._diagnostics.publish(array)

    def _run_worker(self) -> None:
        try:
            self._work()
        except Exception:  # noqa: BLE001 - reported, then the node shuts down instead of hanging
            if not self.context.ok():
                return  # rclpy's signal handler shut the context down while a frame was in flight
            self.worker_error = traceback.format_exc()
            self.get_logger().fatal(f"inference thread failed:\n{self.worker_error}")
            self.context.try_shutdown()

    def _work(self) -> None:
        # Cameras take turns; a frame arriving meanwhile replaces the waiting one (no backlog).
        turn = 0
        while not self._stop.is_set():
            self._wake_event.wait()
            self._wake_event.clear()
            pending = True
            while pending and not self._stop.is_set():
                pending = False
                for offset in range(len(self._cameras)):
                    camera = self._cameras[(turn + offset) % len(self._cameras)]
                    msg = camera.take()
                    if msg is None:
                        continue
                    load, _ = self._cpu.current(time.monotonic())
                    camera.process(msg, self._settings, self._battery, load)
                    pending = True
                turn += 1


def main(args: list[str] | None = None) -> None:
    """Entry point of the `eventful_detector` executable."""
    rclpy.init(args=args)
    node = None
    try:
        node = EventfulDetectorNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # Ctrl-C can shut the context down while spin builds its wait set (ros2/rclpy#1166):
        # that is a normal shutdown; anything else is a real error.
        if rclpy.ok():
            raise
    except (ParameterException, ValueError, FileNotFoundError) as error:
        # Bad parameters or a missing model: say why in one line, no traceback.
        rclpy.logging.get_logger("eventful_detector").fatal(f"cannot start: {error}")
        raise SystemExit(1) from None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if node is not None and node.worker_error:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
