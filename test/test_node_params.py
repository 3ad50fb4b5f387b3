"""The node's parameters through its real services, as `ros2 param set/describe` use them."""
import pytest
from rcl_interfaces.srv import DescribeParameters, GetParameters
from sensor_msgs.msg import Image

from eventful_perception.msg import ComputeUsage
from eventful_perception.ros.params import TABLE
from node_harness import DetectorProcess, Peer, image_msg, reliable, tiny_yolos, video_frames


@pytest.fixture(scope="module")
def running():
    process = DetectorProcess({"model": str(tiny_yolos()), "short_side": 128})
    peer = Peer()
    try:
        yield process, peer
    finally:
        peer.close()
        process.assert_clean_exit()


def call(peer: Peer, srv_type, name: str, request, process):
    client = peer.node.create_client(srv_type, f"eventful_detector/{name}")
    peer.spin_until(client.service_is_ready, 60.0, f"{name} service", process)
    future = client.call_async(request)
    peer.spin_until(future.done, 20.0, f"{name} response", process)
    peer.node.destroy_client(client)
    return future.result()


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
])
def test_invalid_values_are_rejected_with_a_reason(running, values, reason):
    _, peer = running
    [result] = peer.set_parameters(values)
    assert not result.successful
    assert reason in result.reason


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
    peer.node.destroy_publisher(publisher)
