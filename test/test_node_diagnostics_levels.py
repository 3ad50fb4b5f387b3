"""/diagnostics levels through the real node: STALE without a publisher, ERROR while the model
raises (and back once it does not), WARN for latency p50 above the target. (Dropped frames:
test_node_stream_faults.py; battery clamp and silent publishers: test_node_diagnostics.py.)"""
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from fault_helpers import PARAMS, NodeUnderFault, running_node
from node_harness import NAMESPACE, image_msg, tiny_yolos, video_frames


def test_error_while_the_model_raises_then_ok_and_latency_above_target_warns():
    node = NodeUnderFault.faulty({})
    try:
        good = video_frames(4, size=(160, 120))
        node.send(image_msg(good[0], 0))
        node.wait_for_value("frames processed", "1")
        poison = image_msg(video_frames(1, size=(111, 83))[0], 1)
        node.publisher.publish(poison)
        error = node.wait_for_value("model errors", "1")
        recovered = node.send(image_msg(good[1], 2))
        ok = node.wait_for_value("frames processed", "2")
        [result] = node.peer.set_parameters({"target_latency_ms": 0.001})
        assert result.successful, result.reason
        for i in range(2):
            node.send(image_msg(good[2 + i], 3 + i))
        node.peer.spin_until(lambda: "latency p50" in node.status().message, 30.0,
                             "a latency warning", node.process)
        slow = node.status()
    finally:
        log = node.close()
    assert error.level == DiagnosticStatus.ERROR
    assert error.message == "model failed: injected fault: poison frame"
    assert "model failed: injected fault" in log  # logged too
    assert recovered.detections  # the next frame is processed normally...
    assert ok.level == DiagnosticStatus.OK  # ...and the error clears
    assert slow.level == DiagnosticStatus.WARN and "> target 0 ms" in slow.message


def test_stale_while_no_publisher_exists():
    with running_node({"model": str(tiny_yolos()), **PARAMS}) as (process, peer):
        arrays = peer.collect(DiagnosticArray, "/diagnostics")
        peer.spin_until(lambda: arrays, 60.0, "a status", process)
    [status] = arrays[0].status
    assert status.level == DiagnosticStatus.STALE
    assert status.message == f"waiting for a publisher on {NAMESPACE}/image_raw"
