"""Shared fixtures: a tiny random Llama saved as a local model folder (with the embedded model's tokenizer), a small prepared run."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from rec_eraser.models.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(str(embedded_model_dir()), local_files_only=True)


def save_tiny_llama(folder: Path, tokenizer, initializer_range: float = 0.02) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


@pytest.fixture(scope="session")
def learnable_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny Llama whose LoRA can memorise: with the default init (0.02) over a 49k vocabulary
    its logits stay within about ±1, so no adapter can make any answer likely."""
    return save_tiny_llama(tmp_path_factory.mktemp("learnable-llama"), tokenizer, initializer_range=0.3)


@pytest.fixture(scope="session")
def tallrec_run(tmp_path_factory) -> Path:
    from rec_eraser.tasks.prepare import prepare

    run = tmp_path_factory.mktemp("runs") / "tallrec"
    prepare("ml-100k", "tallrec", run, max_users=6)
    return run


@pytest.fixture(scope="session")
def llara_run(tmp_path_factory) -> Path:
    from rec_eraser.tasks.prepare import prepare

    run = tmp_path_factory.mktemp("runs") / "llara"
    prepare("ml-100k", "llara", run, max_users=6, negatives=4)
    return run
