"""`eventful-perception bench` on a tiny random YOLOS: the JSON's exact keys, fidelity, the plot."""
import json
import shutil

import numpy as np
import pytest
import torch

from eventful_perception import bench, cli
from eventful_perception.assets import video_path
from eventful_perception.detect import read_video

pytestmark = pytest.mark.usefixtures("single_thread")

RESULT_KEYS = {"budget", "dense_ms", "eventful_ms", "speedup", "gflops_dense", "gflops", "flops_ratio",
               "map50_vs_dense", "feature_cosine", "state_mb", "attention"}


@pytest.fixture(scope="module")
def detector_dir(tiny_yolos_dir, tmp_path_factory):
    """The tiny YOLOS with a sharper class head and a `person` bias: its dense scores are 0.6-0.8
    (above the 0.5 threshold), so there is something to score the eventful detections against."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("tiny_yolos_detector")
    for item in tiny_yolos_dir.iterdir():
        shutil.copy(item, folder / item.name)
    state = load_file(str(folder / "model.safetensors"))
    for layer in (1, 2):
        state[f"class_labels_classifier.layers.{layer}.weight"] *= 30**0.5
    state["class_labels_classifier.layers.2.bias"][1] += 2.0
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_bench_writes_exactly_the_keys_and_full_budget_agrees_with_dense(detector_dir, tmp_path):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "vtest.avi", "--model", str(detector_dir), "--budgets", "1.0,0.25", "--frames", "4",
            "--warmup", "1", "--attention", "query_rows", "--json", str(out), "--plot", str(plot)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "results"}
    assert set(report["machine"]) == {"cpu", "threads", "torch", "device"}
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    full, partial = report["results"]
    assert set(full) == set(partial) == RESULT_KEYS
    assert (full["budget"], partial["budget"]) == (1.0, 0.25)
    assert full["map50_vs_dense"] == 1.0 and full["feature_cosine"] >= 0.99999
    assert full["flops_ratio"] == 1.0 and full["gflops"] == full["gflops_dense"] == partial["gflops_dense"]
    assert partial["flops_ratio"] > 1.5 and partial["feature_cosine"] < 1.0
    assert 0.0 <= partial["map50_vs_dense"] <= 1.0
    assert full["dense_ms"] == partial["dense_ms"] > 0 and full["speedup"] > 0
    assert full["state_mb"] > 0 and full["attention"] == "query_rows"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_the_full_budget_bound_rejects_a_stream_one_frame_behind(detector_dir):
    from eventful_perception import load_model
    from eventful_perception.eventful.stream import StreamConfig

    model = load_model(detector_dir)
    frames = bench.read_frames(video_path("vtest.avi"), 0, 5, None, 0)
    (right,) = bench.bench(model, frames, [1.0], StreamConfig(), warmup=1)
    behind = [frames[0], *frames[:-1]]  # what a stream that reports its previous frame would give
    stale = model.new_stream()
    reference = [model.dense(frame) for frame in frames[1:]]
    cosine = [float(torch.nn.functional.cosine_similarity(model(f, stale, budget=1.0).features, r.features).mean())
              for f, r in zip(behind[1:], reference)]
    assert right["feature_cosine"] >= 0.99999 > min(cosine)


def test_pan_slides_a_three_quarter_window_and_turns_back():
    raw = [frame[:, :, ::-1] for frame in read_video(video_path("vtest.avi"), 3)]  # RGB
    frames = bench.read_frames(video_path("vtest.avi"), 1, 2, None, pan=100)
    assert frames[0].shape == (576, 576, 3)
    assert np.array_equal(frames[0], raw[1][:, :576]) and np.array_equal(frames[1], raw[2][:, 100:676])
    assert bench._pan_window(raw[0], 100, 3).shape == (576, 576, 3)
    assert np.array_equal(bench._pan_window(raw[0], 100, 3), raw[0][:, 84:660])  # 300 px: turned back at 192
    resized = bench.read_frames(video_path("vtest.avi"), 0, 1, (320, 240), 0)
    assert resized[0].shape == (240, 320, 3)


@pytest.mark.parametrize("bad", [["--budgets", "0.5,1.5"], ["--budgets", "a"], ["--size", "640"],
                                 ["--frames", "0"], ["--pan", "-1"], ["--start", "100000"]])
def test_bad_arguments_exit_with_2_and_a_message(bad, tmp_path, capsys):
    assert cli.main(["bench", "vtest.avi", "--json", str(tmp_path / "x.json"), *bad]) == 2
    assert "eventful-perception bench: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
