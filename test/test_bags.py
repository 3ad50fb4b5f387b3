"""Bag tools: make-bag from real video, replay through rclpy into the node, record its outputs;
the replayed detections equal `eventful-perception detect` on the same video."""
import json

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from vision_msgs.msg import Detection2DArray

from eventful_perception import cli
from eventful_perception.bags import make_bag, read_images, read_messages
from node_harness import NAMESPACE, VIDEO, DetectorProcess, Peer, tiny_yolos
from ros_helpers import start, stop

FRAMES = 5


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory):
    """The first frames of the real clip as a video of their own (what detect and make-bag read)."""
    path = tmp_path_factory.mktemp("video") / "excerpt.avi"
    capture = cv2.VideoCapture(str(VIDEO))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(FRAMES):
        ok, frame = capture.read()
        assert ok, f"{VIDEO} is missing (run make setup)"
        writer.write(frame)
    writer.release()
    capture.release()
    return path


def decoded(video) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_make_bag_writes_every_frame_at_the_video_rate_with_a_battery_ramp(excerpt, tmp_path):
    bag = tmp_path / "bag"
    assert cli.main(["make-bag", str(excerpt), str(bag), "--battery-ramp", "1.0", "0.1"]) == 0
    with Reader(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert reader.duration == pytest.approx(0.4e9, abs=1)  # 5 frames at 10 fps
    assert topics == {"/image_raw": "sensor_msgs/msg/Image",
                      "/battery_state": "sensor_msgs/msg/BatteryState"}
    images = list(read_images(bag, "/image_raw"))
    assert [stamp - images[0][0] for stamp, _ in images] == [i * 100_000_000 for i in range(5)]
    for (_, got), want in zip(images, decoded(excerpt)):
        assert np.array_equal(got, want)
    battery = [m.percentage for m in read_messages(bag, "/battery_state")]
    assert battery[0] == pytest.approx(1.0) and all(a > b for a, b in zip(battery, battery[1:]))


def test_make_bag_compressed_and_limited(excerpt, tmp_path):
    frames = make_bag(excerpt, tmp_path / "bag", topic="/cam/image_raw", compressed=True,
                      max_frames=2)
    assert frames == 2
    images = list(read_images(tmp_path / "bag", "/cam/image_raw/compressed"))
    assert len(images) == 2
    assert np.abs(images[0][1].astype(int) - decoded(excerpt)[0].astype(int)).mean() < 4.0
    with pytest.raises(ValueError, match="has no topic '/image_raw'"):
        list(read_messages(tmp_path / "bag", "/image_raw"))


def recorder_subscribed(peer: Peer) -> bool:
    infos = peer.node.get_subscriptions_info_by_topic(f"{NAMESPACE}/detections")
    return any(info.node_name == "bag_recorder" for info in infos)


def test_replayed_bag_gives_the_same_detections_as_detect(excerpt, tmp_path):
    model = str(tiny_yolos())
    bag, outputs, jsonl = tmp_path / "input", tmp_path / "outputs", tmp_path / "detect.jsonl"
    assert cli.main(["detect", str(excerpt), "--model", model, "--budget", "0.5",
                     "--score-threshold", "0.3", "--json", str(jsonl)]) == 0
    expected = [json.loads(line) for line in jsonl.read_text().splitlines()]
    make_bag(excerpt, bag, topic=f"{NAMESPACE}/image_raw")
    node = DetectorProcess({"model": model, "token_budget": 0.5, "score_threshold": 0.3})
    peer = Peer()
    seen = peer.collect(Detection2DArray, "detections")
    recorder = start(["-m", "eventful_perception.cli", "record", str(outputs), "--topics",
                      f"{NAMESPACE}/detections", f"{NAMESPACE}/compute_usage",
                      "--count", str(FRAMES)])
    try:
        peer.spin_until(lambda: recorder_subscribed(peer), 60.0, "the recorder", node)
        # Slow enough (2 s a frame) for the tiny model never to drop a frame, even on a 2-core
        # machine at load 9 (at 1 s a frame a run there missed a frame).
        player = start(["-m", "eventful_perception.cli", "replay", str(bag), "--rate", "0.05",
                        "--wait-for-subscribers", "1"])
        peer.spin_until(lambda: player.poll() is not None, 120.0, "the replay", node)
        code, out = stop(player)
        assert code == 0, out
        peer.spin_until(lambda: len(seen) == FRAMES, 60.0, "detections of every frame", node)
        peer.spin_until(lambda: recorder.poll() is not None, 60.0,
                        f"the recorder to have {FRAMES} messages per topic", node)
    finally:
        peer.close()
        node_log = node.assert_clean_exit()
        record_code, record_out = stop(recorder)
    assert record_code == 0, record_out
    detections = list(read_messages(outputs, f"{NAMESPACE}/detections"))
    assert len(detections) == FRAMES, node_log
    for got, want in zip(detections, expected):
        boxes = [[d.bbox.center.position.x - d.bbox.size_x / 2,
                  d.bbox.center.position.y - d.bbox.size_y / 2,
                  d.bbox.center.position.x + d.bbox.size_x / 2,
                  d.bbox.center.position.y + d.bbox.size_y / 2] for d in got.detections]
        assert [d.results[0].hypothesis.class_id for d in got.detections] == [
            d["label"] for d in want["detections"]]
        # detect's JSON rounds boxes to 0.1 px and scores to 4 decimals.
        np.testing.assert_allclose(boxes, [d["box"] for d in want["detections"]], atol=0.06)
        np.testing.assert_allclose([d.results[0].hypothesis.score for d in got.detections],
                                   [d["score"] for d in want["detections"]], atol=1e-4)
    usage = list(read_messages(outputs, f"{NAMESPACE}/compute_usage"))
    assert [u.tokens_updated for u in usage] == [w["usage"]["tokens_updated"] for w in expected]
