"""The managed (lifecycle) node, driven through its lifecycle services as `ros2 lifecycle set`
does: the model loads on configure, image subscriptions exist only while active, cleanup
releases the model, and a failed configure leaves the node alive and unconfigured."""
from __future__ import annotations

import time

import psutil
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from node_harness import (NAMESPACE, DetectorProcess, Peer, image_msg, reliable, tiny_yolos,
                          video_frames)

INACTIVE_WINDOW_S = 3.0
WARM_UP_TRIES = 10


class Lifecycle:
    """Client side of the node's lifecycle services."""

    def __init__(self, peer: Peer, process: DetectorProcess) -> None:
        self.peer, self.process = peer, process
        self.change = peer.node.create_client(ChangeState, "eventful_detector/change_state")
        self.get = peer.node.create_client(GetState, "eventful_detector/get_state")
        # A server can answer before it has matched the client's response reader, and that
        # answer is lost ("failed to send response"): warm both up with requests that change
        # nothing (a transition label that does not exist), repeated until one is answered.
        for client, request in ((self.get, GetState.Request()), (self.change, ChangeState.Request(
                transition=Transition(label="no_such_transition")))):
            peer.spin_until(client.service_is_ready, 120.0, client.srv_name, process)
            for _ in range(WARM_UP_TRIES):
                if self.call(client, request, timeout=5.0) is not None:
                    break

    def call(self, client, request, timeout: float = 120.0):
        """The response, or None when none came within `timeout`."""
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        self.peer.spin_until(lambda: future.done() or time.monotonic() > deadline, timeout + 1,
                             f"{client.srv_name} response", self.process)
        if not future.done():
            client.remove_pending_request(future)
            return None
        return future.result()

    def state(self) -> str:
        return self.call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.call(self.change, request).success


def node_subscribes(peer: Peer, topic: str) -> bool:
    return any(i.node_name == "eventful_detector"
               for i in peer.node.get_subscriptions_info_by_topic(f"{NAMESPACE}/{topic}"))


def node_publishes(peer: Peer, topic: str) -> bool:
    return any(i.node_name == "eventful_detector"
               for i in peer.node.get_publishers_info_by_topic(f"{NAMESPACE}/{topic}"))


def test_lifecycle_transitions_load_subscribe_unsubscribe_and_release():
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128,
                               "managed": True, "image_qos": "reliable"})
    peer = Peer()
    try:
        life = Lifecycle(peer, process)
        detections = peer.collect(Detection2DArray, "detections")
        camera = peer.node.create_publisher(Image, "image_raw", reliable())
        frames = video_frames(3, size=(160, 120))
        assert life.state() == "unconfigured" and "loading model" not in process.output()
        assert not node_publishes(peer, "detections") and not node_subscribes(peer, "image_raw")

        assert life.transition(Transition.TRANSITION_CONFIGURE)
        assert life.state() == "inactive" and "loading model" in process.output()
        peer.spin_until(lambda: node_publishes(peer, "detections"), 30.0, "outputs", process)
        cpu_before = psutil.Process(process.proc.pid).cpu_times()
        deadline = time.monotonic() + INACTIVE_WINDOW_S
        peer.spin_until(lambda: time.monotonic() > deadline, 10.0, "the inactive window")
        cpu_after = psutil.Process(process.proc.pid).cpu_times()
        assert not node_subscribes(peer, "image_raw") and camera.get_subscription_count() == 0

        assert life.transition(Transition.TRANSITION_ACTIVATE) and life.state() == "active"
        peer.wait_for_reliable_match("image_raw", process)
        reply = peer.send_and_wait(camera, image_msg(frames[0], 0), detections, process)
        assert reply.detections

        assert life.transition(Transition.TRANSITION_DEACTIVATE) and life.state() == "inactive"
        peer.spin_until(lambda: not node_subscribes(peer, "image_raw"), 30.0,
                        "the image subscription to go", process)
        assert node_publishes(peer, "detections")  # outputs stay until cleanup

        assert life.transition(Transition.TRANSITION_CLEANUP) and life.state() == "unconfigured"
        assert "model released" in process.output()
        peer.spin_until(lambda: not node_publishes(peer, "detections"), 30.0,
                        "the outputs to go", process)

        # And back: configure loads the model again, activate processes frames again.
        assert life.transition(Transition.TRANSITION_CONFIGURE)
        assert life.transition(Transition.TRANSITION_ACTIVATE)
        peer.wait_for_reliable_match("image_raw", process)
        peer.send_and_wait(camera, image_msg(frames[1], 1), detections, process)
        assert process.output().count("loading model") == 2
    finally:
        peer.close()
        process.assert_clean_exit()
    busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    print(f"configured but inactive: {busy:.3f} s of CPU in {INACTIVE_WINDOW_S:.0f} s")
    assert busy < 0.1 * INACTIVE_WINDOW_S, busy  # configured but inactive: next to nothing


def test_a_failed_configure_leaves_the_node_alive_and_unconfigured(tmp_path):
    process = DetectorProcess({"model": str(tmp_path / "missing"), "managed": True})
    peer = Peer()
    try:
        life = Lifecycle(peer, process)
        assert not life.transition(Transition.TRANSITION_CONFIGURE)
        assert life.state() == "unconfigured"
        assert "configure failed: cannot load model" in process.output()
    finally:
        peer.close()
        out = process.assert_clean_exit()
    assert "Traceback" not in out
