"""The 7B-shaped plan: its exact counts against real models, its extrapolation on a tiny shape."""

from __future__ import annotations

import pytest

from rec_eraser.core.fisher import fisher_memory_bytes
from rec_eraser.workflows.model_scale import (
    LLAMA2_7B,
    TARGETS,
    base_parameters,
    build_random_model,
    lora_parameters,
    markdown,
    model_scale_plan,
)

TINY = {
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_the_counts_are_the_models_own(name):
    model = build_random_model(TINY, TINY["num_hidden_layers"], TARGETS[name], rank=4, tokens=8)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_parameters(TINY, TARGETS[name], 4) == trainable
    assert base_parameters(TINY) == sum(p.numel() for p in model.parameters() if not p.requires_grad)


def test_llama2_7b_counts_are_the_published_ones():
    assert base_parameters(LLAMA2_7B) == 6_738_415_616  # Llama-2-7B's parameter count
    assert lora_parameters(LLAMA2_7B, TARGETS["q,v"], 8) == 4_194_304
    assert lora_parameters(LLAMA2_7B, TARGETS["all linear"], 8) == 19_988_480


def test_the_plan_on_a_tiny_shape():
    plan = model_scale_plan(tokens=16, sample_size=8, edited=2, train_instances=100, epochs=2, repeats=1, shape=TINY)
    assert plan["update_passes"] == 10 and plan["retrain_passes"] == 200 and plan["ratio_to_retrain"] == 0.05
    for name, row in plan["targets"].items():
        assert row["fisher_memory_gb"] * 2**30 == fisher_memory_bytes(8, lora_parameters(TINY, TARGETS[name], 8))
        here, timed = row["this_machine"], row["measured_pass_seconds"]
        # the whole model's pass: the 1-layer time plus 2 more layers at the measured cost of one
        one, two = timed["1_layer"], timed["2_layers"]
        assert one > 0 and here["pass_seconds"] == pytest.approx(one + 2 * max(two - one, 0.0))
        assert (here["update_seconds"], here["retrain_seconds"]) == pytest.approx(
            (10 * here["pass_seconds"], 200 * here["pass_seconds"])
        )
    table = markdown(plan)
    assert table.count("\n| q,v |") == 1 and table.count("\n| all linear |") == 1 and "estimate" in table
    # a shape that is not Llama-2-7B's is not called so, and extrapolates to its own layer count
    assert "Llama-2-7B" not in table and "3-layer, hidden-64 shape" in table and "extrapolated to 3." in table
