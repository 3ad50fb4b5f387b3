"""benchmarks/bench_core.py runs end to end (tiny model, few frames) and prints its tables."""
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("single_thread")


def _bench_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_core.py"
    spec = importlib.util.spec_from_file_location("bench_core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_core_reports_speed_gflops_accuracy_and_crossover(tiny_dinov2_dir, capsys):
    from eventful_perception.assets import video_path

    bench = _bench_module()
    argv = ["--model", str(tiny_dinov2_dir), "--video", str(video_path("vtest.avi")), "--frames", "3",
            "--budgets", "1", "0.2", "--short-side", "112", "--fractions", "0.05", "--repeats", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "tokens 89; dense" in out
    assert out.count("  auto      |") == 2 and out.count("  sparse    |") == 2 and out.count("  dense     |") == 2
    assert "sparse attention slower than dense from a changed fraction of" in out
