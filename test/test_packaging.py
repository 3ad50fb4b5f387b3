"""What the installed package imports is what a robot install provides; layering of imports."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from ros_helpers import REPO, ros_env

PACKAGE = REPO / "eventful_perception"
# rosdep key -> the Python module it provides (package.xml names keys, code imports modules).
ROSDEP_MODULES = {"python3-numpy": "numpy", "python3-opencv": "cv2", "python3-psutil": "psutil",
                  "python3-torch": "torch", "python3-tqdm": "tqdm", "python3-yaml": "yaml",
                  "python3-matplotlib": "matplotlib"}
# Only the head's training pipeline (`python -m eventful_perception.training`) may need more.
TRAINING = PACKAGE / "training"


def imported_modules(files: list[Path]) -> dict[str, set[Path]]:
    """Top-level module name -> files importing it (function-level imports included)."""
    found: dict[str, set[Path]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path)
    return found


def third_party(modules: dict[str, set[Path]]) -> set[str]:
    own = {"eventful_perception", "__future__"}
    return {m for m in modules if m not in sys.stdlib_module_names and m not in own}


def is_ros_package(module: str) -> bool:
    return (Path(sys.prefix) / "share/ament_index/resource_index/packages" / module).is_file()


def package_xml_keys() -> set[str]:
    text = (REPO / "package.xml").read_text()
    return set(re.findall(r"<(?:exec_)?depend>([^<]+)</(?:exec_)?depend>", text))


def readme_pip_modules(section: str) -> set[str]:
    """Modules provided by the `pip install ...` commands of a README section."""
    readme = (REPO / "README.md").read_text()
    body = readme.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    distributions = {re.split(r"[=<>!~\[]", d)[0] for line in re.findall(r"pip install ([^#`\n]+)", body)
                     for d in line.split()}
    provided = importlib.metadata.packages_distributions()
    return {module for module, dists in provided.items() if distributions & set(dists)}


def test_every_runtime_import_is_provided_by_package_xml_or_the_readme_pip_line():
    runtime = [p for p in PACKAGE.rglob("*.py") if TRAINING not in p.parents]
    modules = third_party(imported_modules(runtime))
    keys = package_xml_keys()
    python_modules = readme_pip_modules("On a robot") | {ROSDEP_MODULES.get(k) for k in keys}
    missing = sorted(m for m in modules
                     if not (m in keys if is_ros_package(m) else m in python_modules))
    assert not missing, f"imported by the package, not provided on a robot: {missing}"
    assert {"rclpy", "vision_msgs", "torch", "safetensors", "onnx"} <= modules  # the scan works


def test_training_imports_are_named_in_the_readme():
    modules = third_party(imported_modules(list(TRAINING.rglob("*.py"))))
    runtime = readme_pip_modules("On a robot") | {ROSDEP_MODULES.get(k) for k in package_xml_keys()}
    extra = sorted(modules - runtime)
    assert extra and set(extra) <= readme_pip_modules("The default detector and offline detection"), extra


def test_only_the_node_side_imports_rclpy():
    importers = imported_modules(list(PACKAGE.rglob("*.py")))["rclpy"]
    outside = {p.relative_to(PACKAGE).as_posix() for p in importers if PACKAGE / "ros" not in p.parents}
    assert outside == {"demo.py"}  # the demo drives the node (README "The library")
    for layer in ("eventful", "models"):
        files = list((PACKAGE / layer).rglob("*.py"))
        assert files and not any(is_ros_package(m) for m in third_party(imported_modules(files)))


def test_the_library_loads_no_ros_module(tmp_path):
    code = ("import sys, numpy as np, eventful_perception as ep\n"
            "from eventful_perception.models.dinov2 import Dinov2Config\n"
            "import eventful_perception.eventful.block, eventful_perception.models.loading\n"
            "ros = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'vision_msgs', 'rosidl_runtime_py'))\n"
            "print('ROS MODULES', ros)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=ros_env(), cwd=tmp_path).stdout
    assert "ROS MODULES []" in out, out
