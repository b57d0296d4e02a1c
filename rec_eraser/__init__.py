"""rec-eraser: unlearning for LLM-based recommenders by influence functions on LoRA adapters."""

__version__ = "0.1.0"
