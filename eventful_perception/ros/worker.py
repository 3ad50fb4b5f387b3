"""The inference thread: takes the newest frame of each camera in turn and processes it."""
from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import Callable

from eventful_perception.ros.camera import CameraPipeline
from eventful_perception.ros.camera_input import CameraInput
from eventful_perception.ros.diagnostics import CameraStats


@dataclass
class Camera:
    """One camera: its input side exists only while the node is active."""

    name: str
    stats: CameraStats
    pipeline: CameraPipeline
    input: CameraInput | None = None


class InferenceWorker:
    """Runs `step(camera, msg)` for every waiting frame; cameras take turns.

    `wake()` is called by the subscriptions when a frame is waiting. A frame arriving meanwhile
    replaces the waiting one (the cameras' slots), so there is never a backlog.
    `on_failure(text)` receives the traceback of an unexpected error, after which it stops.
    """

    def __init__(self, cameras: list[Camera], step: Callable[[Camera, object], None],
                 on_failure: Callable[[str], None]) -> None:
        self._cameras, self._step, self._on_failure = cameras, step, on_failure
        self._wake_event, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A frame is waiting in some camera's slot."""
        self._wake_event.set()

    def stop(self) -> None:
        """Finish the frame in flight, then end the thread."""
        self._stop.set()
        self._wake_event.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._work()
        except Exception:  # noqa: BLE001 - reported, then the node shuts down instead of hanging
            self._on_failure(traceback.format_exc())

    def _work(self) -> None:
        turn = 0
        while not self._stop.is_set():
            self._wake_event.wait()
            self._wake_event.clear()
            pending = True
            while pending and not self._stop.is_set():
                pending = False
                for offset in range(len(self._cameras)):
                    camera = self._cameras[(turn + offset) % len(self._cameras)]
                    msg = camera.input.take() if camera.input is not None else None
                    if msg is None:
                        continue
                    self._step(camera, msg)
                    pending = True
                turn += 1
