"""Bag I/O shared by the bag tools (`bags.py`) and the rclpy recorder (`ros/bag_recorder.py`).

Imports no rclpy: rosbags does the reading and writing; message classes and definitions come
from the installed interface packages.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore


def new_writer(bag: Path) -> Writer:
    """A writer of a new rosbag2 bag (mcap storage, format version 9 as Jazzy writes)."""
    return Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)


def message_class(msgtype: str) -> Any:
    """Generated Python class of a type name such as 'sensor_msgs/msg/Image'."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def typestore_for(msgtypes: list[str], store: Typestore | None = None) -> Typestore:
    """Jazzy's typestore (or `store`) plus the message packages it lacks (vision_msgs,
    eventful_perception), read from their installed `share/<package>/msg` folders."""
    store = store or get_typestore(Stores.ROS2_JAZZY)
    for package in sorted({t.split("/")[0] for t in msgtypes if t not in store.types}):
        folder = message_folder(package)
        types = {}
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
        store.register(types)
    return store


def message_folder(package: str) -> Path:
    """`share/<package>/msg` of an installed interface package (found from its Python module)."""
    module = importlib.import_module(f"{package}.msg")
    for location in module.__path__:
        for ancestor in Path(location).parents:
            folder = ancestor / "share" / package / "msg"
            if folder.is_dir():
                return folder
    raise ValueError(f"no share/{package}/msg folder found above {list(module.__path__)}")
