"""The node's parameters through its real services, as `ros2 param set/describe` use them."""
import pytest
import yaml
from rcl_interfaces.srv import DescribeParameters, GetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from eventful_perception.msg import ComputeUsage
from eventful_perception.ros.params import TABLE
from eventful_perception.ros.qos import describe, subscription_qos
from fault_helpers import running_node
from node_harness import (NAMESPACE, DetectorProcess, Peer, image_msg, reliable, tiny_yolos,
                          video_frames)
from ros_helpers import REPO

PARAMS_FILE = REPO / "config" / "params.yaml"


@pytest.fixture(scope="module")
def running():
    with running_node({"model": str(tiny_yolos()), "short_side": 128},
                      params_file=PARAMS_FILE) as running:
        yield running


def call(peer: Peer, srv_type, name: str, request, process):
    return peer.call(srv_type, f"eventful_detector/{name}", request, process=process)


def get(peer: Peer, process, *names: str) -> list:
    response = call(peer, GetParameters, "get_parameters", GetParameters.Request(names=names),
                    process)
    return response.values


def test_token_budget_set_is_accepted_in_range_and_rejected_out_of_range(running):
    process, peer = running
    [accepted] = peer.set_parameters({"token_budget": 0.3})
    assert accepted.successful, accepted.reason
    [rejected] = peer.set_parameters({"token_budget": 1.5})
    assert not rejected.successful
    assert "token_budget" in rejected.reason and "out of range" in rejected.reason
    [value] = get(peer, process, "token_budget")
    assert value.double_value == pytest.approx(0.3)


@pytest.mark.parametrize("values, reason", [
    ({"budget_mode": "turbo"}, "budget_mode must be one of fixed, adaptive"),
    ({"policy": "random"}, "policy must be one of top_r, threshold"),
    ({"battery_critical": 0.5}, "need 0 <= battery_critical < battery_low <= 1"),
    ({"cpu_load_high": 1.0}, "need 0 <= cpu_load_high < cpu_load_critical <= 1"),
    ({"model": "other"}, "read-only"),
    ({"token_budget": "high"}, "Wrong parameter type"),
    ({"min_budget": 0.0}, "min_budget out of range"),
    ({"granularity": "coarse"}, "granularity must be one of fixed, adaptive"),
])
def test_invalid_values_are_rejected_with_a_reason(running, values, reason):
    _, peer = running
    [result] = peer.set_parameters(values)
    assert not result.successful
    assert reason in result.reason


def test_shipped_params_file_lists_every_parameter_with_its_default():
    values = yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]
    assert values == {spec.name: spec.default for spec in TABLE}


def test_node_runs_on_the_shipped_params_file(running):
    process, peer = running
    names = ["budget_mode", "image_qos", "cameras", "model"]
    got = get(peer, process, *names)
    assert [got[0].string_value, got[1].string_value, list(got[2].string_array_value)] == [
        "fixed", "auto", [""]]
    assert got[3].string_value == str(tiny_yolos())  # the command line overrides the file


def test_every_parameter_is_described_with_range_and_read_only_flag(running):
    process, peer = running
    names = [spec.name for spec in TABLE]
    response = call(peer, DescribeParameters, "describe_parameters",
                    DescribeParameters.Request(names=names), process)
    described = {d.name: d for d in response.descriptors}
    assert set(described) == set(names)
    assert all(d.description for d in described.values())
    budget = described["token_budget"].floating_point_range[0]
    assert (budget.from_value, budget.to_value) == (0.02, 1.0)
    assert described["model"].read_only and described["cameras"].read_only
    assert not described["token_budget"].read_only
    assert "fixed, adaptive" in described["budget_mode"].additional_constraints


def test_token_budget_change_shows_in_the_next_compute_usage(running):
    process, peer = running
    usage = peer.collect(ComputeUsage, "compute_usage")
    publisher = peer.node.create_publisher(Image, "image_raw", reliable())
    peer.wait_for_reliable_match("image_raw", process)
    frames = iter(video_frames(5))
    index = iter(range(100))

    def tokens_at(budget: float) -> ComputeUsage:
        [result] = peer.set_parameters({"token_budget": budget})
        assert result.successful, result.reason
        return peer.send_and_wait(publisher, image_msg(next(frames), next(index)), usage, process)

    first = tokens_at(0.5)
    assert first.tokens_updated == first.tokens_total  # a new stream computes every token
    half, low, full = tokens_at(0.5), tokens_at(0.1), tokens_at(1.0)
    total = half.tokens_total
    assert low.tokens_updated < half.tokens_updated < full.tokens_updated == total
    assert (half.budget_requested, low.budget_requested) == (0.5, pytest.approx(0.1))
    assert half.budget_effective == 0.5 and half.budget_reason == "fixed"
    # granularity fixed: one stage at the short_side parameter
    assert (half.stage, half.stages_run, half.short_side) == (0, 1, 128)
    peer.node.destroy_publisher(publisher)


def test_policy_threshold_refresh_interval_and_score_priority_apply_at_the_next_frame(running):
    process, peer = running
    usage = peer.collect(ComputeUsage, "compute_usage")
    publisher = peer.node.create_publisher(Image, "image_raw", reliable())
    peer.wait_for_reliable_match("image_raw", process)
    frames = iter(video_frames(12, start=400))
    index = iter(range(200, 300))

    def frame(**values) -> ComputeUsage:
        results = peer.set_parameters(values) if values else []
        assert all(r.successful for r in results), [r.reason for r in results]
        return peer.send_and_wait(publisher, image_msg(next(frames), next(index)), usage, process)

    frame(token_budget=0.5)
    strict = frame(policy="threshold", threshold=1000.0)  # no token changes that much
    loose = frame(threshold=0.0)  # every changed token
    assert strict.tokens_updated == 11  # only the always-computed class + 10 detection tokens
    assert loose.tokens_updated == loose.tokens_total
    total = strict.tokens_total
    assert frame(policy="top_r", refresh_interval=2).tokens_updated == total  # new stream
    updated = [frame().tokens_updated for _ in range(3)]
    assert updated[1] == total and updated[0] == updated[2] < total  # full every 2nd frame
    peer.set_parameters({"refresh_interval": 0})
    frame()
    assert frame().tokens_updated < total
    assert frame(score_priority=0.0).tokens_updated == total  # a new stream with the new gating
    peer.node.destroy_publisher(publisher)


@pytest.mark.parametrize("params, message", [
    ({"token_budget": 3.0}, "token_budget out of range"),
    ({"cameras": ["front", "front"]}, "camera names must be unique"),
    ({"model": "/nonexistent/checkpoint"}, "is not a checkpoint folder"),
])
def test_invalid_start_up_parameters_stop_the_node_with_one_clear_line(params, message):
    process = DetectorProcess(params)
    process.proc.wait(timeout=60)
    code, out = process.stop()
    assert code == 1
    assert "cannot start: " in out and message in out and "Traceback" not in out


def test_image_qos_auto_matches_publishers_like_rosbag2():
    reliable_pub, best_effort = reliable(), qos_profile_sensor_data
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    assert describe(subscription_qos("auto", [])) == "best_effort"
    assert describe(subscription_qos("auto", [reliable_pub])) == "reliable"
    assert describe(subscription_qos("auto", [reliable_pub, best_effort])) == "best_effort"
    assert describe(subscription_qos("auto", [latched])) == "reliable, transient_local"
    assert describe(subscription_qos("sensor_data", [reliable_pub])) == "best_effort"
    assert describe(subscription_qos("reliable", [best_effort])) == "reliable"
    assert subscription_qos("auto", [reliable_pub]).depth == 1  # newest frame only


def test_image_qos_auto_rematches_when_the_publishers_change(running):
    process, peer = running
    full = f"{NAMESPACE}/image_raw"

    def node_subscription(reliability) -> bool:
        return any(i.qos_profile.reliability == reliability
                   for i in peer.node.get_subscriptions_info_by_topic(full)
                   if i.node_name == "eventful_detector")

    publisher = peer.node.create_publisher(Image, "image_raw", reliable())
    peer.spin_until(lambda: node_subscription(ReliabilityPolicy.RELIABLE), 30.0,
                    "a reliable subscription", process)
    peer.node.destroy_publisher(publisher)
    publisher = peer.node.create_publisher(Image, "image_raw", qos_profile_sensor_data)
    peer.spin_until(lambda: node_subscription(ReliabilityPolicy.BEST_EFFORT), 30.0,
                    "a best-effort subscription after the publisher changed", process)
    peer.node.destroy_publisher(publisher)
    assert "(Image, best_effort; image_qos=auto" in process.output()  # and it says so
