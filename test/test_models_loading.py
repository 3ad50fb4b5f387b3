"""load_model: checkpoint folders, bad folders, a token head on DINOv2, the default detector."""
import json

import numpy as np
import pytest
import torch

import eventful_perception as ep
from eventful_perception.models.dinov2 import Dinov2Model
from eventful_perception.models.yolos import YolosForObjectDetection


@pytest.mark.usefixtures("single_thread")
def test_public_api_on_checkpoint_folders(tiny_dinov2_dir, tiny_yolos_dir, vtest_frames):
    backbone, detector = ep.load_model(tiny_dinov2_dir, device="auto"), ep.load_model(str(tiny_yolos_dir))
    assert isinstance(backbone, Dinov2Model) and isinstance(detector, YolosForObjectDetection)
    stream = backbone.new_stream()
    result = backbone(vtest_frames[0], stream, budget=0.3)
    assert isinstance(result, ep.Result) and isinstance(result.usage, ep.Usage)
    assert result.detections is None and result.features.shape == (1 + 32 * 43, 32)
    assert result.features.dtype == torch.float32 and result.features.device.type == "cpu"
    assert isinstance(detector.dense(vtest_frames[0]).detections, ep.Detections)


def test_bad_folders_are_rejected(tmp_path, tiny_dinov2_dir):
    with pytest.raises(ValueError, match="config.json"):
        ep.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="unsupported model_type 'bert'"):
        ep.load_model(tmp_path)
    (tmp_path / "config.json").write_text((tiny_dinov2_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="neither model.safetensors nor pytorch_model.bin"):
        ep.load_model(tmp_path)
    config = json.loads((tiny_dinov2_dir / "config.json").read_text()) | {"hidden_size": 48}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((tiny_dinov2_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="mis-shaped"):
        ep.load_model(tmp_path)


@pytest.mark.usefixtures("single_thread")
def test_token_head_detections_are_rescaled_to_original_pixels(tiny_dinov2_dir, vtest_frames):
    from eventful_perception.models.token_head import TokenHead, TokenHeadConfig

    from eventful_perception.models.loading import load_checkpoint

    torch.manual_seed(0)
    head = TokenHead(TokenHeadConfig(labels=("person",), hidden_size=32)).eval()
    model = load_checkpoint(tiny_dinov2_dir, short_side=112, head=head)
    result = model.dense(vtest_frames[0], score_threshold=0.0)
    tokens = result.features[None, 1:]  # (1, 88, D)
    in_input = model.head.predict(tokens, grid=(8, 11), patch_size=14, score_threshold=0.0)[0]
    assert len(result.detections) == len(in_input) > 0
    scale = np.array([768 / 154, 576 / 112] * 2, np.float32)
    assert np.allclose(result.detections.boxes, in_input.boxes * scale, atol=1e-3)
    assert set(result.detections.labels) == {"person"} and model.labels == ["person"]
    stream = model.new_stream()
    for frame in vtest_frames[:3]:
        assert isinstance(model(frame, stream, budget=0.2).detections, ep.Detections)


def test_default_detector_loads_and_detects(vtest_frames):
    model = ep.load_model("default")
    assert "person" in model.labels
    result = model(vtest_frames[0], model.new_stream(), budget=0.5)
    assert result.features.shape == (1377, 384)
    boxes = result.detections.boxes
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and len(boxes) >= 3  # the walkers
    assert (boxes >= 0).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes[:, [0, 2]] <= 768 + 1e-3).all() and (boxes[:, [1, 3]] <= 576 + 1e-3).all()
    assert set(result.detections.labels) <= set(model.labels)
