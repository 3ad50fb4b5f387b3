"""/diagnostics: one status per camera with the documented key-values and levels."""

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import BatteryState, Image
from std_msgs.msg import Float32

from eventful_perception.ros.budget import BudgetDecision
from eventful_perception.ros.diagnostics import CameraStats, Context, FrameReport
from eventful_perception.ros.system_load import Battery, CpuLoad
from node_harness import (NAMESPACE, DetectorProcess, Peer, image_msg, reliable, tiny_yolos,
                          video_frames)
from rclpy.qos import qos_profile_sensor_data

KEYS = ("fps in", "fps out", "frames received", "frames processed",
        "frames dropped (newest kept)", "inputs rejected", "latency p50 ms", "latency p95 ms",
        "budget requested", "budget effective", "budget reason", "tokens updated",
        "tokens total", "gflops", "gflops dense", "gflops savings vs dense", "battery",
        "cpu load", "image publishers", "image publishers matched", "image qos")


def latest_status(arrays: list, camera: str) -> DiagnosticStatus | None:
    for array in reversed(arrays):
        for status in array.status:
            if (status.hardware_id == f"{NAMESPACE}/eventful_detector"
                    and status.name == f"eventful_detector: {camera}"):
                return status
    return None


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture(scope="module")
def diagnostics():
    """front: frames on a low battery plus one undecodable image; rear: a publisher with
    incompatible QoS; side: a publisher that never sends a frame."""
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128,
                               "cameras": ["front", "rear", "side"], "image_qos": "reliable",
                               "budget_mode": "adaptive", "target_latency_ms": 5000.0})
    peer = Peer()
    try:
        arrays = peer.collect(DiagnosticArray, "/diagnostics")
        front = peer.node.create_publisher(Image, "front/image_raw", reliable())
        peer.node.create_publisher(Image, "rear/image_raw", qos_profile_sensor_data)
        peer.node.create_publisher(Image, "side/image_raw", reliable())
        battery = peer.node.create_publisher(BatteryState, "battery_state", 10)
        cpu = peer.node.create_publisher(Float32, "cpu_load", 10)
        detections = peer.collect(Image, "front/detection_image")
        peer.wait_for_reliable_match("front/image_raw", process)
        peer.wait_for_subscriber(battery, process)
        peer.wait_for_subscriber(cpu, process)

        def reports_arrived() -> bool:
            shown = [values(s) for a in arrays for s in a.status
                     if s.hardware_id == f"{NAMESPACE}/eventful_detector"]
            return (any(v.get("battery") == "10%" for v in shown)
                    and any(v.get("cpu load") == "0.20 (topic)" for v in shown))
        for i, frame in enumerate(video_frames(4)):
            battery.publish(BatteryState(
                percentage=0.1, power_supply_status=BatteryState.POWER_SUPPLY_STATUS_DISCHARGING))
            cpu.publish(Float32(data=0.2))
            # Reports and frames travel on different topics, which DDS does not order, and a lost
            # report is resent only at the next heartbeat, seconds later: send the frames once
            # the node's diagnostics show it has the reports.
            peer.spin_until(reports_arrived, 30.0, "diagnostics showing the reports", process)
            peer.send_and_wait(front, image_msg(frame, i), detections, process)
        broken = image_msg(frame, 99)
        broken.encoding = "not_an_encoding"
        front.publish(broken)

        def settled() -> bool:
            """The rejection counted, and a later period's status no longer warns about it."""
            side = latest_status(arrays, "side")
            front_status = latest_status(arrays, "front")
            return (side is not None and side.level == DiagnosticStatus.WARN
                    and front_status is not None
                    and values(front_status).get("inputs rejected") == "1"
                    and "inputs rejected" not in front_status.message)
        peer.spin_until(settled, 30.0, "diagnostics of all cameras", process)
    finally:
        peer.close()
        log = process.assert_clean_exit()
    yield arrays, detections, log


def test_every_camera_has_a_status_with_the_documented_keys(diagnostics):
    arrays, _, _ = diagnostics
    front = latest_status(arrays, "front")
    assert set(KEYS) <= set(values(front)), sorted(set(KEYS) - set(values(front)))
    assert values(front)["frames processed"] == "4"
    assert values(front)["battery"] == "10%"
    cpu_reports = {values(s).get("cpu load") for a in arrays for s in a.status}
    assert "0.20 (topic)" in cpu_reports  # later ones may come from psutil: the topic went quiet
    assert values(front)["image qos"] == "reliable"
    assert int(values(front)["tokens updated"]) < int(values(front)["tokens total"])
    assert float(values(front)["latency p95 ms"]) >= float(values(front)["latency p50 ms"]) > 0
    assert latest_status(arrays, "rear") is not None


def test_front_warns_about_battery_clamp_and_rejected_input(diagnostics):
    arrays, _, _ = diagnostics
    front = [s for a in arrays for s in a.status if s.name == "eventful_detector: front"
             and s.hardware_id == f"{NAMESPACE}/eventful_detector"]
    assert "battery 10% < 20%" in values(front[-1])["budget reason"]
    assert any(s.level == DiagnosticStatus.WARN
               and "budget clamped: battery 10% < 20%" in s.message for s in front)
    # Warnings describe the last period: the rejected frame shows in exactly one status.
    rejected = [s for s in front if "1 inputs rejected" in s.message]
    assert len(rejected) == 1 and "not_an_encoding" in rejected[0].message
    assert rejected[0].level == DiagnosticStatus.WARN


def test_publishers_whose_frames_never_arrive_are_reported(diagnostics):
    arrays, _, log = diagnostics
    rear, side = latest_status(arrays, "rear"), latest_status(arrays, "side")
    assert rear.level == DiagnosticStatus.WARN
    assert "incompatible" in rear.message and "RELIABILITY" in rear.message
    # The graph shows rear's publisher; the subscription cannot match it.
    assert (values(rear)["image publishers"], values(rear)["image publishers matched"]) == ("1", "0")
    assert values(side)["image publishers matched"] == "1"
    assert side.level == DiagnosticStatus.WARN
    assert "1 publisher(s) on" in side.message and "no frame received" in side.message
    assert "fastdds_large_data.xml" in side.message
    assert "incompatible" in log and "no frame received" in log  # said in the log too


def test_detection_image_is_published_while_subscribed(diagnostics):
    _, images, _ = diagnostics
    assert images and (images[0].width, images[0].height, images[0].encoding) == (640, 480,
                                                                                  "rgb8")


def test_cpu_load_comes_from_the_topic_then_from_psutil_when_it_goes_quiet():
    load = CpuLoad(timeout_s=3.0)
    assert load.current(100.0) == (None, "psutil")  # nothing measured yet
    load.report(1.7, now=100.0)
    assert load.current(102.9) == (1.0, "topic")  # clamped to 0-1
    load.measure()
    value, source = load.current(103.1)
    assert source == "psutil" and 0.0 <= value <= 1.0


def test_measured_cpu_load_leaves_out_the_detectors_own_work():
    """A controlled load source: the machine's load minus this process's share of it."""
    samples = iter([(0.9, 0.6), (0.6, 0.6), (0.2, 0.0), (1.0, 0.0)])
    load = CpuLoad(sample=lambda: next(samples))
    measured = []
    for _ in range(4):
        load.measure()
        measured.append(load.current(0.0))
    # other processes' load only: busy with the detector alone reads 0, not 0.6
    assert measured == [(pytest.approx(0.3), "psutil"), (0.0, "psutil"), (0.2, "psutil"),
                        (1.0, "psutil")]


def test_psutil_sampler_reports_fractions():
    load = CpuLoad()
    load.measure()
    value, source = load.current(0.0)
    assert source == "psutil" and 0.0 <= value <= 1.0


def test_battery_report_unknown_and_charging():
    assert Battery.from_report(float("nan"), 2) == Battery(None, False)
    assert Battery.from_report(0.18, 1).describe() == "18% charging"
    assert Battery.from_report(0.5, 4).charging and not Battery.from_report(0.5, 3).charging


def report(**overrides) -> FrameReport:
    fields = dict(latency_ms=40.0, decision=BudgetDecision(0.5, 0.5, "fixed"),
                  tokens_updated=50, tokens_total=100, gflops=1.0, gflops_dense=4.0,
                  detections=2)
    fields.update(overrides)
    return FrameReport(**fields)


CONTEXT = Context(hardware_id="/eventful_detector", topic="/image_raw", publishers=1, matched=1,
                  qos="reliable", target_latency_ms=0.0, battery="unknown", cpu_load="0.10")


def test_status_levels_ok_warn_error_stale():
    stats = CameraStats("")
    idle = stats.status(Context(**{**CONTEXT.__dict__, "publishers": 0}), 1.0)
    assert idle.level == DiagnosticStatus.STALE and "waiting for a publisher" in idle.message
    stats.count("in")
    stats.processed(report())
    ok = stats.status(CONTEXT, 1.0)
    assert ok.level == DiagnosticStatus.OK and ok.name == "eventful_detector: camera"
    assert values(ok)["gflops savings vs dense"] == "75%" and values(ok)["fps out"] == "1.0"
    stats.count("in")
    stats.count("dropped")
    slow = stats.status(Context(**{**CONTEXT.__dict__, "target_latency_ms": 20.0}), 1.0)
    assert slow.level == DiagnosticStatus.WARN
    assert "1 frames dropped" in slow.message and "latency p50 40 ms > target 20 ms" in slow.message
    assert stats.status(CONTEXT, 1.0).level == DiagnosticStatus.OK  # counts are per period
    stats.failed("CUDA out of memory")
    failed = stats.status(CONTEXT, 1.0)
    assert failed.level == DiagnosticStatus.ERROR and "CUDA out of memory" in failed.message
    stats.processed(report())
    assert stats.status(CONTEXT, 1.0).level == DiagnosticStatus.OK


def test_exit_rates_per_stage_only_with_granularity_adaptive():
    stats = CameraStats("")
    stats.processed(report())
    fixed = values(stats.status(CONTEXT, 1.0))
    assert not any(key.startswith(("stage", "exit rate")) for key in fixed)
    stats.processed(report(stage=1, short_side=336,
                           exit_rates=((224, 0.625), (336, 0.25), (448, 0.125))))
    shown = values(stats.status(CONTEXT, 1.0))
    assert shown["stage"] == "1 (336)"
    assert [shown[f"exit rate stage {k} ({side})"] for k, side in enumerate((224, 336, 448))] == [
        "0.625", "0.250", "0.125"]
