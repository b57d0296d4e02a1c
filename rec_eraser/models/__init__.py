"""Base models: the embedded default and local Hugging Face folders."""

from rec_eraser.models.embedded import EmbeddedModelError, embedded_model_dir, load_causal_lm

__all__ = ["EmbeddedModelError", "embedded_model_dir", "load_causal_lm"]
