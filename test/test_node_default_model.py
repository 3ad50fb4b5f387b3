"""The node on the real default detector and real video (slow on CPU: one frame per camera)."""
import cv2
import numpy as np
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from eventful_perception.msg import ComputeUsage
from eventful_perception.ros.conversions import msg_to_detections
from node_harness import DetectorProcess, Peer, image_msg, reliable, stamp_of, video_frames


def test_default_detector_finds_pedestrians_in_original_pixels_at_any_frame_size():
    frame = video_frames(1, start=100)[0]
    inputs = {"small": frame, "large": cv2.resize(frame, (1280, 960),
                                                  interpolation=cv2.INTER_CUBIC)}
    process = DetectorProcess({"model": "default", "cameras": list(inputs)})
    peer = Peer()
    try:
        replies = {cam: peer.collect(Detection2DArray, f"{cam}/detections") for cam in inputs}
        usage = {cam: peer.collect(ComputeUsage, f"{cam}/compute_usage") for cam in inputs}
        for i, (cam, image) in enumerate(inputs.items()):
            publisher = peer.node.create_publisher(Image, f"{cam}/image_raw", reliable())
            peer.wait_for_reliable_match(f"{cam}/image_raw", process, timeout=120.0)
            sent = image_msg(image, i, frame_id=cam)
            reply = peer.send_and_wait(publisher, sent, replies[cam], process, timeout=120.0)
            assert stamp_of(reply) == stamp_of(sent) and reply.header.frame_id == cam
        peer.spin_until(lambda: all(usage.values()), 30.0, "compute usage", process)
    finally:
        peer.close()
        process.assert_clean_exit()
    small, small_scores, small_labels = msg_to_detections(replies["small"][0])
    large, _, large_labels = msg_to_detections(replies["large"][0])
    assert len(small) >= 2 and set(small_labels) == {"person"}  # several pedestrians walk by
    assert small_scores.min() >= 0.5  # the default score_threshold
    assert large_labels == small_labels
    # The same picture at twice the size: the same boxes, twice as large (to a few pixels). Boxes
    # of nearly equal score may come out in either order, so match each to its nearest.
    assert len(large) == len(small)
    distance = np.abs(large[None, :, :] - 2.0 * small[:, None, :]).max(axis=2)  # (small, large)
    assert distance.min(axis=1).max() <= 8.0, distance.min(axis=1)
    assert sorted(distance.argmin(axis=1)) == list(range(len(large)))  # one-to-one
    for cam in inputs:
        [used] = usage[cam]
        assert used.tokens_updated == used.tokens_total  # a stream's first frame is exact
        assert used.gflops == used.gflops_dense > 1.0
