"""Shutting an rclpy context down when Ctrl-C may be doing the same."""
from __future__ import annotations

from rclpy._rclpy_pybind11 import RCLError
from rclpy.context import Context
from rclpy.utilities import get_default_context


def shutdown(context: Context | None = None) -> None:
    """`try_shutdown` of `context` (default: the global one). rclpy's SIGINT handler shuts
    contexts down from its own thread, between `try_shutdown`'s check and its call ("rcl_shutdown
    already called"; seen once in a fresh-clone run after Ctrl-C): that is a shutdown too."""
    context = context or get_default_context()
    try:
        context.try_shutdown()
    except RCLError:
        if context.ok():
            raise
