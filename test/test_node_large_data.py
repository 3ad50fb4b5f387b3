"""The shipped Fast DDS profile lets best-effort 640x480 frames cross processes whole."""
from diagnostic_msgs.msg import DiagnosticArray

from node_harness import NAMESPACE, DetectorProcess, Peer, tiny_yolos
from ros_helpers import REPO, start, stop

PROFILE = str(REPO / "config" / "fastdds_large_data.xml")
# Fast DDS 2.x (Humble, Jazzy) reads the first name, Fast DDS 3 (Kilted) the second.
PROFILE_ENV = {"FASTRTPS_DEFAULT_PROFILES_FILE": PROFILE, "FASTDDS_DEFAULT_PROFILES_FILE": PROFILE}
FRAMES = 40


def frames_received(arrays: list) -> int:
    for array in reversed(arrays):
        for status in array.status:
            if status.hardware_id == f"{NAMESPACE}/eventful_detector":
                return int({kv.key: kv.value for kv in status.values}["frames received"])
    return 0


def test_best_effort_frames_arrive_whole_with_the_large_data_profile():
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128,
                               "image_qos": "sensor_data"}, env=PROFILE_ENV)
    peer = Peer()
    camera = start([str(REPO / "test" / "node_harness.py"), NAMESPACE, str(FRAMES), "0.1"],
                   PYTHONPATH=f"{REPO}:{REPO / 'test'}", **PROFILE_ENV)
    try:
        arrays = peer.collect(DiagnosticArray, "/diagnostics")
        peer.spin_until(lambda: camera.poll() is not None, 60.0, "the camera process", process)
        peer.spin_until(lambda: frames_received(arrays) == FRAMES, 5.0,
                        f"diagnostics saying {FRAMES} frames received", process)
    finally:
        peer.close()
        code, out = stop(camera)
        process.assert_clean_exit()
    assert code == 0, out
