"""YOLOS: equality with transformers, detections in original pixels, detection tokens always on."""
import json

import cv2
import numpy as np
import pytest
import torch

from eventful_perception.eventful.counting import FlopCounter
from eventful_perception.eventful.policy import TopR
from eventful_perception.models.loading import load_model

pytestmark = pytest.mark.usefixtures("single_thread")


def _reference(folder):
    from transformers import YolosForObjectDetection

    return YolosForObjectDetection.from_pretrained(folder, local_files_only=True).eval()


@pytest.mark.parametrize("size", [(64, 96), (48, 80), (128, 176)])
@pytest.mark.parametrize("mid_positions", [True, False])
def test_dense_equals_transformers(tiny_yolos_dir, tmp_path, size, mid_positions):
    folder = tiny_yolos_dir
    if not mid_positions:
        reference = _reference(tiny_yolos_dir)
        reference.config.use_mid_position_embeddings = False
        from transformers import YolosForObjectDetection

        reference = YolosForObjectDetection(reference.config).eval()
        reference.save_pretrained(tmp_path)
        folder = tmp_path
    reference, ours = _reference(folder), load_model(folder)
    pixels = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(pixel_values=pixels)
        tokens = ours.encode(pixels, FlopCounter())[0]
        logits, boxes = ours.head_outputs(tokens, FlopCounter())
    assert (tokens - expected.last_hidden_state).abs().max() <= 1e-4
    assert (logits - expected.logits).abs().max() <= 1e-4
    assert (boxes - expected.pred_boxes).abs().max() <= 1e-4


def test_detections_are_in_original_pixels(tiny_yolos_dir, vtest_frames):
    model = load_model(tiny_yolos_dir)
    assert model.labels == ["N/A", "person", "car"]
    frame = vtest_frames[0]
    result = model.dense(frame, score_threshold=0.0)
    assert result.input_size == (128, 176)  # preprocessor_config: short side 128
    model_input = model.preprocess(frame)
    with torch.no_grad():
        logits, boxes = model.head_outputs(model.encode(model_input.pixels, FlopCounter())[0], FlopCounter())
    cx, cy, w, h = boxes[0].unbind(-1)
    expected = torch.stack([(cx - w / 2) * 768, (cy - h / 2) * 576, (cx + w / 2) * 768, (cy + h / 2) * 576], -1)
    scores, classes = logits[0].softmax(-1)[:, :-1].max(-1)
    assert len(result.detections) == 5
    assert np.allclose(result.detections.boxes, expected.numpy(), atol=1e-3)
    assert np.allclose(result.detections.scores, scores.numpy(), atol=1e-6)
    assert result.detections.labels == [model.labels[i] for i in classes.tolist()]
    assert result.detections.boxes.dtype == np.float32 and result.detections.scores.dtype == np.float32
    # the same scene at twice the size gives the same boxes at twice the coordinates
    bigger = cv2.resize(frame, (1536, 1152), interpolation=cv2.INTER_CUBIC)
    doubled = model.dense(bigger, score_threshold=0.0).detections
    assert np.allclose(doubled.boxes, 2 * result.detections.boxes, rtol=0.02, atol=2.0)
    assert len(model.dense(frame, score_threshold=1.0).detections) == 0


def test_eventful_full_budget_equals_dense_and_detection_tokens_always_update(tiny_yolos_dir, vtest_frames):
    model = load_model(tiny_yolos_dir)
    stream = model.new_stream()
    for frame in vtest_frames[:10]:
        result, dense = model(frame, stream, budget=1.0), model.dense(frame, score_threshold=0.0)
        assert (result.features - dense.features).abs().max() <= 1e-4
    assert result.usage.tokens_total == 1 + 88 + 5
    assert model(vtest_frames[10], stream, policy=TopR(0)).usage.tokens_per_block == (6, 6, 6)
    cheap = model(vtest_frames[11], stream, budget=0.02, score_threshold=0.0)
    assert cheap.usage.tokens_per_block[0] == 6 + 2 and len(cheap.detections) == 5


def test_preprocessor_config_variants(tiny_yolos_dir, tmp_path):
    from eventful_perception.models.yolos import read_image_processor

    assert read_image_processor(tiny_yolos_dir).short_side == 128
    old_style = {"size": 512, "max_size": 864, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(old_style))
    settings = read_image_processor(tmp_path)
    assert (settings.short_side, settings.max_long_side, settings.mean) == (512, 864, (0.5, 0.5, 0.5))
    assert read_image_processor(tmp_path / "absent").short_side == 800
    assert load_model(tiny_yolos_dir, short_side=64).dense(np.zeros((576, 768, 3), np.uint8)).input_size == (64, 80)
