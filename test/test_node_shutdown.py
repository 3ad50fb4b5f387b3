"""Ctrl-C under `ros2 launch`: the node gets SIGINT twice (the terminal's, then the one launch
forwards). `ros2 launch` is not available as a wheel, so this sends the two signals itself."""
import signal
import time

import pytest
from rclpy._rclpy_pybind11 import RCLError
from rclpy.duration import Duration
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from eventful_perception.ros.shutdown import shutdown
from node_harness import DetectorProcess, Peer, image_msg, reliable, tiny_yolos, video_frames
from ros_helpers import start

SECOND_SIGNAL_AFTER_S = 0.05  # what the issue measured between the two signals


def wait_for_log(process: DetectorProcess, text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.output():
        assert process.proc.poll() is None, process.output()
        assert time.monotonic() < deadline, f"no {text!r} in:\n{process.output()}"
        time.sleep(0.05)


def interrupt_twice(process: DetectorProcess) -> tuple[int, str]:
    process.proc.send_signal(signal.SIGINT)
    time.sleep(SECOND_SIGNAL_AFTER_S)  # the stimulus's timing, not a synchronisation
    process.proc.send_signal(signal.SIGINT)
    return process.stop(timeout=60.0)


def assert_clean(code: int, out: str) -> None:
    assert code == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "terminate called" not in out, out


def test_two_interrupts_while_idle_exit_cleanly():
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128})
    wait_for_log(process, "ready: ")
    assert_clean(*interrupt_twice(process))


def test_two_interrupts_with_a_frame_in_flight_exit_cleanly():
    """The default model takes over a second per frame here, so the frame is still in the
    model when the signals arrive (no detections came back before them)."""
    process = DetectorProcess({"model": "default"})
    peer = Peer()
    try:
        replies = peer.collect(Detection2DArray, "detections")
        publisher = peer.node.create_publisher(Image, "image_raw", reliable())
        peer.wait_for_reliable_match("image_raw", process, timeout=180.0)
        publisher.publish(image_msg(video_frames(1)[0], 0))
        assert publisher.wait_for_all_acked(Duration(seconds=30))  # the node has the frame
        peer.executor.spin_once(timeout_sec=0.2)
        assert replies == [], "the frame was already processed: nothing was in flight"
        code, out = interrupt_twice(process)
    finally:
        peer.close()
    assert_clean(code, out)


class RacedContext:
    """A context whose `try_shutdown` lost a race: it checked `ok()`, then another thread (the
    failed inference thread; before `shutdown.init`, rclpy's signal-handler thread) shut the
    context down first. A stand-in, because the real race needs two C calls interleaved."""

    def __init__(self, shut_down_by_the_signal: bool) -> None:
        self.shut_down = shut_down_by_the_signal

    def ok(self) -> bool:
        return not self.shut_down

    def try_shutdown(self) -> None:
        raise RCLError("failed to shutdown: rcl_shutdown already called on the given context")


def test_shutdown_accepts_a_context_ctrl_c_shut_down_first_and_raises_otherwise():
    shutdown(RacedContext(shut_down_by_the_signal=True))  # exit 1 with a traceback before the fix
    with pytest.raises(RCLError):
        shutdown(RacedContext(shut_down_by_the_signal=False))  # a real failure stays one


PROBE = """
import threading
from rclpy.node import Node
from eventful_perception.ros.shutdown import init, shutdown, spin
init()
node = Node("probe")
on_main_thread = []
node.context.on_shutdown(
    lambda: on_main_thread.append(threading.current_thread() is threading.main_thread()))
try:
    print("spinning", flush=True)
    spin(node)
except KeyboardInterrupt:
    print("context ok at the interrupt:", node.context.ok())
node.destroy_node()
shutdown()
print("shut down on the main thread:", on_main_thread, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_leaves_the_shutdown_to_the_main_thread(signum):
    """rclpy's own handler shuts the context down from its signal thread while the main thread
    still spins or destroys entities (a node crashed with -11 in CI). With `shutdown.init` the
    signal only interrupts the spin loop; the context is still up, and the main thread shuts it
    down after destroying the node."""
    probe = start(["-c", PROBE])
    assert probe.stdout.readline().strip() == "spinning"
    probe.send_signal(signum)
    out, _ = probe.communicate(timeout=30)
    assert probe.returncode == 0, out
    assert "context ok at the interrupt: True" in out, out
    assert "shut down on the main thread: [True]" in out, out


def test_sigterm_exits_cleanly():
    """What `ros2 launch` sends when SIGINT was not enough."""
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128})
    wait_for_log(process, "ready: ")
    process.proc.send_signal(signal.SIGTERM)
    assert_clean(*process.stop(timeout=60.0))
