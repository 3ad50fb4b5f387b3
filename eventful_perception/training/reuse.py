"""Distil DVT feature reuse into a ladder stage: `python -m eventful_perception.training reuse`.

Unlabeled training footage only (`footage.TRAIN_VIDEOS`; `vtest.avi` from frame 200 on, so the
exit-threshold calibration frames 0-119 and the ladder benchmark's frames 120-151 stay unseen):
each sample is a frame, whole or a 3/4-width window at a random place (the `--pan` geometry),
randomly flipped. The target is the dense finest stage's detections of the sample (score >= 0.5
persons; 0.3-0.5 ignore regions); the upstream stage's final tokens are the reuse input. Both are
cached per sample. Only the reuse module learns; backbone and head are frozen, and the adapters
start at zero, so training starts from the stage without reuse.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from eventful_perception.eventful.counting import FlopCounter
from eventful_perception.models.base import EventfulViT
from eventful_perception.models.token_head import token_centers
from eventful_perception.reuse import FeatureReuse, Reused, ReuseConfig
from eventful_perception.training import footage
from eventful_perception.training.targets import assign
from eventful_perception.training.train import TokenTable, detection_loss

REUSE_FIRST_VTEST_FRAME = 200  # vtest 0-119 calibrate the exits, 120-151 benchmark the ladder
_IGNORE_SCORE = 0.3


@dataclass(frozen=True)
class ReuseTrainConfig:
    """Distillation hyper-parameters (written beside the module as `training.json`)."""

    upstream_side: int = 224
    downstream_side: int = 336
    epochs: int = 8
    learning_rate: float = 2e-4  # 1e-3 diverged in the second epoch (mean loss 1.73 -> 3.86)
    clip_norm: float = 1.0
    weight_decay: float = 0.01
    crop_share: float = 0.5  # samples that are a 3/4-width window instead of the whole frame
    frames_every: int = 2  # samples per labelled frame of the head's spans (unlabeled: any frame)
    seed: int = 0


@dataclass(frozen=True)
class SampleSpec:
    """One training sample: a frame, an optional window (x, width) and a flip."""

    source: str
    frame: int
    window: tuple[int, int] | None
    flip: bool

    @property
    def key(self) -> str:
        window = "whole" if self.window is None else f"x{self.window[0]}w{self.window[1]}"
        return f"{Path(self.source).stem}-{self.frame}-{window}-{'flip' if self.flip else 'noflip'}"

    def render(self, rgb: np.ndarray) -> np.ndarray:
        if self.window is not None:
            x, width = self.window
            rgb = rgb[:, x:x + width]
        return np.ascontiguousarray(rgb[:, ::-1] if self.flip else rgb)


def plan_samples(config: ReuseTrainConfig) -> list[SampleSpec]:
    """The seeded sample plan over the training videos' spans, `frames_every` times as dense."""
    rng = np.random.default_rng(config.seed)
    specs = []
    for span in footage.TRAIN_VIDEOS:
        first = max(span.start, REUSE_FIRST_VTEST_FRAME) if span.name == "vtest.avi" else span.start
        denser = replace(span, start=first, step=max(1, span.step // config.frames_every))
        frames = denser.frames(footage.frame_count(span.name))
        width = _frame_width(span.name)
        for frame in frames:
            window = None
            if rng.random() < config.crop_share:
                crop = width * 3 // 4
                window = (int(rng.integers(0, width - crop + 1)), crop)
            specs.append(SampleSpec(span.name, frame, window, bool(rng.random() < 0.5)))
    return specs


def _frame_width(source: str) -> int:
    return next(footage.video_frames(source, [0]))[1].shape[1]


@dataclass(frozen=True)
class Target:
    """A sample's cached inputs: upstream tokens (1, N_up, D) and grid, the finest stage's boxes
    and ignore regions (frame pixels)."""

    upstream: torch.Tensor
    grid: tuple[int, int]
    boxes: torch.Tensor  # (P, 4)
    ignore: torch.Tensor  # (Q, 4)


def _rendered(specs: list[SampleSpec]):
    """(spec, its RGB sample) in plan order, decoding each video once."""
    for source in dict.fromkeys(spec.source for spec in specs):
        mine = [spec for spec in specs if spec.source == source]
        frames = dict(footage.video_frames(source, sorted({spec.frame for spec in mine})))
        for spec in mine:
            yield spec, spec.render(frames[spec.frame])


def make_target(model: EventfulViT, rgb: np.ndarray, config: ReuseTrainConfig) -> Target:
    """The dense stages' outputs that a sample's training step needs."""
    upstream = model.dense(rgb, short_side=config.upstream_side)
    finest = model.dense(rgb, score_threshold=_IGNORE_SCORE)
    scores = torch.from_numpy(finest.detections.scores)
    boxes = torch.from_numpy(finest.detections.boxes)
    person = scores >= model.default_score_threshold
    return Target(upstream.features[None].half(), upstream.grid, boxes[person], boxes[~person])


def save_target(target: Target, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"upstream": target.upstream.contiguous(), "grid": torch.tensor(target.grid),
               "boxes": target.boxes.contiguous(), "ignore": target.ignore.contiguous()}, str(path))


def load_target(path: Path) -> Target:
    data = load_file(str(path))
    return Target(data["upstream"], tuple(data["grid"].tolist()), data["boxes"], data["ignore"])


def distillation_loss(model: EventfulViT, module: FeatureReuse, rgb: np.ndarray, target: Target,
                      side: int) -> torch.Tensor:
    """The head's detection loss on the reuse-fed stage at short side `side` against the
    finest stage's detections."""
    model_input = model.preprocess(rgb, side)
    reused = Reused(module, target.upstream.float(), target.grid)
    tokens, grid, _ = model.encode(model_input.pixels, FlopCounter(), reuse=reused)
    scale = torch.tensor(model_input.scale * 2)  # frame px per model px, (x, y, x, y)
    boxes, ignore = target.boxes / scale, target.ignore / scale
    patch = model.patch_size
    targets = assign(boxes, torch.zeros(len(boxes), dtype=torch.long), ignore, grid, patch)
    table = TokenTable(tokens[0, model.first_patch_token:], token_centers(grid, patch), targets.positive,
                       targets.quality, targets.ignore, targets.boxes)
    return detection_loss(model.head, table, torch.arange(len(table.tokens)))


def mean_loss(model: EventfulViT, module: FeatureReuse | None, samples: list[tuple[np.ndarray, Target]],
              config: ReuseTrainConfig) -> float:
    """The mean distillation loss over `samples` (`module` None: the stage without reuse)."""
    module = module or FeatureReuse(ReuseConfig(model.config.hidden_size, len(model.blocks),
                                                config.upstream_side, config.downstream_side))
    with torch.no_grad():
        return float(np.mean([distillation_loss(model, module, rgb, target, config.downstream_side).item()
                              for rgb, target in tqdm(samples, desc="loss", unit="sample", leave=False)]))


def train_reuse(model: EventfulViT, samples: list[tuple[np.ndarray, Target]],
                config: ReuseTrainConfig) -> FeatureReuse:
    """Fit a fresh module (zero adapters) with AdamW and a one-cycle schedule, one sample a step."""
    torch.manual_seed(config.seed)
    module = FeatureReuse(ReuseConfig(model.config.hidden_size, len(model.blocks),
                                      config.upstream_side, config.downstream_side))
    model.requires_grad_(False)
    optimizer = torch.optim.AdamW(module.parameters(), config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate,
                                                   total_steps=config.epochs * len(samples))
    order = np.random.default_rng(config.seed)
    progress = tqdm(range(config.epochs), desc="train reuse", unit="epoch")
    for _ in progress:
        losses = []
        for i in tqdm(order.permutation(len(samples)), desc="samples", unit="sample", leave=False):
            rgb, target = samples[i]
            loss = distillation_loss(model, module, rgb, target, config.downstream_side)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), config.clip_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(losses):.3f}")
    return module.eval().requires_grad_(False)


def run_reuse(model: EventfulViT, work: Path, out: Path, config: ReuseTrainConfig) -> FeatureReuse:
    """Plan, cache the targets, train, and save the module to `out/<up>-<down>/`."""
    footage.ensure_footage()
    specs = plan_samples(config)
    samples = []
    for spec, rgb in tqdm(_rendered(specs), total=len(specs), desc="reuse targets", unit="sample"):
        path = work / _stages(config) / _head_digest(model) / f"{spec.key}.safetensors"
        if not path.is_file():
            with torch.inference_mode():
                save_target(make_target(model, rgb, config), path)
        samples.append((rgb, load_target(path)))
    print(f"[reuse] {len(samples)} samples, {sum(len(t.boxes) for _, t in samples)} person boxes", flush=True)
    before = mean_loss(model, None, samples, config)
    print(f"[reuse] distillation loss without reuse: {before:.3f}", flush=True)
    module = train_reuse(model, samples, config)
    after = mean_loss(model, module, samples, config)
    print(f"[reuse] distillation loss with reuse: {after:.3f}", flush=True)
    folder = out / _stages(config)
    module.save(folder)
    recipe = asdict(config) | {"samples": len(samples), "loss_without_reuse": round(before, 3),
                               "loss_with_reuse": round(after, 3)}
    (folder / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(f"[reuse] module -> {folder}", flush=True)
    return module


def _stages(config: ReuseTrainConfig) -> str:
    return f"{config.upstream_side}-{config.downstream_side}"


def _head_digest(model: EventfulViT) -> str:
    """Targets are the head's detections: a retrained head must not reuse the old ones."""
    digest = hashlib.sha256(json.dumps(asdict(model.head.config), sort_keys=True).encode())
    for name, tensor in sorted(model.head.state_dict().items()):
        digest.update(name.encode() + tensor.float().numpy().tobytes())
    return digest.hexdigest()[:12]
