"""`eventful-perception detect` on a real excerpt, its JSON lines format, and the drawing helpers."""
import json

import cv2
import numpy as np
import pytest

from eventful_perception import cli, drawing
from eventful_perception.detect import frame_record
from eventful_perception.models.results import Detections, Result, Usage
from eventful_perception.stages import StagedResult

USAGE_KEYS = {"tokens_updated", "tokens_total", "gflops", "gflops_dense", "stage", "stages_run",
              "short_side"}


def test_detect_on_real_excerpt(tmp_path, single_thread):
    video, lines = tmp_path / "annotated.mp4", tmp_path / "detections.jsonl"
    argv = ["detect", "vtest.avi", "--max-frames", "4", "--budget", "0.5", "--out", str(video), "--json", str(lines)]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    for record in records:
        assert set(record) == {"frame", "detections", "usage"}
        assert set(record["usage"]) == USAGE_KEYS
        for detection in record["detections"]:
            assert set(detection) == {"id", "label", "score", "box"} and detection["label"] == "person"
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576 and 0.5 <= detection["score"] <= 1
    # vtest.avi opens with about six pedestrians in view.
    assert np.mean([len(r["detections"]) for r in records]) >= 3
    # Every first-frame detection starts a track; the walkers keep theirs over 4 frames (0.4 s).
    # Measured: 2 of the 3 walkers (the third's box moves 18 px in frame 3 and starts a new track).
    first_ids = [d["id"] for d in records[0]["detections"]]
    assert sorted(first_ids, key=int) == [str(i) for i in range(1, len(first_ids) + 1)]
    last_ids = {d["id"] for d in records[-1]["detections"]} - {""}
    assert len(last_ids & set(first_ids)) >= 2
    first, later = records[0]["usage"], records[-1]["usage"]
    assert {(r["usage"]["stage"], r["usage"]["stages_run"], r["usage"]["short_side"])
            for r in records} == {(0, 1, 448)}  # granularity fixed: the model's one scale
    assert first["tokens_updated"] == first["tokens_total"]
    assert later["tokens_updated"] < later["tokens_total"] and later["gflops"] < later["gflops_dense"]
    capture = cv2.VideoCapture(str(video))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    assert len(frames) == 4 and frames[0].shape == (576, 768, 3)


def test_detect_adaptive_granularity_shows_the_stage_per_frame(tmp_path, tiny_yolos_dir):
    """Thresholds 0.0: a frame exits at the first stage it runs, so the stage is the
    controller's choice: stage 0 while the motion is unknown (frame 0), the finest stage on
    vtest.avi's still camera (`ladder_below` 1.0: the ladder at any budget when moving)."""
    exits, lines = tmp_path / "exits.json", tmp_path / "detections.jsonl"
    exits.write_text(json.dumps({"short_sides": [64, 96, 128], "score_low": 0.1, "ladder_below": 1.0,
                                 "exit_thresholds": {"0.5": [0.0, 0.0]}}))
    video = tmp_path / "annotated.mp4"
    assert cli.main(["detect", "vtest.avi", "--model", str(tiny_yolos_dir), "--max-frames", "4",
                     "--granularity", "adaptive", "--exit-thresholds", str(exits),
                     "--json", str(lines), "--out", str(video)]) == 0
    usage = [json.loads(line)["usage"] for line in lines.read_text().splitlines()]
    assert [(u["stage"], u["short_side"], u["stages_run"]) for u in usage] == [
        (0, 64, 1), (2, 128, 1), (2, 128, 1), (2, 128, 1)]
    assert usage[0]["tokens_total"] < usage[1]["tokens_total"]  # the coarse stage's tokens
    assert usage[2]["tokens_updated"] < usage[2]["tokens_total"]  # the finest stage, gated
    assert cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) == 4


@pytest.mark.parametrize("argv", [["vtest.avi", "--budget", "0"], ["vtest.avi", "--max-frames", "0"],
                                  ["no_such_video.mp4"],
                                  ["vtest.avi", "--exit-thresholds", "exits.json"],
                                  ["vtest.avi", "--granularity", "adaptive", "--exit-thresholds",
                                   "/no/such/exits.json"],
                                  ["vtest.avi", "--granularity", "adaptive", "--score-threshold", "0.05"]])
def test_detect_rejects_bad_arguments(argv, capsys):
    assert cli.main(["detect", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_detect_granularity_is_fixed_or_adaptive(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["detect", "vtest.avi", "--granularity", "coarse"])
    assert exited.value.code == 2 and "invalid choice: 'coarse'" in capsys.readouterr().err


def test_frame_record_is_the_documented_json():
    import torch

    detections = Detections(np.array([[1.04, 2.0, 30.0, 40.96]]), np.array([0.87654]), ["person"])
    result = Result(torch.zeros(1, 4), Usage(10, 40, 1.23456, 4.5), detections, (5, 8), (80, 128))
    assert frame_record(7, StagedResult(result, 1, 3, 2), ["12"]) == {
        "frame": 7,
        "detections": [{"id": "12", "label": "person", "score": 0.8765, "box": [1.0, 2.0, 30.0, 41.0]}],
        "usage": {"tokens_updated": 10, "tokens_total": 40, "gflops": 1.2346, "gflops_dense": 4.5,
                  "stage": 1, "stages_run": 2, "short_side": 80},
    }
    untracked = frame_record(7, StagedResult(result, 0, 1, 1))
    assert untracked["detections"][0]["id"] == ""  # tracking off
    empty = Result(torch.zeros(1, 4), Usage(40, 40, 4.5, 4.5))
    assert frame_record(0, StagedResult(empty, 0, 1, 1))["detections"] == []


def test_drawing_copies_and_marks_boxes():
    image = np.zeros((120, 160, 3), np.uint8)
    drawn = drawing.draw_detections(image, np.array([[40, 50, 100, 110]]), np.array([0.9]), ["person"])
    assert not image.any()  # the input is untouched
    color = drawing.label_color("person")
    assert tuple(drawn[80, 40]) == color and tuple(drawn[110, 70]) == color  # left and bottom edges
    assert not drawn[80, 70].any()  # inside the box stays clear
    assert drawing.label_color("person") != drawing.label_color("car")


def test_overlay_lines_and_annotate():
    usage = Usage(tokens_updated=344, tokens_total=1377, gflops=5.6, gflops_dense=22.4)
    assert drawing.usage_lines(usage, budget=0.25) == ["budget 0.25", "tokens 344/1377 (25%)", "GFLOPs 5.6/22.4"]
    assert drawing.usage_lines(usage, stage=(1, 336))[-1] == "stage 1 (336 px)"
    image = np.full((200, 300, 3), 128, np.uint8)
    annotated = drawing.annotate(image, None, usage, 0.25)
    assert annotated.shape == image.shape and (annotated[2:10, 2:10] == 0).any()  # dark panel top-left
    assert (annotated[150:, 200:] == 128).all()
