"""Unit tests of the pieces behind the fault handling (no node process)."""
import json
import subprocess
import sys
from dataclasses import fields

import cv2
import numpy as np
import pytest

from eventful_perception.granularity import LadderConfig
from eventful_perception.ros.budget import BudgetConfig
from eventful_perception.ros.conversions import compressed_size
from eventful_perception.ros.faults import BACKWARDS, GAP, LogThrottle, stamp_fault
from eventful_perception.ros.params import TABLE, Settings, as_declared_type

S = 10**9


def test_stamps_backwards_or_after_a_gap_restart_the_stream():
    assert stamp_fault(None, 5 * S, 10.0) == ""  # first frame
    assert stamp_fault(5 * S, 6 * S, 10.0) == ""
    assert stamp_fault(5 * S, 5 * S - 1, 10.0) == BACKWARDS
    assert stamp_fault(5 * S, 16 * S, 10.0) == GAP
    assert stamp_fault(5 * S, 15 * S, 10.0) == ""  # exactly the limit is no gap
    assert stamp_fault(5 * S, 500 * S, 0.0) == ""  # 0 = no gap limit
    assert stamp_fault(5 * S, 0, 10.0) == stamp_fault(0, 5 * S, 10.0) == ""  # unstamped


def test_each_reason_is_let_through_once_per_period():
    throttle = LogThrottle(period_s=5.0)
    assert [throttle.allow("a", t) for t in (0.0, 1.0, 4.9, 5.0)] == [True, False, False, True]
    assert throttle.allow("b", 1.0)  # another reason has its own period


def test_settings_have_one_field_per_parameter_a_budget_a_tracker_and_a_ladder_config():
    names = [f.name for f in fields(Settings)]
    assert names == [spec.name for spec in TABLE] + ["budget", "tracker", "ladder"]
    values = {spec.name: spec.default for spec in TABLE}
    settings = Settings.from_values({**values, "cpu_load_high": 0.5, "battery_low": 1})
    assert settings.cameras == ("",) and settings.budget.cpu_load_high == 0.5
    assert settings.battery_low == 1.0 and isinstance(settings.battery_low, float)
    assert {f.name for f in fields(BudgetConfig)} <= set(names)  # same names, no renaming
    tracker = Settings.from_values({**values, "tracking_lost_frames": 7}).tracker
    assert tracker.lost_frames == 7 and {f"tracking_{f.name}" for f in fields(tracker)} <= set(names)
    with pytest.raises(ValueError, match="need 0 <= cpu_load_high < cpu_load_critical"):
        Settings.from_values({**values, "cpu_load_high": 1.0})


def test_granularity_adaptive_reads_the_ladder_from_exit_thresholds_file(tmp_path):
    values = {spec.name: spec.default for spec in TABLE}
    path = tmp_path / "exits.json"
    fixed = Settings.from_values({**values, "exit_thresholds_file": str(path)})
    assert fixed.ladder is None  # fixed: the file is not read (it does not exist)
    path.write_text(json.dumps({"short_sides": [224, 448], "score_low": 0.2,
                                "exit_thresholds": {"0.4": [0.7]}}))
    adaptive = {**values, "granularity": "adaptive", "exit_thresholds_file": str(path)}
    assert Settings.from_values(adaptive).ladder == LadderConfig((224, 448), {0.4: (0.7,)}, 0.2)
    path.write_text(json.dumps({"short_sides": [224, 448], "score_low": 0.2}))
    with pytest.raises(ValueError, match=f"exit thresholds file {path}: no key 'exit_thresholds'"):
        Settings.from_values(adaptive)
    with pytest.raises(ValueError, match="needs policy top_r, got 'threshold'"):
        Settings.from_values({**adaptive, "policy": "threshold"})
    path.write_text(json.dumps({"short_sides": [224, 448], "score_low": 0.2,
                                "exit_thresholds": {"0.4": [0.7]}}))
    with pytest.raises(ValueError, match="needs score_threshold above the exit thresholds file's "
                                         "score_low 0.2 and below 1, got 0.2"):
        Settings.from_values({**adaptive, "score_threshold": 0.2})  # the exit rule needs a band
    # Wrong types and values fail as one ValueError naming the file, never a TypeError deeper in.
    good = {"short_sides": [224, 448], "score_low": 0.2, "exit_thresholds": {"0.4": [0.7]}}
    for bad, reason in (({"score_low": None}, "score_low must be a number, got None"),
                        ({"ladder_below": "0.3"}, "ladder_below must be a number, got '0.3'"),
                        ({"still_px": -1}, r"still_px must be in \[0.0, inf\], got -1"),
                        ({"exit_thresholds": {"0.4": [None]}}, "budget 0.4 threshold must be a number"),
                        ({"exit_thresholds": [0.7]}, "'list' object has no attribute 'items'"),
                        ({"short_sides": [224, None]}, "int\(\) argument must be")):
        path.write_text(json.dumps({**good, **bad}))
        with pytest.raises(ValueError, match=f"exit thresholds file {path}: {reason}"):
            Settings.from_values(adaptive)


def test_integers_become_floats_only_for_double_parameters():
    assert as_declared_type("token_budget", 1) == 1.0 and isinstance(
        as_declared_type("token_budget", 1), float)
    assert as_declared_type("refresh_interval", 3) == 3  # an integer parameter stays integer
    assert as_declared_type("token_budget", True) is True  # a bool is not a number here
    assert as_declared_type("token_budget", "high") == "high"  # rclpy then refuses the type


def test_compressed_size_is_read_from_the_header():
    image = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg"):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert compressed_size(data) == (53, 37)
    assert compressed_size(b"\xff\xd8\xff") is None


def test_bag_io_imports_no_rclpy():
    code = ("import sys, eventful_perception.bag_io, eventful_perception.bags; "
            "print('rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
