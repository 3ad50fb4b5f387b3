"""Tiny random Hugging Face checkpoints for fast tests, shared by conftest and the node harness."""
from __future__ import annotations

from pathlib import Path


def perturb_and_save(model, folder: Path, scale: float = 0.05) -> Path:
    """Give every parameter (biases, norms, layer scales, detection tokens and position
    embeddings too) random values, then save_pretrained: parameters that transformers
    initialises to zeros would otherwise make tokens identical and every detection the same."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    return folder
