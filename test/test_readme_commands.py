"""Every command in the README's code blocks, as typed, in a clean shell after the set-up.

The shell is what `source .venv/bin/activate` gives in a fresh terminal (PATH and VIRTUAL_ENV;
no PYTHONPATH, no EVENTFUL_PERCEPTION_CACHE), in an empty working directory, plus this run's
DDS isolation. A command is either run here or listed in NOT_RUN with the reason; a README
command that is neither fails the first test, so new commands cannot go unchecked.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from vision_msgs.msg import Detection2DArray
from sensor_msgs.msg import Image

from node_harness import Peer, image_msg, reliable, video_frames
from ros_helpers import REPO

VENV = REPO / ".venv"
# Command prefix -> why it is not run here (each job is covered where the reason says).
NOT_RUN = {
    "make test": "the set-up command this suite runs under",
    "make demo": "the set-up command; test_demo.py runs its pipeline on a few frames",
    "ros2 ": "needs a ROS distro (ros2 CLI); the node's services are tested through rclpy",
    "cd ~/ros2_ws": "robot install", "rosdep ": "robot install", "colcon ": "robot install",
    "pip install ": "robot install; test_packaging.py checks what it provides",
    "export FASTRTPS_DEFAULT_PROFILES_FILE=$(ros2": "needs `ros2 pkg prefix`",
    "export FASTDDS_DEFAULT_PROFILES_FILE=$FASTRTPS": "robot environment (follows the line above)",
    "source .venv/bin/activate": "what every command here runs under (see clean_env)",
    "eventful-perception bench ": "a benchmark (minutes of CPU); test_eventful_bench.py runs "
                                  "the same subcommand (also --ladder) on a tiny model and checks "
                                  "its JSON",
    "nice -n 10 python benchmarks/bench_tracking.py ": "a benchmark (25 min of CPU); "
                                                       "test_tracking_bench.py runs it end to end "
                                                       "on a tiny model",
}


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def bash_commands() -> list[str]:
    lines = [line for block in readme_blocks("bash")
             for line in re.sub(r"\\\n\s*", "", block).splitlines()]  # join continued lines
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def runnable(command: str) -> bool:
    return not any(command.startswith(prefix) for prefix in NOT_RUN)


def clean_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in ("HOME", "LANG", "ROS_DOMAIN_ID",
                                             "ROS_AUTOMATIC_DISCOVERY_RANGE") if key in os.environ}
    env.update(PATH=f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin", VIRTUAL_ENV=str(VENV))
    return env


def command(prefix: str) -> str:
    matches = [c for c in bash_commands() if c.startswith(prefix)]
    assert len(matches) == 1, (prefix, matches)
    return matches[0]


def run(line: str, cwd: Path, timeout: float = 900) -> str:
    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


RUN_HERE = ("eventful-perception detect ", "eventful-perception make-bag ",
            "eventful-perception replay ", "eventful-perception record ",
            "python -m eventful_perception.ros.node ", "python benchmarks/random_yolos_small.py ",
            "python benchmarks/bench_node.py ", "python benchmarks/shift_stability.py ")


def test_every_readme_command_is_run_here_or_listed_with_a_reason():
    unclassified = [c for c in bash_commands() if runnable(c) and not c.startswith(RUN_HERE)]
    assert not unclassified, unclassified
    assert len(bash_commands()) > 20  # the extraction works


def test_detect_as_typed(tmp_path):
    run(command("eventful-perception detect "), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 20 and all("person" in {d["label"] for d in r["detections"]} or
                                      not r["detections"] for r in records)
    assert cv2.VideoCapture(str(tmp_path / "annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 20


def test_library_snippet_as_typed(tmp_path):
    (snippet,) = [b for b in readme_blocks("python") if "load_model(\"default\")" in b]
    check = "\nprint('OK', len(r.detections.boxes), r.usage.tokens_total, dense.features.shape)\n"
    out = run_snippet(snippet + check, tmp_path)
    assert "OK" in out and "1377" in out, out


def test_moving_camera_snippet_as_typed(tmp_path):
    """The ladder snippet continues the library snippet (its `model`), on three real frames."""
    (library,) = [b for b in readme_blocks("python") if "load_model(\"default\")" in b]
    (moving,) = [b for b in readme_blocks("python") if "ep.Ladder(" in b]
    check = "\nprint('OK', out.stage, len(state.streams), sum(state.exits), r.usage.tokens_total)\n"
    out = run_snippet(library + moving + check, tmp_path)
    assert "OK" in out and out.split("OK")[1].split() == ["2", "3", "3", "1377"], out


def test_tracking_snippet_as_typed(tmp_path):
    """The tracking snippet continues the library snippet (its `model` and `stream`)."""
    (library,) = [b for b in readme_blocks("python") if "load_model(\"default\")" in b]
    (tracking,) = [b for b in readme_blocks("python") if "StreamTracker(" in b]
    check = ("\ntracked = [i for i in ids if i]  # '' = a new track, not confirmed yet\n"
             "print('OK', len(ids) == len(r.detections.boxes), len(tracked) > 0, "
             "len(set(tracked)) == len(tracked))\n")
    out = run_snippet(library + tracking + check, tmp_path)
    assert "OK True True True" in out, out


def run_snippet(code: str, folder: Path) -> str:
    """Run README Python with its only free name, `frames`, bound to three real frames."""
    prelude = ("import cv2\nfrom eventful_perception.assets import video_path\n"
               "capture = cv2.VideoCapture(str(video_path('vtest.avi')))\n"
               "frames = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(3)]\n")
    (folder / "snippet.py").write_text(prelude + code)
    return run("python snippet.py", folder)


def test_bag_commands_and_the_node_as_typed(tmp_path):
    """make-bag, record (in the background), the node, replay; what record wrote is checked."""
    run(command("eventful-perception make-bag vtest.avi "), tmp_path)
    run(command("eventful-perception make-bag Megamind.avi "), tmp_path)
    recorder = subprocess.Popen(["bash", "-c", "exec " + command("eventful-perception record ")],
                                cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    node = subprocess.Popen(["bash", "-c", "exec " + command("python -m eventful_perception.ros.node ")],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peer = Peer("readme_peer")
    try:
        detections = peer.collect(Detection2DArray, "/detections")
        camera = peer.node.create_publisher(Image, "/camera/image_raw", reliable())
        peer.spin_until(lambda: camera.get_subscription_count() > 0, 60.0, "the node")
        # The recorder subscribes topic by topic; a message sent before its /detections reader
        # matched is not recorded, so wait for that reader and send until three are out.
        peer.spin_until(lambda: peer.node.count_subscribers("/detections") >= 2, 60.0, "the recorder")
        frame = video_frames(1, (768, 576))[0]
        peer.spin_until(lambda: len(detections) >= 3 or camera.publish(image_msg(frame, 0)), 60.0,
                        "detections from the node")
        # replay waits for a subscriber on the bag's image topic: this test is that subscriber
        frames = peer.collect(Image, "/image_raw", reliable(depth=100))
        replay = subprocess.Popen(["bash", "-c", command("eventful-perception replay ")],
                                  cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        peer.spin_until(lambda: replay.poll() is not None, 120.0, "the replay")
        assert replay.returncode == 0, replay.stdout.read()
        assert len(frames) >= 90  # 100 frames, reliable
    finally:
        peer.close()
        node.send_signal(signal.SIGINT)
        node_out, _ = node.communicate(timeout=30)
    assert node.returncode == 0 and "Traceback" not in node_out, node_out
    record_out, _ = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, record_out
    assert re.search(r"/detections: [1-9]", record_out), record_out


def test_benchmark_scripts_as_typed():
    """From the clone, as the README's Performance section runs them."""
    out = run(command("python benchmarks/random_yolos_small.py "), REPO)
    assert (REPO / "out/yolos-small-random/config.json").is_file(), out
    out = run(command("python benchmarks/bench_node.py "), REPO)
    report = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert report["model_p50_ms"] > 0 and abs(report["overhead_fraction"]) < 1.0, report


def test_shift_stability_as_typed():
    """The detector's own shift stability (README Performance), as typed from the clone."""
    out = run(command("python benchmarks/shift_stability.py "), REPO)
    values = {int(px): float(v) for px, v in re.findall(r"^\s+(\d+) px: ([0-9.]+)$", out, re.M)}
    assert sorted(values) == [1, 2, 4, 9, 18], out
    assert all(0.0 <= v <= 1.0 for v in values.values()) and values[1] > values[9], out


def test_shift_stability_of_an_unshifted_frame_is_exact():
    """Scoring the dense detections against themselves gives 1.0: the pipeline adds no error."""
    import importlib.util

    import eventful_perception as ep
    from eventful_perception.assets import resolve_video
    from eventful_perception.bench import read_frames

    spec = importlib.util.spec_from_file_location("shift_stability", REPO / "benchmarks/shift_stability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frames = read_frames(resolve_video("vtest.avi"), 0, 2, None, 0)
    assert module.stability(ep.load_model("default"), frames, [0]) == {"0": 1.0}
