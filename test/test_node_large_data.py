"""The shipped Fast DDS profile is what lets best-effort camera frames cross processes whole."""
from diagnostic_msgs.msg import DiagnosticArray

from node_harness import NAMESPACE, DetectorProcess, Peer, tiny_yolos
from ros_helpers import REPO, start, stop

PROFILE = str(REPO / "config" / "fastdds_large_data.xml")
# Fast DDS 2.x (Humble, Jazzy) reads the first name, Fast DDS 3 (Kilted) the second.
PROFILE_ENV = {"FASTRTPS_DEFAULT_PROFILES_FILE": PROFILE, "FASTDDS_DEFAULT_PROFILES_FILE": PROFILE}
FRAMES = 40


def frames_received(arrays: list) -> int | None:
    """The node's last reported count of received frames (None before its first report)."""
    for array in reversed(arrays):
        for status in array.status:
            if status.hardware_id == f"{NAMESPACE}/eventful_detector":
                return int({kv.key: kv.value for kv in status.values}["frames received"])
    return None


def best_effort_run(size: tuple[int, int], env: dict[str, str]) -> int:
    """Frames of `size` a best-effort camera process gets through to the node under `env`."""
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128,
                               "image_qos": "sensor_data"}, env=env)
    peer = Peer()
    camera = start([str(REPO / "test" / "node_harness.py"), NAMESPACE, str(FRAMES), "0.1",
                    *map(str, size)], PYTHONPATH=f"{REPO}:{REPO / 'test'}", **env)
    try:
        arrays = peer.collect(DiagnosticArray, "/diagnostics")
        peer.spin_until(lambda: camera.poll() is not None, 90.0, "the camera process", process)
        # The node reports once a second; two reports after the camera ended cover every frame
        # still in flight (best-effort frames arrive within milliseconds or never).
        after = len(arrays)
        peer.spin_until(lambda: frames_received(arrays) == FRAMES or len(arrays) >= after + 2,
                        10.0, "two diagnostics after the camera ended", process)
    finally:
        peer.close()
        code, out = stop(camera)
        process.assert_clean_exit()
    assert code == 0, out
    return frames_received(arrays) or 0


def test_best_effort_frames_arrive_whole_only_with_the_large_data_profile():
    with_profile = best_effort_run((640, 480), PROFILE_ENV)
    without = best_effort_run((640, 480), {})
    print(f"640x480: {with_profile}/{FRAMES} frames with the profile, {without} without")
    assert with_profile == FRAMES
    # The control shows the loss the profile prevents: 14-21 of 40 arrived without it here.
    assert without <= FRAMES * 3 // 4
