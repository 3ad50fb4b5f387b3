"""Adaptive budget across processes: battery, CPU load and latency target steer the budget."""
import itertools

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import BatteryState, Image
from std_msgs.msg import Float32

from eventful_perception.msg import ComputeUsage
from eventful_perception.ros.system_load import Battery
from node_harness import (DetectorProcess, Peer, image_msg, node_values, reliable, tiny_yolos,
                          video_frames)

REQUESTED = 0.8


class Robot:
    """Publishes camera frames together with battery and CPU-load reports, one frame at a time."""

    def __init__(self, peer: Peer, process: DetectorProcess) -> None:
        self.peer, self.process = peer, process
        self.usage = peer.collect(ComputeUsage, "compute_usage")
        self.diagnostics = peer.collect(DiagnosticArray, "/diagnostics")
        self.images = peer.node.create_publisher(Image, "image_raw", reliable())
        self.battery = peer.node.create_publisher(BatteryState, "battery_state", 10)
        self.cpu = peer.node.create_publisher(Float32, "cpu_load", 10)
        self.frames = itertools.cycle(video_frames(6))
        self.index = itertools.count()
        self.state = (float("nan"), BatteryState.POWER_SUPPLY_STATUS_UNKNOWN, 0.1)
        self.shown = ("", "")  # battery and cpu load last seen in the node's diagnostics
        peer.wait_for_reliable_match("image_raw", process)
        # Reports sent before the node matched them would be lost: the node would fall back to
        # measuring this (busy) machine's CPU load itself.
        peer.wait_for_subscriber(self.battery, process)
        peer.wait_for_subscriber(self.cpu, process)

    def frame(self) -> ComputeUsage:
        percentage, status, load = self.state
        self.battery.publish(BatteryState(percentage=percentage, power_supply_status=status))
        self.cpu.publish(Float32(data=load))
        expected = (Battery.from_report(percentage, status).describe(), f"{load:.2f} (topic)")
        if expected != self.shown:
            # Reports and frames travel on different topics, which DDS does not order, and a lost
            # report is resent only at the next heartbeat, seconds later, when `until` may have
            # sent all its frames: after a change, send frames once the node's diagnostics show it.
            since = len(self.diagnostics)
            self.peer.spin_until(lambda: self.diagnostics_show(since, *expected), 30.0,
                                 f"diagnostics showing battery {expected[0]}, cpu load "
                                 f"{expected[1]}", self.process)
            self.shown = expected
        msg = image_msg(next(self.frames), next(self.index))
        return self.peer.send_and_wait(self.images, msg, self.usage, self.process)

    def diagnostics_show(self, since: int, battery: str, cpu_load: str) -> bool:
        """Whether diagnostics received since `since` show the node had both reports."""
        shown = node_values(s for a in self.diagnostics[since:] for s in a.status)
        return (any(v.get("battery") == battery for v in shown)
                and any(v.get("cpu load") == cpu_load for v in shown))

    def until(self, condition, frames: int = 20) -> ComputeUsage:
        """Send frames until the compute usage satisfies `condition` (reports arrive async)."""
        seen = []
        for _ in range(frames):
            seen.append(self.frame())
            if condition(seen[-1]):
                return seen[-1]
        raise AssertionError("condition never held; budgets and reasons seen: "
                             f"{[(round(u.budget_effective, 3), u.budget_reason) for u in seen]}")


@pytest.fixture(scope="module")
def robot():
    process = DetectorProcess({
        "model": str(tiny_yolos()), "short_side": 128, "budget_mode": "adaptive",
        "token_budget": REQUESTED, "min_budget": 0.05, "battery_low": 0.2,
        "battery_critical": 0.05, "cpu_load_high": 0.8, "cpu_load_critical": 1.0,
        "budget_smoothing": 1.0})
    peer = Peer()
    try:
        yield Robot(peer, process)
    finally:
        peer.close()
        process.assert_clean_exit()


def test_low_battery_lowers_the_budget_and_charging_restores_it(robot):
    normal = robot.until(lambda u: u.budget_reason == "requested")
    assert normal.budget_effective == pytest.approx(REQUESTED)
    robot.state = (0.15, BatteryState.POWER_SUPPLY_STATUS_DISCHARGING, 0.1)
    low = robot.until(lambda u: u.budget_reason == "battery 15% < 20%")
    # 15 % is 2/3 of the way from critical (5 %) to low (20 %).
    assert low.budget_effective == pytest.approx(0.05 + (REQUESTED - 0.05) * 2 / 3, abs=0.01)
    assert low.budget_requested == pytest.approx(REQUESTED)
    steady = robot.frame()
    assert steady.tokens_updated < normal.tokens_updated
    robot.state = (0.15, BatteryState.POWER_SUPPLY_STATUS_CHARGING, 0.1)
    charging = robot.until(lambda u: u.budget_reason == "requested")
    assert charging.budget_effective == pytest.approx(REQUESTED)


def test_high_cpu_load_lowers_the_budget(robot):
    robot.state = (0.9, BatteryState.POWER_SUPPLY_STATUS_DISCHARGING, 0.95)
    busy = robot.until(lambda u: u.budget_reason == "cpu 0.95")
    assert busy.budget_effective == pytest.approx(0.05 + (REQUESTED - 0.05) * 0.25, abs=0.01)
    robot.state = (0.9, BatteryState.POWER_SUPPLY_STATUS_DISCHARGING, 0.1)
    robot.until(lambda u: u.budget_reason == "requested")


def test_latency_target_steers_the_budget(robot):
    [result] = robot.peer.set_parameters({"target_latency_ms": 1.0})  # unreachable
    assert result.successful
    floor = robot.until(lambda u: u.budget_effective == pytest.approx(0.05))
    assert floor.budget_reason.startswith("latency ") and "> 1 ms" in floor.budget_reason
    assert floor.budget_reason.endswith("min_budget 0.05")
    [result] = robot.peer.set_parameters({"target_latency_ms": 60000.0})  # always met
    relaxed = robot.until(lambda u: u.budget_effective == pytest.approx(REQUESTED), frames=20)
    assert relaxed.budget_reason == "requested"
