"""Point the ROS wheels' exported CMake include paths at this machine's Python and numpy.

The PyPI ROS wheels were built in a manylinux container; their
`share/*/cmake/export_*__rosidl_generator_pyExport.cmake` files hard-code that container's Python
and numpy include directories, which do not exist here. Run after every install of such wheels.
"""
from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

PYTHON_INCLUDE = re.compile(r"[^;\"]*/include/python3\.\d+")
NUMPY_INCLUDE = re.compile(r"[^;\"]*/numpy/(?:_core|core)/include")


def fix(prefix: Path) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in prefix.glob("share/*/cmake/export_*__rosidl_generator_pyExport.cmake"):
        text = path.read_text()
        new = NUMPY_INCLUDE.sub(numpy_include, PYTHON_INCLUDE.sub(python_include, text))
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    print(f"fix_cmake_exports: rewrote {fix(prefix)} file(s) under {prefix}")
