"""Launch file and RViz config, checked statically (no `launch` package in the dev venv; the
node itself is exercised with config/params.yaml in test_node_params.py)."""
import ast

import pytest
import yaml

from eventful_perception.ros.launch_checks import launch_problem, package_installed
from eventful_perception.ros.params import TABLE
from ros_helpers import REPO

LAUNCH = REPO / "launch" / "eventful_perception.launch.py"


def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def test_launch_file_declares_the_documented_arguments():
    tree = launch_tree()
    [arguments] = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], "id", "") == "ARGUMENTS"]
    names = [ast.literal_eval(entry.elts[0]) for entry in arguments.elts]
    assert names == ["namespace", "image_topic", "params_file", "model", "device",
                     "token_budget", "managed", "use_rviz", "fastdds_profile"]


def test_launch_file_starts_the_installed_executable_with_real_parameters():
    tree = launch_tree()
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", "") == "Node"]
    keywords = {kw.arg: kw.value for kw in calls[0].keywords}
    assert ast.literal_eval(keywords["executable"]) == "eventful_detector"
    assert ast.literal_eval(keywords["name"]) == "eventful_detector"
    overrides = keywords["parameters"].elts[1]
    names = {ast.literal_eval(key) for key in overrides.keys}
    assert names <= {spec.name for spec in TABLE}
    env = {ast.literal_eval(key) for key in keywords["additional_env"].keys}
    assert env == {"FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"}
    assert (REPO / "config" / "fastdds_large_data.xml").is_file()


def test_rviz_config_shows_the_camera_and_the_detection_image():
    config = yaml.safe_load((REPO / "config" / "eventful_perception.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    assert [(d["Class"], d["Topic"]["Value"]) for d in displays] == [
        ("rviz_default_plugins/Image", "image_raw"),
        ("rviz_default_plugins/Image", "detection_image")]


def test_use_rviz_without_rviz2_says_what_is_missing():
    problem = launch_problem("true", lambda name: name != "rviz2")
    assert "'rviz2' is not installed" in problem and "use_rviz:=false" in problem
    assert "Nothing was started" in problem
    assert launch_problem("True", lambda name: True) is None
    assert launch_problem("false", lambda name: False) is None  # rviz2 not needed then
    with pytest.raises(ValueError, match="use_rviz:='maybe' must be true or false"):
        launch_problem("maybe", lambda name: True)


def test_package_lookup_uses_the_ament_index(monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(REPO / ".venv"))
    assert package_installed("eventful_perception")  # installed into .venv by `make`
    assert not package_installed("rviz2")  # never installed in the dev environment
    monkeypatch.delenv("AMENT_PREFIX_PATH")
    assert not package_installed("eventful_perception")


def test_launch_file_checks_before_it_creates_any_node():
    """The nodes are made inside the OpaqueFunction, after `launch_problem` raised or passed."""
    tree = launch_tree()
    [setup] = [node for node in tree.body if isinstance(node, ast.FunctionDef)
               and node.name == "_launch_setup"]
    lines = {getattr(node.func, "id", ""): node.lineno for node in ast.walk(setup)
             if isinstance(node, ast.Call)}
    assert lines["launch_problem"] < lines["Node"]
    raises = [node for node in ast.walk(setup) if isinstance(node, ast.Raise)]
    assert raises and raises[0].lineno < lines["Node"]

    def node_calls(root: ast.AST) -> int:
        return sum(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"
                   for n in ast.walk(root))
    assert node_calls(tree) == node_calls(setup) == 2  # detector and rviz, nothing outside
