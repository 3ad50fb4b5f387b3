"""benchmarks/bench_tracking.py: its ID-switch / fragmentation counts on hand-made tracks, and an
end-to-end run on a tiny detector."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tracking.py"
    spec = importlib.util.spec_from_file_location("bench_tracking", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def frame(*objects):
    """(boxes, ids) of one frame from (x, id) pairs: 40x80 boxes at height 100."""
    boxes = np.array([[x, 100, x + 40, 180] for x, _ in objects], np.float32).reshape(-1, 4)
    return boxes, [track_id for _, track_id in objects]


REFERENCE = [frame((100 + 5 * t, "1"), (400 - 5 * t, "2")) for t in range(10)]


def test_identical_tracks_have_no_errors(bench):
    renamed = [(boxes, [{"1": "7", "2": "9"}[i] for i in ids]) for boxes, ids in REFERENCE]
    errors = bench.compare_tracks(REFERENCE, renamed)  # other ID numbers are no error
    assert (errors.id_switches, errors.fragmentations, errors.covered, errors.reference) == \
        (0, 0, 20, 20)


def test_a_swap_is_two_id_switches(bench):
    swapped = [(boxes, ids if t < 6 else ids[::-1]) for t, (boxes, ids) in enumerate(REFERENCE)]
    errors = bench.compare_tracks(REFERENCE, swapped)
    assert (errors.id_switches, errors.fragmentations) == (2, 0)
    assert errors.per_100(errors.id_switches) == pytest.approx(20.0)  # 2 in 10 frames


def test_a_gap_is_one_fragmentation_and_a_new_id_after_it_also_a_switch(bench):
    gap = [(boxes[1:], ids[1:]) if t in (3, 4) else (boxes, ids)
           for t, (boxes, ids) in enumerate(REFERENCE)]
    errors = bench.compare_tracks(REFERENCE, gap)
    assert (errors.id_switches, errors.fragmentations, errors.covered) == (0, 1, 18)
    renamed_after = [(boxes, ["5" if i == "1" and t > 4 else i for i in ids])
                     for t, (boxes, ids) in enumerate(gap)]
    errors = bench.compare_tracks(REFERENCE, renamed_after)
    assert (errors.id_switches, errors.fragmentations) == (1, 1)


def test_untracked_and_far_boxes_do_not_match(bench):
    untracked = [(boxes, ["", ids[1]]) for boxes, ids in REFERENCE]
    shifted = [(boxes + np.array([30, 0, 30, 0], np.float32), ids) for boxes, ids in REFERENCE]
    assert bench.compare_tracks(REFERENCE, untracked).covered == 10
    assert bench.compare_tracks(REFERENCE, shifted).covered == 0  # IoU 10/70 < 0.5


def test_bench_runs_end_to_end_on_a_tiny_detector(bench, tiny_yolos_dir, capsys, single_thread):
    argv = ["--model", str(tiny_yolos_dir), "--frames", "4", "--budgets", "1", "0.5",
            "--crop-width", "600"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "vtest.avi, static: 4 frames" in out
    assert "vtest.avi, 600 px crop panning 3 px/frame: 4 frames" in out
    assert out.count("| 1 | ") == 2 and out.count("| 0.5 | ") == 2
    assert out.count("| dense, boxes + 1 px noise | ") == 2
