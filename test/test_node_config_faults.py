"""Configuration faults: bad start-up configuration stops the node with one clear line (exit 1,
no traceback); bad values set at run time are refused with one clear reason each and change
nothing; an integer for a double parameter is accepted; a topic nobody publishes is waited for."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterType

from eventful_perception.ros.params import TABLE, Spec
from fault_helpers import running_node
from node_harness import NAMESPACE, DetectorProcess, tiny_yolos
from test_node_params import get


def corrupt_checkpoints(root: Path) -> dict[str, Path]:
    bad_json = root / "bad_json"
    shutil.copytree(tiny_yolos(), bad_json)
    (bad_json / "config.json").write_text("{not json")
    truncated = root / "truncated_weights"
    shutil.copytree(tiny_yolos(), truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return {"bad_json": bad_json, "truncated": truncated}


def start_up_cases(root: Path) -> list[tuple[str, dict[str, Any], str]]:
    broken = corrupt_checkpoints(root)
    tiny = str(tiny_yolos())
    cases = [
        ("model folder missing", {"model": str(root / "missing")}, "is not a checkpoint folder"),
        ("config.json corrupt", {"model": str(broken["bad_json"])}, "cannot load model"),
        ("weights truncated", {"model": str(broken["truncated"])}, "cannot load model"),
        ("wrong type", {"model": tiny, "token_budget": "high"},
         "Trying to set parameter 'token_budget' to 'high' of type 'STRING'"),
        ("out of range", {"model": tiny, "min_budget": 0.0}, "min_budget"),
        ("not a choice", {"model": tiny, "budget_mode": "turbo"},
         "budget_mode must be one of fixed, adaptive"),
    ]
    if not torch.cuda.is_available():  # on a GPU machine device:=cuda is valid
        cases.append(("cuda without a GPU", {"model": tiny, "device": "cuda"},
                      "device 'cuda' requested but torch sees no CUDA GPU"))
    return cases


def test_bad_start_up_configuration_stops_with_one_clear_line(tmp_path):
    cases = start_up_cases(tmp_path)
    processes = [DetectorProcess(params) for _, params, _ in cases]  # all at once: faster
    for (name, _, message), process in zip(cases, processes):
        process.proc.wait(timeout=120)
        code, out = process.stop()
        lines = out.strip().splitlines()
        assert code == 1, (name, out)
        assert "Traceback" not in out, (name, out)
        fatal = [line for line in lines if "[FATAL]" in line]
        assert len(fatal) == 1 and "cannot start: " in fatal[0] and message in fatal[0], (name, out)
        assert len(lines) <= 2, (name, out)  # at most the "loading model" line before it


def wrong_type(spec: Spec) -> Any:
    return {str: 1.5, bool: "yes", float: "text", int: "text"}[type(spec.default)]


def another_value(spec: Spec) -> Any:
    return {str: "other", bool: True, int: 1, list: ["other"]}[type(spec.default)]


def run_time_cases() -> list[tuple[str, Any, str]]:
    """(parameter, value, expected reason) for every parameter of the TABLE."""
    cases = []
    for spec in TABLE:
        if spec.read_only:
            cases.append((spec.name, another_value(spec), "read-only"))
            continue
        cases.append((spec.name, wrong_type(spec), "Wrong parameter type"))
        if spec.bounds is not None:
            step = 1 if isinstance(spec.default, int) else 0.5
            cases.append((spec.name, spec.bounds[1] + step, "out of range"))
            cases.append((spec.name, spec.bounds[0] - step, "out of range"))
        if spec.choices:
            cases.append((spec.name, "not_a_choice", f"{spec.name} must be one of"))
    return cases


@pytest.fixture(scope="module")
def running():
    """A node whose camera topic nobody publishes; token_budget given as an integer."""
    with running_node({"model": str(tiny_yolos()), "short_side": 128, "cameras": ["nowhere"],
                       "token_budget": 1}) as running:
        yield running


def test_every_bad_run_time_value_is_refused_with_one_reason_and_changes_nothing(running):
    process, peer = running
    names = [spec.name for spec in TABLE]
    before = get(peer, process, *names)
    for name, value, reason in run_time_cases():
        [result] = peer.set_parameters({name: value})
        assert not result.successful, (name, value)
        assert reason in result.reason and "\n" not in result.reason, (name, value, result.reason)
    assert get(peer, process, *names) == before
    assert process.proc.poll() is None


def test_integers_are_accepted_for_double_parameters(running):
    process, peer = running
    [budget] = get(peer, process, "token_budget")  # `-p token_budget:=1` at start-up
    assert (budget.type, budget.double_value) == (ParameterType.PARAMETER_DOUBLE, 1.0)
    results = peer.set_parameters({"token_budget": 0, "target_latency_ms": 250})
    assert not results[0].successful and "out of range" in results[0].reason  # still checked
    assert results[1].successful, results[1].reason
    [result] = peer.set_parameters({"max_frame_gap_s": 3})  # as `ros2 param set` sends `3`
    assert result.successful, result.reason
    values = get(peer, process, "target_latency_ms", "max_frame_gap_s")
    assert [(v.type, v.double_value) for v in values] == [
        (ParameterType.PARAMETER_DOUBLE, 250.0), (ParameterType.PARAMETER_DOUBLE, 3.0)]


def test_a_topic_nobody_publishes_is_waited_for_not_fatal(running):
    process, peer = running
    arrays = peer.collect(DiagnosticArray, "/diagnostics")
    peer.spin_until(lambda: arrays, 30.0, "a status", process)
    [status] = arrays[-1].status
    assert status.level == DiagnosticStatus.STALE
    assert status.message == f"waiting for a publisher on {NAMESPACE}/nowhere/image_raw"
