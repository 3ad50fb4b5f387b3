"""granularity adaptive through the real node: the stage in ComputeUsage follows the camera
(still -> finest stage, gated; panning -> coarsest stage, dense), the exit rates per stage in
/diagnostics, switching granularity at run time, and rejected values.

The exit thresholds file is written here with every threshold 0.0: any confidence passes, so a
frame exits at the first stage it runs and the stage depends on the controller's law alone
(motion unknown or moving -> stage 0; still -> the finest stage), not on the random model's
scores.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from eventful_perception import clips
from eventful_perception.msg import ComputeUsage
from node_harness import (NAMESPACE, DetectorProcess, Peer, image_msg, reliable, tiny_yolos,
                          video_frames)

SHORT_SIDES = (64, 96, 128)
STILL, PANNING = 6, 8
WIDTH, STEP = 560, 8  # a 560 px window of the 640x480 frames, panning 8 px/frame (2.1 finest px)


def thresholds_file(path, short_sides=SHORT_SIDES, thresholds=(0.0, 0.0)):
    """Write a `fit-exits`-style JSON with `thresholds` for budget 0.5 (used for every budget),
    and the ladder used at every budget on a moving camera (`ladder_below` 1.0)."""
    path.write_text(json.dumps({"short_sides": list(short_sides), "score_low": 0.1, "ladder_below": 1.0,
                                "exit_thresholds": {"0.5": list(thresholds)}}))
    return path


@dataclass
class Running:
    """The node process, the test's peer, its image publisher and what the node published."""

    process: DetectorProcess
    peer: Peer
    publisher: Any
    usage: list
    diagnostics: list
    images: list  # detection_image, drawn (with the stage) while subscribed
    folder: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """The node in granularity adaptive with the thresholds 0.0 file."""
    folder = tmp_path_factory.mktemp("granularity")
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128,
                               "image_qos": "reliable", "token_budget": 0.5,
                               "granularity": "adaptive",
                               "exit_thresholds_file": str(thresholds_file(folder / "exits.json"))})
    peer = Peer()
    try:
        node = Running(process, peer, peer.node.create_publisher(Image, "image_raw", reliable()),
                       peer.collect(ComputeUsage, "compute_usage"),
                       peer.collect(DiagnosticArray, "/diagnostics"),
                       peer.collect(Image, "detection_image"), folder)
        peer.wait_for_reliable_match("image_raw", process)
        yield node
    finally:
        peer.close()
        process.assert_clean_exit()


@pytest.fixture(scope="module")
def still_then_panning(running):
    """ComputeUsage of STILL frames from a still camera, then PANNING frames of it panning."""
    frames = video_frames(STILL + PANNING)
    clip = [*clips.panning(frames[:STILL], WIDTH, 0), *clips.panning(frames[STILL:], WIDTH, STEP)]
    return [running.peer.send_and_wait(running.publisher, image_msg(frame, i), running.usage,
                                       running.process) for i, frame in enumerate(clip)]


def test_stage_changes_when_the_camera_starts_panning(still_then_panning):
    sent = still_then_panning
    stages = [u.stage for u in sent]
    # Frame 0: no motion known yet -> the ladder from stage 0. The first panning crop is still
    # at offset 0, as the still camera's: it moved with the next frame.
    assert stages == [0] + [2] * (STILL - 1) + [2] + [0] * (PANNING - 1), stages
    assert [u.short_side for u in sent] == [SHORT_SIDES[s] for s in stages]
    assert all(u.stages_run == 1 for u in sent)  # thresholds 0.0: the first stage run exits
    still, panning = sent[1:STILL], sent[STILL + 1:]
    assert still[0].tokens_updated == still[0].tokens_total  # the finest stream's first frame
    assert all(u.tokens_updated < u.tokens_total for u in still[1:])  # gated at token_budget
    assert all(u.tokens_updated == u.tokens_total for u in panning)  # moving: dense
    assert panning[0].tokens_total < still[0].tokens_total  # coarser stage, fewer tokens
    # gflops_dense is the finest stage's dense pass whichever stage ran
    assert panning[-1].gflops < still[0].gflops_dense == pytest.approx(panning[-1].gflops_dense)


def test_diagnostics_report_the_exit_rate_per_stage(running, still_then_panning):
    frames = len(still_then_panning)

    def status():
        for array in reversed(running.diagnostics):
            for s in array.status:
                values = {kv.key: kv.value for kv in s.values}
                if (s.hardware_id == f"{NAMESPACE}/eventful_detector"
                        and values.get("frames processed") == str(frames)):
                    return values
        return None
    running.peer.spin_until(lambda: status() is not None, 30.0, "diagnostics after the clip",
                            running.process)
    values = status()
    counts = [sum(u.stage == k for u in still_then_panning) for k in range(len(SHORT_SIDES))]
    assert counts == [PANNING, 0, STILL]
    for k, side in enumerate(SHORT_SIDES):
        assert values[f"exit rate stage {k} ({side})"] == f"{counts[k] / frames:.3f}"
    assert values["stage"] == "0 (64)" and values["tokens total"] == str(
        still_then_panning[-1].tokens_total)
    # the overlay (with its stage line) was drawn in adaptive mode; the first frames may have
    # come before the node discovered the subscription
    running.peer.spin_until(lambda: running.images, 30.0, "an overlay", running.process)


def test_switching_granularity_starts_the_camera_over(running, still_then_panning):
    frame = video_frames(1, start=50)[0]
    index = iter(range(100, 200))

    def send(**values) -> ComputeUsage:
        results = running.peer.set_parameters(values) if values else []
        assert all(r.successful for r in results), [r.reason for r in results]
        return running.peer.send_and_wait(running.publisher, image_msg(frame, next(index)),
                                          running.usage, running.process)

    send()
    still = send()  # the same frame again: no motion
    assert still.stage == 2
    fixed = [send(granularity="fixed"), send()]
    assert [(u.stage, u.stages_run, u.short_side) for u in fixed] == [(0, 1, 128)] * 2
    assert fixed[0].tokens_updated == fixed[0].tokens_total > fixed[1].tokens_updated
    # A fresh ladder state knows no motion yet: stage 0, where the old one would see a still
    # camera and pick the finest stage.
    again = send(granularity="adaptive")
    assert (again.stage, again.short_side) == (0, 64)
    assert send().stage == 2


@pytest.mark.parametrize("values, reason", [
    ({"granularity": "coarse"}, "granularity must be one of fixed, adaptive"),
    ({"policy": "threshold"}, "needs policy top_r"),
    ({"score_threshold": 0.05}, "needs score_threshold above the exit thresholds file's "
                                "score_low 0.1"),
    ({"exit_thresholds_file": "/no/such/thresholds.json"},
     "exit thresholds file /no/such/thresholds.json"),
])
def test_bad_granularity_values_are_rejected_with_a_reason(running, values, reason):
    [result] = running.peer.set_parameters(values)
    assert not result.successful
    assert reason in result.reason


def test_thresholds_file_that_does_not_fit_its_stages_is_rejected(running):
    bad = thresholds_file(running.folder / "short.json", thresholds=(0.0,))  # 3 stages need 2
    [result] = running.peer.set_parameters({"exit_thresholds_file": str(bad)})
    assert not result.successful
    assert f"exit thresholds file {bad}" in result.reason and "expected 2 exit thresholds" in (
        result.reason)


def test_thresholds_file_whose_feature_reuse_does_not_fit_the_model_is_rejected(running):
    """The shipped reuse modules are the default detector's (width 384, 12 layers); the node's
    tiny model has width 32 and 2 layers: rejected at set time, not at the next frame."""
    other = running.folder / "reuse.json"
    written = json.loads(thresholds_file(other, short_sides=(224, 336, 448)).read_text())
    other.write_text(json.dumps(written | {"reuse": "default"}))
    [result] = running.peer.set_parameters({"exit_thresholds_file": str(other)})
    assert not result.successful
    assert "trained for width 384 and 12 layers, the model has 32 and 2" in result.reason


def test_invalid_granularity_at_start_up_stops_the_node_with_one_clear_line():
    process = DetectorProcess({"model": str(tiny_yolos()), "granularity": "adaptive",
                               "exit_thresholds_file": "/no/such/thresholds.json"})
    process.proc.wait(timeout=60)
    code, out = process.stop()
    assert code == 1
    assert "cannot start: exit thresholds file /no/such/thresholds.json" in out
    assert "Traceback" not in out
