"""Checks the launch file runs before it starts anything (plain Python, unit-tested)."""
from __future__ import annotations

from typing import Callable

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def as_bool(name: str, text: str) -> bool:
    """A launch argument's boolean, read as launch's IfCondition reads it."""
    if text.strip().lower() in TRUE:
        return True
    if text.strip().lower() in FALSE:
        return False
    raise ValueError(f"launch argument {name}:={text!r} must be true or false")


def launch_problem(use_rviz: str, installed: Callable[[str], bool]) -> str | None:
    """Why the launch must start nothing (a package it needs is missing), or None."""
    if as_bool("use_rviz", use_rviz) and not installed("rviz2"):
        return ("use_rviz:=true but the package 'rviz2' is not installed; install it "
                "(sudo apt install ros-$ROS_DISTRO-rviz2) or launch with use_rviz:=false. "
                "Nothing was started.")
    return None


def package_installed(name: str) -> bool:
    """Whether the ament index (AMENT_PREFIX_PATH) knows the package `name`."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(name)
    except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
        return False
    return True
