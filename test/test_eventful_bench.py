"""`eventful-perception bench` on a tiny random YOLOS: the JSON's exact keys, fidelity, the plot."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from eventful_perception import bench, cli
from eventful_perception.assets import video_path
from eventful_perception.detect import read_video
from eventful_perception.granularity import LadderConfig

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
    assert set(report) == {"machine", "stale_map50_vs_dense", "results"}
    assert set(report["machine"]) == {"cpu", "threads", "torch", "device"}
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    full, partial = report["results"]
    assert set(full) == set(partial) == RESULT_KEYS
    assert (full["budget"], partial["budget"]) == (1.0, 0.25)
    assert full["map50_vs_dense"] == 1.0 and full["feature_cosine"] >= 0.99999
    assert full["flops_ratio"] == 1.0 and full["gflops"] == full["gflops_dense"] == partial["gflops_dense"]
    assert partial["flops_ratio"] > 1.5 and partial["feature_cosine"] < 1.0
    assert full["dense_ms"] == partial["dense_ms"] > 0
    for r in (full, partial):  # the ratios are of the reported medians and means
        # (ms are rounded to 0.01 ms; the tiny model takes a few ms)
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["eventful_ms"], rel=1e-2)
        assert r["flops_ratio"] == pytest.approx(r["gflops_dense"] / r["gflops"], rel=2e-3)
    assert full["state_mb"] > 0 and full["attention"] == "query_rows"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_the_full_budget_bound_rejects_a_stream_one_frame_behind(detector_dir):
    from eventful_perception import load_model
    from eventful_perception.eventful.stream import StreamConfig

    model = load_model(detector_dir)
    frames = bench.read_frames(video_path("vtest.avi"), 0, 5, None, 0)
    (right,), _ = bench.bench(model, frames, [1.0], StreamConfig(), warmup=1)
    behind = [frames[0], *frames[:-1]]  # what a stream that reports its previous frame would give
    stale = model.new_stream()
    reference = [model.dense(frame) for frame in frames[1:]]
    cosine = [float(torch.nn.functional.cosine_similarity(model(f, stale, budget=1.0).features, r.features).mean())
              for f, r in zip(behind[1:], reference)]
    assert right["feature_cosine"] >= 0.99999 > min(cosine)


def test_stale_baseline_scores_each_frames_predecessor(tiny_dinov2_dir):
    """`stale_map50_vs_dense`: the previous frame's dense detections against each measured frame's
    (the first measured frame's predecessor is the warm-up frame), on a pan (a tiny DINOv2 with a
    random token head, whose detections follow the content)."""
    from eventful_perception.eventful.stream import StreamConfig
    from eventful_perception.models.loading import load_checkpoint
    from eventful_perception.models.token_head import TokenHead, TokenHeadConfig
    from eventful_perception.training.metrics import GroundTruth, mean_average_precision

    torch.manual_seed(0)
    model = load_checkpoint(tiny_dinov2_dir, 112, TokenHead(TokenHeadConfig(("person",), 32, mlp_dim=16))).eval()
    frames = bench.read_frames(video_path("vtest.avi"), 0, 6, None, 24)
    (full,), reference = bench.bench(model, frames, [1.0], StreamConfig(), warmup=1)
    dense = [model.dense(frame, score_threshold=0.05).detections for frame in frames]
    keep = [d.scores >= model.default_score_threshold for d in dense[1:]]
    truths = [GroundTruth(d.boxes[k], [l for l, x in zip(d.labels, k) if x]) for d, k in zip(dense[1:], keep)]
    expected = mean_average_precision(dense[:-1], truths)
    assert reference.stale_map50() == pytest.approx(expected, abs=1e-4)
    assert full["map50_vs_dense"] == 1.0 > reference.stale_map50()
    (_,), cold = bench.bench(model, frames[:3], [1.0], StreamConfig(), warmup=0)
    assert cold.stale_map50() is None  # no predecessor for the first frame


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


LADDER_RESULT_KEYS = {"variant", "budget", "gflops", "gflops_dense", "ms", "dense_ms", "speedup", "mean_ms",
                      "dense_mean_ms", "speedup_mean", "map50_vs_dense", "exit_rates"}
LADDER_STAGE_KEYS = {"short_side", "tokens", "reuse_from", "gflops", "ms", "speedup", "speedup_mean",
                     "map50_vs_dense"}
LADDER_SIDES = (128, 192, 256)


@pytest.fixture(scope="module")
def ladder_dir(detector_dir, tmp_path_factory):
    """The tiny detector at short side 256 (the ladder's finest stage), so three stages run fast."""
    folder = tmp_path_factory.mktemp("tiny_yolos_ladder")
    for item in detector_dir.iterdir():
        shutil.copy(item, folder / item.name)
    (folder / "preprocessor_config.json").write_text('{"size": {"shortest_edge": 256, "longest_edge": 448}}')
    return folder


def _thresholds_file(path, exit_thresholds: dict) -> str:
    path.write_text(json.dumps({"footage": "synthetic", "command": "written by the test",
                                "short_sides": list(LADDER_SIDES), "score_low": 0.1,
                                "exit_thresholds": exit_thresholds}))
    return str(path)


def test_ladder_writes_exactly_the_keys_one_row_per_variant_and_budget(ladder_dir, tmp_path):
    from eventful_perception import bench_ladder

    out, plot = tmp_path / "ladder.json", tmp_path / "ladder.png"
    thresholds = _thresholds_file(tmp_path / "exits.json", {"0.3": [0.15, 0.19], "0.6": [0.2, 0.2]})
    argv = ["bench", "vtest.avi", "--ladder", "--model", str(ladder_dir), "--budgets", "1.0,0.5",
            "--frames", "3", "--warmup", "2", "--exit-thresholds", thresholds, "--json", str(out),
            "--plot", str(plot)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "exit_thresholds", "reuse", "not_built", "stages",
                           "stale_map50_vs_dense", "results"}
    assert [set(r) for r in report["stages"]] == [LADDER_STAGE_KEYS] * 2
    assert [(r["short_side"], r["reuse_from"]) for r in report["stages"]] == [(s, None) for s in LADDER_SIDES[:-1]]
    assert report["exit_thresholds"] == {"file": "exits.json", "footage": "synthetic",
                                         "command": "written by the test"}
    assert report["reuse"] is None and "relation reuse" in report["not_built"]
    rows = report["results"]  # no reuse modules for a model other than the default: no reuse rows
    expected = [(v, b) for v in bench_ladder.VARIANTS if not v.endswith("_reuse") for b in (1.0, 0.5)]
    assert [(r["variant"], r["budget"]) for r in rows] == expected
    assert all(set(r) == LADDER_RESULT_KEYS for r in rows)
    by = {(r["variant"], r["budget"]): r for r in rows}
    full = by["eventful", 1.0]
    assert full["map50_vs_dense"] == 1.0 and full["gflops"] == full["gflops_dense"]
    assert full["exit_rates"] is None
    assert by["eventful", 0.5]["gflops"] < 0.75 * full["gflops_dense"]
    for variant in ("ladder_dense", "ladder_eventful", "controller"):
        for budget in (1.0, 0.5):
            rates = by[variant, budget]["exit_rates"]
            assert len(rates) == 3 and sum(rates) == pytest.approx(1.0)
    # the camera is static: after the first frame (motion unknown: the ladder), the controller
    # runs the finest stage only, at update fraction = budget; its stream began in the warm-up
    assert by["controller", 1.0]["exit_rates"] == [0.0, 0.0, 1.0]
    assert by["controller", 1.0]["map50_vs_dense"] == 1.0
    assert by["controller", 0.5]["gflops"] == pytest.approx(by["eventful", 0.5]["gflops"], rel=1e-3)
    assert all(r["dense_ms"] == full["dense_ms"] > 0 and r["ms"] > 0 and r["mean_ms"] > 0 for r in rows)
    assert all(r["speedup_mean"] == pytest.approx(r["dense_mean_ms"] / r["mean_ms"], rel=1e-2) for r in rows)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_ladder_with_reuse_adds_its_rows_and_stage(ladder_dir, tmp_path):
    """`--reuse DIR`: the reuse ladders and a stage fed by the one before it; the reuse rows
    count the module's linears (it runs), and a stage with reuse costs its upstream stage too
    (what the ladder passes on is checked in test_reuse.py)."""
    from eventful_perception.reuse import FeatureReuse, ReuseConfig

    module = FeatureReuse(ReuseConfig(32, 3, LADDER_SIDES[0], LADDER_SIDES[1]))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(0))
    module.save(tmp_path / "reuse" / "128-192")
    out = tmp_path / "ladder.json"
    thresholds = _thresholds_file(tmp_path / "exits.json", {"0.5": [math.inf, math.inf]})  # every stage runs
    argv = ["bench", "vtest.avi", "--ladder", "--model", str(ladder_dir), "--budgets", "0.5", "--frames", "2",
            "--warmup", "1", "--pan", "5", "--exit-thresholds", thresholds, "--reuse", str(tmp_path / "reuse"),
            "--json", str(out)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["reuse"] == str(tmp_path / "reuse")
    by = {r["variant"]: r for r in report["results"]}
    assert {"ladder_dense_reuse", "ladder_eventful_reuse"} <= set(by)
    assert by["ladder_dense_reuse"]["gflops"] > by["ladder_dense"]["gflops"]  # the module's own linears
    stages = {(r["short_side"], r["reuse_from"]): r for r in report["stages"]}
    assert set(stages) == {(128, None), (192, None), (192, 128)}
    assert stages[192, 128]["gflops"] > stages[192, None]["gflops"] + stages[128, None]["gflops"]


@pytest.mark.parametrize("threshold, stage", [(0.0, 0), (math.inf, 2)])
def test_ladder_gflops_are_every_stage_run(ladder_dir, threshold, stage):
    """Exit always at the first stage, or never early: the row's GFLOPs are those of the stages
    run, counted here by dense runs at each stage's scale (counting only the exiting stage fails)."""
    from eventful_perception import bench_ladder, load_model

    model = load_model(ladder_dir)
    frames = bench.read_frames(video_path("vtest.avi"), 0, 3, None, 3)
    config = LadderConfig(LADDER_SIDES, {0.5: (threshold, threshold)})
    rows, alone, _ = bench_ladder.bench_ladder(model, config, frames, [0.5], warmup=1)
    (ladder,) = [r for r in rows if r["variant"] == "ladder_dense"]
    stage_gflops = [model.dense(frames[1], short_side=side).usage.gflops for side in LADDER_SIDES]
    assert [r["gflops"] for r in alone] == pytest.approx(stage_gflops[:-1], abs=1e-4)
    assert ladder["exit_rates"] == [1.0 if k == stage else 0.0 for k in range(3)]
    assert ladder["gflops"] == pytest.approx(sum(stage_gflops[:stage + 1]), abs=1e-4)
    assert ladder["gflops_dense"] == pytest.approx(stage_gflops[-1], abs=1e-4)


def test_the_controller_row_runs_what_Ladder_runs(ladder_dir):
    """Same stage, GFLOPs and detections above the threshold per frame as `Ladder` on a pan
    (the bench keeps detections down to the score floor for scoring, `Ladder` does not)."""
    from eventful_perception import bench_ladder, load_model
    from eventful_perception.granularity import Ladder, LadderConfig

    model = load_model(ladder_dir)
    frames = bench.read_frames(video_path("vtest.avi"), 0, 6, None, 3)
    config = LadderConfig(LADDER_SIDES, {0.5: (0.15, 0.19)}, ladder_below=1.0)  # the ladder when moving
    ladder, step = Ladder(model, config), bench_ladder.ladder_step(model, config, 0.5, "controller", {})
    state = ladder.new_state()
    stages = []
    for frame in frames:
        expected = ladder(frame, state, 0.5)
        result, gflops, stage = step(frame)
        keep = result.detections.scores >= model.default_score_threshold
        assert stage == expected.stage and gflops == pytest.approx(expected.gflops, rel=1e-6)
        assert np.allclose(result.detections.boxes[keep], expected.result.detections.boxes, atol=1e-4)
        stages.append(stage)
    assert len(set(stages)) > 1  # the thresholds make frames exit at different stages


def test_ladder_bad_exit_thresholds_exit_with_2(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"short_sides": [224, 448]}')
    argv = ["bench", "vtest.avi", "--ladder", "--exit-thresholds", str(tmp_path / "bad.json"),
            "--json", str(tmp_path / "x.json")]
    assert cli.main(argv) == 2
    assert "--exit-thresholds" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    argv = ["bench", "vtest.avi", "--ladder", "--dtype", "bfloat16", "--json", str(tmp_path / "x.json")]
    assert cli.main(argv) == 2


def test_fit_exits_writes_a_file_the_ladder_loads_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "exits.json"
    argv = ["fit-exits", "vtest.avi", "--frames", "3", "--short-sides", "224,448",
            "--budgets", "0.5,1.0", "--out", str(out)]
    assert cli.main(argv) == 0
    config = LadderConfig.from_file(out)
    assert config.short_sides == (224, 448) and sorted(config.exit_thresholds) == [0.5, 1.0]
    # A larger budget lets more frames go on to the finest stage: a stricter exit threshold.
    assert config.exit_thresholds[0.5][0] <= config.exit_thresholds[1.0][0]
    assert "frames 0-2, pan 3 px/frame" in json.loads(out.read_text())["footage"]
    assert config.reuse == ""  # the shipped reuse joins 224 and 336: not these stages
    for bad in (["--budgets", "0"], ["--frames", "0"], ["--score-low", "0.5"], ["--short-sides", "448,224"],
                ["--reuse", "default"], ["--reuse", str(tmp_path / "no_such")]):
        assert cli.main([*argv, *bad]) == 2
        assert "fit-exits: error:" in capsys.readouterr().err


def test_fit_exits_calibrates_with_the_reuse_the_ladder_runs(tmp_path):
    """The default stages get the shipped feature reuse, recorded in the file the ladder loads;
    the 336 stage's confidence is that of the stage fed by the 224 stage of the same frame."""
    from eventful_perception import fit_exits, load_model
    from eventful_perception.granularity import ExitRule
    from eventful_perception.reuse import load_reuse, pass_on

    out = tmp_path / "exits.json"
    assert cli.main(["fit-exits", "vtest.avi", "--frames", "1", "--budgets", "0.5", "--out", str(out)]) == 0
    assert LadderConfig.from_file(out).reuse == "default"
    model, modules = load_model("default"), load_reuse("default", (224, 336, 448))
    frame = bench.read_frames(video_path("vtest.avi"), 0, 1, None, 3)[0]
    confidences, _ = fit_exits.calibrate(model, [frame], (224, 336, 448), 0.1, modules)
    fed = model.dense(frame, score_threshold=0.1, short_side=336,
                      reuse=pass_on(modules[1], model.dense(frame, short_side=224), model.device))
    plain = model.dense(frame, score_threshold=0.1, short_side=336)
    rule = ExitRule((), 0.1, model.default_score_threshold)
    assert confidences[0, 1] == pytest.approx(rule.confidence(fed.detections), abs=1e-6)
    assert confidences[0, 1] != pytest.approx(rule.confidence(plain.detections), abs=1e-3)