"""Tiny random Hugging Face checkpoints for fast tests, shared by conftest and the node harness."""
from __future__ import annotations

from pathlib import Path


def save_random(model_class, config, folder: Path, scale: float = 0.05) -> Path:
    """Build `model_class(config)` from a fixed seed (the same weights in every test run), give
    every parameter (biases, norms, layer scales, detection tokens and position embeddings too)
    random values, then save_pretrained: parameters that transformers initialises to zeros would
    otherwise make tokens identical and every detection the same."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = model_class(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    return folder
