"""Unit tests of the budget controller (plain Python, no ROS)."""
import subprocess
import sys

import pytest

from eventful_perception.ros.budget import BudgetConfig, BudgetController, BudgetInputs

ADAPTIVE = BudgetConfig(budget_mode="adaptive", min_budget=0.05, battery_low=0.2,
                        battery_critical=0.05, cpu_load_high=0.8, cpu_load_critical=1.0,
                        budget_smoothing=0.5)
# The latency dead band is +-10 %, so a settled latency may sit anywhere inside it.
LATENCY_TOLERANCE = 0.11


def settle(config: BudgetConfig, inputs: BudgetInputs, frames: int = 30,
           controller: BudgetController | None = None):
    controller = controller or BudgetController()
    decisions = [controller.update(config, inputs) for _ in range(frames)]
    return decisions[-1], decisions


def test_fixed_mode_uses_requested_budget_whatever_the_state():
    inputs = BudgetInputs(requested=0.3, battery=0.01, cpu_load=1.0, latency_ms=900.0)
    decision, _ = settle(BudgetConfig(budget_mode="fixed", target_latency_ms=10.0), inputs,
                         frames=1)
    assert decision.effective == 0.3
    assert decision.reason == "fixed"
    assert decision.limited_by == ()


def test_adaptive_without_pressure_keeps_requested_budget():
    decision, _ = settle(ADAPTIVE, BudgetInputs(requested=0.6, battery=0.9, cpu_load=0.3))
    assert decision.effective == pytest.approx(0.6)
    assert decision.reason == "requested"


def test_low_battery_lowers_budget_with_reason_and_charging_restores_it():
    controller = BudgetController()
    low, _ = settle(ADAPTIVE, BudgetInputs(requested=0.5, battery=0.18), controller=controller)
    # 18 % sits 13/15 of the way from critical (5 %) to low (20 %).
    assert low.effective == pytest.approx(0.05 + 0.45 * 13 / 15, abs=0.006)
    assert low.reason == "battery 18% < 20%"
    assert low.limited_by == ("battery",)
    charging, _ = settle(ADAPTIVE, BudgetInputs(requested=0.5, battery=0.18, charging=True),
                         controller=controller)
    assert charging.effective == pytest.approx(0.5)
    assert charging.reason == "requested"


def test_unknown_battery_percentage_is_ignored():
    decision, _ = settle(ADAPTIVE, BudgetInputs(requested=0.5, battery=float("nan")))
    assert decision.effective == pytest.approx(0.5)


def test_critical_battery_and_full_cpu_stop_at_min_budget():
    decision, _ = settle(ADAPTIVE, BudgetInputs(requested=0.5, battery=0.02, cpu_load=1.0))
    assert decision.effective == pytest.approx(0.05)
    assert decision.reason == "battery 2% < 20%; cpu 1.00; min_budget 0.05"


def test_high_cpu_load_lowers_budget():
    decision, _ = settle(ADAPTIVE, BudgetInputs(requested=0.5, cpu_load=0.93))
    assert decision.effective == pytest.approx(0.05 + 0.45 * 0.35, abs=0.006)
    assert decision.reason == "cpu 0.93"


def test_requested_below_min_budget_is_honoured():
    decision, _ = settle(ADAPTIVE, BudgetInputs(requested=0.03, battery=0.01))
    assert decision.effective == pytest.approx(0.03)


def test_latency_target_steers_budget_down_and_back_up():
    """Simulate a model whose latency is proportional to the budget: 200 ms at full budget."""
    config = BudgetConfig(budget_mode="adaptive", target_latency_ms=50.0)
    controller = BudgetController()
    latency, history = None, []
    for _ in range(40):
        decision = controller.update(config, BudgetInputs(requested=0.8, latency_ms=latency))
        latency = 200.0 * decision.effective
        history.append(decision.effective)
    assert latency == pytest.approx(50.0, rel=LATENCY_TOLERANCE)
    assert decision.limited_by == ("latency",)
    assert decision.reason.startswith("latency ")
    # No oscillation once settled: the last frames agree.
    assert max(history[-10:]) - min(history[-10:]) < 0.01
    relaxed = BudgetConfig(budget_mode="adaptive", target_latency_ms=400.0)
    for _ in range(40):
        decision = controller.update(relaxed, BudgetInputs(requested=0.8, latency_ms=latency))
        latency = 200.0 * decision.effective
    assert decision.effective == pytest.approx(0.8)
    assert decision.reason == "requested"


def test_noisy_cpu_load_does_not_make_budget_jitter():
    """Load alternating around the same value moves the budget less than the dead band."""
    controller = BudgetController()
    settle(ADAPTIVE, BudgetInputs(requested=0.5, cpu_load=0.9), controller=controller)
    values = [controller.update(ADAPTIVE, BudgetInputs(requested=0.5, cpu_load=load)).effective
              for load in [0.9, 0.901, 0.899] * 10]
    assert max(values) == min(values)


def test_smoothing_approaches_target_gradually():
    _, decisions = settle(ADAPTIVE, BudgetInputs(requested=0.5, cpu_load=1.0), frames=10)
    values = [d.effective for d in decisions]
    assert values[0] < 0.5 and values[0] > 0.05
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget_mode": "turbo"}, "budget_mode must be one of fixed, adaptive"),
    ({"battery_low": 0.1, "battery_critical": 0.2}, "battery_critical < battery_low"),
    ({"cpu_load_high": 0.9, "cpu_load_critical": 0.5}, "cpu_load_high < cpu_load_critical"),
    ({"target_latency_ms": -1.0}, "target_latency_ms must be >= 0"),
    ({"budget_smoothing": 0.0}, "budget_smoothing must be in (0, 1]"),
])
def test_invalid_config_is_rejected_with_reason(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        BudgetConfig(**kwargs)


def test_budget_module_imports_neither_ros_nor_torch():
    code = ("import sys, eventful_perception.ros.budget; "
            "print(sorted(m for m in ('rclpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
