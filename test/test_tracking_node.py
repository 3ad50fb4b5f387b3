"""The node's Detection2D.id across processes: the same track IDs as the library's StreamTracker on
the same frames (default detector, real video), a restart with the resolution, none with
`tracking: false`, and the tracking parameters validated on set."""
import numpy as np
import pytest
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

import eventful_perception
from eventful_perception.ros.conversions import msg_to_detections
from eventful_perception.tracking import UNTRACKED, StreamTracker
from node_harness import DetectorProcess, Peer, image_msg, reliable, video_frames

PARAMS = {"model": "default", "short_side": 224, "token_budget": 0.5}
SMALL = (320, 240)


def frames_and_messages():
    """6 frames at 640x480, 4 at 320x240 (the stream and its tracks restart); stamps 1 s apart."""
    frames = video_frames(6, start=100) + video_frames(4, size=SMALL, start=106)
    return frames, [image_msg(frame, i) for i, frame in enumerate(frames)]


def library_ids(frames, messages, tracking_until: int):
    """(boxes, IDs) per frame from the library: one stream, one StreamTracker, as the node."""
    model = eventful_perception.load_model("default", short_side=PARAMS["short_side"])
    stream, tracker = model.new_stream(), StreamTracker()
    out = []
    for index, (frame, msg) in enumerate(zip(frames, messages)):
        result = model(frame, stream, budget=PARAMS["token_budget"], score_threshold=0.5)
        boxes, scores = result.detections.boxes, result.detections.scores
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        ids = (tracker.update(boxes, scores, frame.shape[:2], stamp) if index < tracking_until
               else [UNTRACKED] * len(boxes))
        out.append((boxes, ids))
    return out


@pytest.fixture(scope="module")
def node_run():
    frames, messages = frames_and_messages()
    process = DetectorProcess(PARAMS)
    peer = Peer()
    try:
        replies = peer.collect(Detection2DArray, "detections")
        publisher = peer.node.create_publisher(Image, "image_raw", reliable())
        peer.wait_for_reliable_match("image_raw", process, timeout=120.0)
        answers = [peer.send_and_wait(publisher, msg, replies, process, timeout=120.0)
                   for msg in messages[:-1]]
        [off] = peer.set_parameters({"tracking": False})
        rejected = peer.set_parameters({"tracking_matching_threshold": 1.5,
                                        "tracking_lost_frames": 0})
        answers.append(peer.send_and_wait(publisher, messages[-1], replies, process,
                                          timeout=120.0))
    finally:
        peer.close()
        process.assert_clean_exit()
    return frames, messages, answers, off, rejected


def test_node_publishes_the_library_track_ids(node_run):
    frames, messages, answers, off, _ = node_run
    assert off.successful
    expected = library_ids(frames, messages, tracking_until=len(frames) - 1)
    for index, (answer, (boxes, ids)) in enumerate(zip(answers, expected)):
        got_boxes = msg_to_detections(answer)[0]
        got_ids = [detection.id for detection in answer.detections]
        assert len(got_boxes) == len(boxes), index
        # Pair node and library detections by box (near-equal scores may swap their order).
        distance = np.abs(got_boxes[:, None, :] - boxes[None, :, :]).max(axis=2)  # (node, lib)
        pairs = distance.argmin(axis=1)
        assert sorted(pairs) == list(range(len(boxes))) and distance.min(axis=1).max() < 0.5
        assert got_ids == [ids[j] for j in pairs], f"frame {index}"
    # What makes the comparison mean something (each rules out a wrong node):
    lib = [ids for _, ids in expected]
    assert all(lib[0]) and len(lib[0]) >= 2  # tracking on: IDs are published
    by_order = [[str(i + 1) for i in range(len(ids))] for ids in lib]
    assert any(ids != order for ids, order in zip(lib[1:6], by_order[1:6]))  # not the index
    persistent = set.intersection(*(set(ids) for ids in lib[:6])) - {UNTRACKED}
    assert persistent  # some pedestrian keeps its ID over all six frames
    # At the resolution change the tracks restart: every object gets an ID at once, from 1.
    assert sorted(lib[6], key=int) == [str(i + 1) for i in range(len(lib[6]))] and lib[6]
    assert lib[-1] and set(lib[-1]) == {UNTRACKED}  # tracking: false


def test_tracking_parameters_are_validated_on_set(node_run):
    rejected = node_run[4]
    assert [r.successful for r in rejected] == [False, False]
    assert all(r.reason for r in rejected)
