"""Helpers for tests that run real rclpy processes on loopback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def ros_env(**extra: str) -> dict[str, str]:
    """Environment for a child ROS process: the test session's DDS settings, the source tree."""
    env = dict(os.environ)  # conftest.py set loopback discovery and this run's domain
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(args: list[str], **extra_env: str) -> subprocess.Popen:
    """Start `python ARGS...` as a child process with `ros_env()`; output is captured as text."""
    return subprocess.Popen(
        [sys.executable, *args], env=ros_env(**extra_env), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> tuple[int, str]:
    """SIGINT the process, as `ros2 launch` does on Ctrl-C; return its exit code and output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"process did not exit within {timeout} s of SIGINT:\n{out}")
    return proc.returncode, out


def spin_until(node, executor, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin `executor` until `condition()` holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()
