"""Launch file and RViz config, checked statically (no `launch` package in the dev venv; the
node itself is exercised with config/params.yaml in test_node_params.py)."""
import ast

import yaml

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
                     "token_budget", "use_rviz", "fastdds_profile"]


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
