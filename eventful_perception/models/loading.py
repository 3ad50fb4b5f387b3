"""`load_model`: the default detector or a Hugging Face checkpoint folder, no download."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .base import EventfulViT

# transformers >= 5 names some modules differently in memory; checkpoints keep the classic keys.
_RENAMES = (
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
    ("encoder.interpolation.mid_position_embeddings", "encoder.mid_position_embeddings"),
)
# Prefixes of backbones stored inside larger models (image classifiers, ONNX exports).
_PREFIXES = ("dinov2.", "backbone.")


def load_model(path_or_name: str | Path, device: str | torch.device = "cpu",
               short_side: int | None = None) -> EventfulViT:
    """Load `"default"` (DINOv2-S backbone + person token head) or a checkpoint folder.

    A folder holds `config.json` plus `model.safetensors` or `pytorch_model.bin` of a Hugging Face
    `Dinov2Model` (features only) or `YolosForObjectDetection` (COCO detections). `short_side`
    overrides the resize target of the frames' short side. `device` may be "auto" (CUDA if present).
    """
    if str(path_or_name) == "default":
        model = _load_default(short_side)
    else:
        model = load_checkpoint(Path(path_or_name), short_side)
    return model.to(_device(device)).eval()


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load_default(short_side: int | None) -> EventfulViT:
    from ..assets import default_backbone_dir, default_head_dir
    from .token_head import TokenHead

    folder = default_backbone_dir()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"default backbone not found in {folder}; run `eventful-perception setup`")
    return load_checkpoint(folder, short_side, TokenHead.from_folder(default_head_dir()))


def load_checkpoint(folder: Path, short_side: int | None = None, head: nn.Module | None = None) -> EventfulViT:
    """Build the model described by `folder/config.json` and load its weights strictly; `head`
    (a `TokenHead`, already loaded) turns a DINOv2 backbone into a detector."""
    from .dinov2 import DEFAULT_SHORT_SIDE, Dinov2Config, Dinov2Model
    from .yolos import YolosConfig, YolosForObjectDetection, read_image_processor

    config = read_config(folder)
    model_type = config.get("model_type")
    if model_type == "dinov2":
        model = Dinov2Model(Dinov2Config.from_dict(config), short_side or DEFAULT_SHORT_SIDE, head)
    elif head is not None:
        raise ValueError(f"{folder}: a token head needs a DINOv2 backbone, got model_type {model_type!r}")
    elif model_type == "yolos":
        model = YolosForObjectDetection(YolosConfig.from_dict(config), read_image_processor(folder), short_side)
    else:
        raise ValueError(f"{folder}: unsupported model_type {model_type!r}; expected 'dinov2' or 'yolos'")
    # the head's own weights are loaded already (`TokenHead.from_folder`)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()
                if not key.startswith("head.")}
    model.load_state_dict(convert_state_dict(read_state_dict(folder), expected), strict=head is None)
    return model


def read_config(folder: Path) -> dict:
    """The parsed `config.json` of a checkpoint folder."""
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not a checkpoint folder: no config.json")
    return json.loads(path.read_text())


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Tensors of `model.safetensors` or, failing that, `pytorch_model.bin` (weights only)."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ValueError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


def convert_state_dict(state: dict[str, torch.Tensor],
                       expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Map checkpoint keys onto the model's (renames, backbone prefixes); pure function.

    Raises ValueError listing every missing, unexpected and mis-shaped key.
    """
    converted = {}
    for key, value in state.items():
        for old, new in _RENAMES:
            key = key.replace(old, new)
        prefix = next((p for p in _PREFIXES if key.startswith(p) and key[len(p):] in expected), "")
        converted[key[len(prefix):]] = value
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    misshaped = sorted(f"{key}: checkpoint {tuple(converted[key].shape)}, model {expected[key]}"
                       for key in set(expected) & set(converted)
                       if tuple(converted[key].shape) != expected[key])
    if missing or unexpected or misshaped:
        raise ValueError(f"checkpoint does not match the model: missing {missing}, "
                         f"unexpected {unexpected}, mis-shaped {misshaped}")
    return converted
