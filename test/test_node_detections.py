"""Frames in, detections out, across processes: stamps, original pixels, independent cameras,
compressed input. The reference is the library run on the same frames in this process."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from rclpy.qos import DurabilityPolicy, QoSProfile
from vision_msgs.msg import Detection2DArray, LabelInfo

import eventful_perception
from eventful_perception.msg import ComputeUsage
from eventful_perception.ros.conversions import image_to_rgb, msg_to_detections, rgb_to_compressed
from node_harness import (DetectorProcess, Peer, image_msg, reliable, stamp_of, tiny_yolos,
                          video_frames)

PARAMS = {"short_side": 128, "score_threshold": 0.0, "token_budget": 0.4}
FRAMES = 4


def library_run(frames: list[np.ndarray]):
    """Detections and usage of the library on `frames`, on a stream of their own."""
    model = eventful_perception.load_model(str(tiny_yolos()), short_side=PARAMS["short_side"])
    stream = model.new_stream()
    return [model(f, stream, budget=PARAMS["token_budget"], score_threshold=0.0) for f in frames]


@pytest.fixture(scope="module")
def three_cameras():
    """Cameras a (640x480), b (a's frames x2) and c (other frames), interleaved frame by frame."""
    small = video_frames(FRAMES)
    inputs = {"a": small, "b": [cv2.resize(f, (1280, 960), interpolation=cv2.INTER_CUBIC)
                                for f in small], "c": video_frames(FRAMES, start=300)}
    process = DetectorProcess({"model": str(tiny_yolos()), "cameras": ["a", "b", "c"], **PARAMS})
    peer = Peer()
    try:
        sent = {cam: [] for cam in inputs}
        detections = {cam: peer.collect(Detection2DArray, f"{cam}/detections") for cam in inputs}
        usage = {cam: peer.collect(ComputeUsage, f"{cam}/compute_usage") for cam in inputs}
        publishers = {cam: peer.node.create_publisher(Image, f"{cam}/image_raw", reliable())
                      for cam in inputs}
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        label_info = peer.collect(LabelInfo, "a/label_info", latched)
        for cam in inputs:
            peer.wait_for_reliable_match(f"{cam}/image_raw", process)
        for i in range(FRAMES):
            for k, cam in enumerate(inputs):
                msg = image_msg(inputs[cam][i], 3 * i + k, frame_id=f"{cam}_optical")
                sent[cam].append(msg)
                peer.send_and_wait(publishers[cam], msg, detections[cam], process)
        peer.spin_until(lambda: all(len(usage[c]) == FRAMES for c in inputs) and label_info,
                        20.0, "compute usage of every frame and the label info", process)
    finally:
        peer.close()
        process.assert_clean_exit()
    yield inputs, sent, detections, usage, label_info


def test_the_reference_detections_differ_from_each_other():
    """Every equality test below compares distinct boxes that follow the input, not one
    replicated box: no two boxes of a frame are alike, and the boxes move between frames."""
    results = library_run(video_frames(2, start=100))
    for result in results:
        boxes = result.detections.boxes
        gaps = np.abs(boxes[:, None] - boxes[None]).max(axis=-1)  # (K, K) largest coordinate gap
        assert len(boxes) == 10 and (gaps + 10 * np.eye(len(boxes)) > 1.0).all()
    assert np.abs(results[0].detections.boxes - results[1].detections.boxes).max() > 1.0


def test_label_info_is_latched_for_late_subscribers(three_cameras):
    label_info = three_cameras[4]
    assert [c.class_name for c in label_info[0].class_map] == ["person", "car", "dog"]
    assert label_info[0].threshold == 0.0


def test_every_class_id_published_is_a_class_name_of_label_info(three_cameras):
    """Detections carry the class name; label_info maps uint16 ids to those same names."""
    _, _, detections, _, label_info = three_cameras
    names = {c.class_name for c in label_info[0].class_map}
    ids = [c.class_id for c in label_info[0].class_map]
    assert ids == list(range(len(ids)))  # the position in the model's label list
    published = {d.results[0].hypothesis.class_id for m in detections["a"] for d in m.detections}
    assert published and published <= names


def test_each_frame_is_answered_with_its_own_header(three_cameras):
    _, sent, detections, usage, _ = three_cameras
    for cam in sent:
        assert [stamp_of(m) for m in detections[cam]] == [stamp_of(m) for m in sent[cam]]
        assert [stamp_of(m) for m in usage[cam]] == [stamp_of(m) for m in sent[cam]]
        assert all(d.header.frame_id == f"{cam}_optical" for d in detections[cam])
        assert all(u.stream == cam and u.budget_effective == pytest.approx(0.4)
                   for u in usage[cam])
        for message in detections[cam]:
            assert message.detections, "the tiny detector reports every token at score 0"
            for det in message.detections:
                assert det.header.stamp == message.header.stamp
                assert det.results[0].hypothesis.class_id in ("person", "car", "dog")
                assert 0.0 <= det.results[0].hypothesis.score <= 1.0
                assert det.bbox.center.theta == 0.0


def test_boxes_are_in_original_image_pixels(three_cameras):
    _, _, detections, _, _ = three_cameras
    for small, large in zip(detections["a"], detections["b"]):
        boxes_small, _, _ = msg_to_detections(small)
        boxes_large, _, _ = msg_to_detections(large)
        # The same picture at twice the size: boxes twice as large, up to resampling noise,
        # which the random tiny detector amplifies to 27-80 px in single boxes (seen in 4 runs;
        # why it varies between runs is not understood yet). The least-squares scale pins the
        # factor: 1 (unscaled) or 0.1 (model pixels) fail it.
        scale = float((boxes_large * boxes_small).sum() / (boxes_small**2).sum())
        assert scale == pytest.approx(2.0, rel=0.02)
        np.testing.assert_allclose(boxes_large, 2.0 * boxes_small, atol=0.1 * 1280)
        assert np.abs(boxes_large).max() > 640  # not in model-input pixels (128 x 176)


def test_cameras_keep_independent_state_same_as_separate_runs(three_cameras):
    inputs, _, detections, usage, _ = three_cameras
    for cam, frames in inputs.items():
        expected = library_run(frames)
        for got, want, used in zip(detections[cam], expected, usage[cam]):
            boxes, scores, labels = msg_to_detections(got)
            np.testing.assert_allclose(boxes, want.detections.boxes, atol=0.05)
            np.testing.assert_allclose(scores, want.detections.scores, atol=1e-4)
            assert labels == want.detections.labels
            assert used.tokens_updated == want.usage.tokens_updated
            assert used.gflops == pytest.approx(want.usage.gflops, rel=1e-6)
    assert [u.tokens_updated < u.tokens_total for u in usage["c"]] == [False] + [True] * 3


def test_compressed_transport():
    frames = video_frames(2, start=50)
    process = DetectorProcess({"model": str(tiny_yolos()), "transport": "compressed", **PARAMS})
    peer = Peer()
    try:
        detections = peer.collect(Detection2DArray, "detections")
        publisher = peer.node.create_publisher(CompressedImage, "image_raw/compressed",
                                               reliable())
        peer.wait_for_reliable_match("image_raw/compressed", process)
        sent = [rgb_to_compressed(f, image_msg(f, i).header) for i, f in enumerate(frames)]
        replies = [peer.send_and_wait(publisher, msg, detections, process) for msg in sent]
    finally:
        peer.close()
        process.assert_clean_exit()
    expected = library_run([image_to_rgb(msg) for msg in sent])
    for reply, msg, want in zip(replies, sent, expected):
        assert stamp_of(reply) == stamp_of(msg)
        np.testing.assert_allclose(msg_to_detections(reply)[0], want.detections.boxes, atol=0.05)


def test_a_camera_faster_than_the_model_builds_no_backlog():
    """A burst of frames: the node skips to the newest instead of queueing the rest."""
    frames = video_frames(3, start=200) * 5
    process = DetectorProcess({"model": str(tiny_yolos()), "score_threshold": 0.0})
    peer = Peer()
    try:
        detections = peer.collect(Detection2DArray, "detections")
        publisher = peer.node.create_publisher(Image, "image_raw", reliable(depth=len(frames)))
        peer.wait_for_reliable_match("image_raw", process)
        sent = [image_msg(frame, i) for i, frame in enumerate(frames)]
        for msg in sent:
            publisher.publish(msg)
        peer.spin_until(lambda: detections and stamp_of(detections[-1]) == stamp_of(sent[-1]),
                        60.0, "the reply to the newest frame", process)
    finally:
        peer.close()
        process.assert_clean_exit()
    answered = [stamp_of(d) for d in detections]
    assert len(answered) < len(sent)
    assert answered == sorted(answered)  # in order, each frame at most once
