"""Starting and stopping rclpy so that one thread, the main one, tears everything down.

rclpy's own SIGINT/SIGTERM handler shuts the context down from a thread of its own while the
main thread is still spinning or destroying entities. That race crashed a node (exit -11) and
a test peer ("Unable to convert call argument") in fresh-clone runs. Here a signal only raises
KeyboardInterrupt in the main thread, which leaves its spin loop and shuts down in order.
"""
from __future__ import annotations

import signal
from types import FrameType
from typing import Callable, Sequence

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import get_default_context

POLL_S = 0.1  # how soon the spin loop notices a signal


def init(args: Sequence[str] | None = None) -> None:
    """`rclpy.init` without rclpy's signal handlers; SIGINT and SIGTERM raise
    KeyboardInterrupt in the main thread (SIGTERM is what launch sends when SIGINT was not
    enough)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def spin(node: Node, until: Callable[[], bool] = lambda: False) -> None:
    """Spin `node` until `until()` is true, a signal (KeyboardInterrupt) or its context is shut
    down. The wait is bounded because a Python signal handler runs only between waits."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while node.context.ok() and not until():
            executor.spin_once(timeout_sec=POLL_S)
    finally:
        executor.remove_node(node)
        executor.shutdown()


def ignore_interrupts() -> None:
    """Once shutting down, ignore further signals: under `ros2 launch`, Ctrl-C reaches the node
    twice (the terminal's SIGINT, then the one launch forwards), and a second KeyboardInterrupt
    during clean-up would leave half-destroyed entities and a thread in flight."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def shutdown(context: Context | None = None) -> None:
    """`try_shutdown` of `context` (default: the global one). The inference thread shuts the
    context down when it fails, so the main thread's shutdown can find it already done
    ("rcl_shutdown already called"): that is a shutdown too."""
    context = context or get_default_context()
    try:
        context.try_shutdown()
    except RCLError:
        if context.ok():
            raise
