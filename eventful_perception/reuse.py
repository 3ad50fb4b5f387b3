"""DVT feature reuse (Wang et al. 2021): a coarser stage's final tokens help the next stage.

DVT passes the upstream final tokens through LayerNorm + MLP (D -> 128 -> 48), reshapes them to
the upstream grid, upsamples them to the downstream grid and concatenates the 48 channels to the
input of every downstream MLP (the class token gets zeros). Here the backbone is frozen, so the
concatenation's extra input columns become one zero-initialised, bias-free linear adapter per
layer (48 -> D) whose output is added to the tokens entering that layer: at initialisation the
stage is exactly the plain model, and the class token (zeros in) stays untouched. An additive
input keeps the Eventful method intact: the gates see the added term like any other change.

The adapters are trained by distillation (`python -m eventful_perception.training reuse`): the
target is the dense finest stage's detections, so reuse into the finest stage itself has nothing
to learn (its optimum is zero) and only the intermediate stages get a module.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .eventful.counting import FlopCounter

if TYPE_CHECKING:
    from .models.base import EventfulViT
    from .models.results import Result

CONFIG_FILE = "reuse.json"


@dataclass(frozen=True)
class ReuseConfig:
    """One module's shapes and the stages it joins (short sides), stored as `reuse.json`."""

    hidden_size: int  # D, the backbone's width
    layers: int  # downstream layers that get an adapter
    upstream_side: int
    downstream_side: int
    mlp_dim: int = 128  # DVT's reuse MLP
    channels: int = 48  # DVT's reused channels per token

    def __post_init__(self) -> None:
        if not 0 < self.upstream_side < self.downstream_side:
            raise ValueError(f"feature reuse goes from a coarser stage to a finer one, got short "
                             f"sides {self.upstream_side} -> {self.downstream_side}")


class FeatureReuse(nn.Module):
    """Upstream final tokens -> one additive offset (1, N, D) per downstream layer."""

    def __init__(self, config: ReuseConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.hidden_size)
        self.fc1 = nn.Linear(config.hidden_size, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.channels)
        self.adapters = nn.ModuleList(
            nn.Linear(config.channels, config.hidden_size, bias=False) for _ in range(config.layers))
        for adapter in self.adapters:
            nn.init.zeros_(adapter.weight)

    def forward(self, reused: Reused, grid: tuple[int, int], first_patch_token: int, n_tokens: int,
                counter: FlopCounter) -> list[torch.Tensor]:
        """Per-layer offsets (1, `n_tokens`, D) for a downstream `grid` whose patch tokens start
        at `first_patch_token`; the other tokens (class, detection tokens) get zeros."""
        up_h, up_w = reused.grid
        patches = reused.tokens[:, first_patch_token:first_patch_token + up_h * up_w]  # (1, up_h * up_w, D)
        n_up = patches.shape[1]
        hidden = F.gelu(counter.linear(self.fc1, self.norm(patches), n_up))
        channels = counter.linear(self.fc2, hidden, n_up)  # (1, up_h * up_w, C)
        maps = channels.transpose(1, 2).reshape(1, -1, up_h, up_w)  # (1, C, up_h, up_w)
        maps = F.interpolate(maps, size=grid, mode="bilinear", align_corners=False)  # (1, C, H, W)
        per_token = maps.flatten(2).transpose(1, 2)  # (1, H * W, C)
        after = n_tokens - first_patch_token - per_token.shape[1]
        per_token = F.pad(per_token, (0, 0, first_patch_token, after))  # (1, N, C)
        return [counter.linear(adapter, per_token, n_tokens) for adapter in self.adapters]

    @classmethod
    def from_folder(cls, path: str | Path) -> FeatureReuse:
        """A module saved by `save` (`reuse.json` + `reuse.safetensors`), loaded strictly."""
        path = Path(path)
        try:
            config = ReuseConfig(**json.loads((path / CONFIG_FILE).read_text()))
        except (OSError, TypeError, ValueError) as error:
            raise ValueError(f"feature reuse folder {path}: {error}") from None
        module = cls(config)
        module.load_state_dict(load_file(str(path / "reuse.safetensors")), strict=True)
        return module.eval().requires_grad_(False)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "reuse.safetensors"), metadata={"format": "pt"})


@dataclass(frozen=True)
class Reused:
    """What one frame passes from a stage to the next: its final tokens (1, N_up, D) on their
    grid, and the module that turns them into the next stage's offsets."""

    module: FeatureReuse
    tokens: torch.Tensor
    grid: tuple[int, int]

    def offsets(self, grid: tuple[int, int], first_patch_token: int, n_tokens: int,
                counter: FlopCounter) -> list[torch.Tensor]:
        return self.module(self, grid, first_patch_token, n_tokens, counter)


def pass_on(module: FeatureReuse | None, result: Result, device: torch.device) -> Reused | None:
    """What a stage's `result` passes to the next stage of the same frame (None: no module)."""
    if module is None:
        return None
    tokens = result.features[None].to(device, next(module.parameters()).dtype)  # (1, N_up, D)
    return Reused(module, tokens, result.grid)


def check_reuse(modules: dict[int, FeatureReuse], short_sides: tuple[int, ...],
                model: EventfulViT | None = None) -> dict[int, FeatureReuse]:
    """`modules` (downstream stage index -> module) if each joins the stages it was trained
    between (and fits `model`'s width and depth: then moved to its device and dtype);
    ValueError otherwise."""
    for stage, module in modules.items():
        if model is not None and (module.config.hidden_size, module.config.layers) != (
                model.config.hidden_size, len(model.blocks)):
            raise ValueError(f"feature reuse into stage {stage} was trained for width "
                             f"{module.config.hidden_size} and {module.config.layers} layers, the model has "
                             f"{model.config.hidden_size} and {len(model.blocks)}")
        if not 0 < stage < len(short_sides):
            raise ValueError(f"feature reuse into stage {stage}: the ladder has stages 1..{len(short_sides) - 1} "
                             f"after its first")
        expected = (short_sides[stage - 1], short_sides[stage])
        found = (module.config.upstream_side, module.config.downstream_side)
        if found != expected:
            raise ValueError(f"feature reuse into stage {stage} expects short sides {expected}, "
                             f"the module was trained for {found}")
        if model is not None:
            module.to(model.device, model.dtype)
    return modules


def load_reuse(folder: str | Path, short_sides: tuple[int, ...]) -> dict[int, FeatureReuse]:
    """Every module under `folder` (one sub-folder each, e.g. `224-336/`; "" none, "default" the
    default detector's shipped ones), keyed by the ladder stage it feeds."""
    if str(folder) in ("", "none"):
        return {}
    if str(folder) == "default":
        from .assets import default_reuse_dir

        folder = default_reuse_dir()
    if not Path(folder).is_dir():
        raise ValueError(f"feature reuse folder {folder} does not exist")
    modules = {}
    for sub in sorted(p for p in Path(folder).iterdir() if (p / CONFIG_FILE).is_file()):
        module = FeatureReuse.from_folder(sub)
        if module.config.downstream_side not in short_sides:
            raise ValueError(f"feature reuse {sub}: short side {module.config.downstream_side} is "
                             f"not a stage of {short_sides}")
        modules[short_sides.index(module.config.downstream_side)] = module
    return check_reuse(modules, short_sides)
