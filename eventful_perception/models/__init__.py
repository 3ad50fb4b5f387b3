"""Backbones and heads loaded from Hugging Face checkpoint folders; see `loading.load_model`."""
