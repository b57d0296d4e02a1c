"""``rec-eraser bench model-scale``: what an update and a Retrain cost on a 7B-shaped model.

Teams serve LLM4Rec on Llama-2-7B-sized models; rec-eraser is measured on SmolLM2-135M. This
study makes the step with as little guessing as it can:

- **Counted exactly**: LoRA's parameters for a rank and target modules on the Llama-2-7B shape
  (hidden 4096, MLP 11008, 32 layers, vocabulary 32000), the host memory of the default update's
  Fisher rows (:func:`rec_eraser.core.fisher.fisher_memory_bytes`), and the gradient passes an
  update and a Retrain make (``sample_size`` rows plus the edited instances' forms, against
  epochs × training instances).
- **Measured**: the seconds of one instance's forward and backward pass (what one Fisher row or
  one instance of a training step costs) on randomly initialised 7B-shaped decoder layers in
  bfloat16 on this machine (random weights cost what trained ones do). A 7B model does not fit
  twice into small machines, so 1 and 2 layers are timed and the 32-layer time is extrapolated
  linearly (every decoder layer costs the same; the embeddings and the head are the intercept).
- **Estimated, and labelled so**: the seconds on an A100 from the pass's floating-point
  operations (4 × base parameters × tokens: 2 forward, 2 for the input gradients of the frozen
  weights) at an assumed model-FLOPs utilisation, beside the paper's Table 9 (A100: 1.50e3 s per
  request, 1.68e4 s for Retrain).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Say = Callable[[str], None]

#: Llama-2-7B's shape (its config.json), which the study builds with random weights.
LLAMA2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
}
#: LoRA's target modules: the TALLRec/LLaRA default (q, v) and every linear layer of a block.
TARGETS = {
    "q,v": ("q_proj", "v_proj"),
    "all linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
#: The paper's Table 9 (LLMEraser on Llama-2-7B, one A100): seconds per request and for Retrain.
PAPER_TABLE9 = {"update_seconds": 1.50e3, "retrain_seconds": 1.68e4}
#: An A100's dense bfloat16 peak (FLOP/s); the utilisation is an assumption, printed with it.
A100_BF16_PEAK = 312e12


def _module_shapes(shape: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear module of one Llama decoder layer."""
    hidden, mlp = shape["hidden_size"], shape["intermediate_size"]
    kv = hidden * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return {
        "q_proj": (hidden, hidden),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (hidden, hidden),
        "gate_proj": (hidden, mlp),
        "up_proj": (hidden, mlp),
        "down_proj": (mlp, hidden),
    }


def lora_parameters(shape: dict[str, int], targets: tuple[str, ...], rank: int) -> int:
    """LoRA's trainable parameters: rank × (in + out) for each target module of each layer."""
    modules = _module_shapes(shape)
    return shape["num_hidden_layers"] * sum(rank * sum(modules[t]) for t in targets)


def base_parameters(shape: dict[str, int]) -> int:
    """The base model's parameters (untied embeddings and head, as Llama-2's; norms included)."""
    hidden = shape["hidden_size"]
    per_layer = sum(i * o for i, o in _module_shapes(shape).values()) + 2 * hidden
    return shape["num_hidden_layers"] * per_layer + 2 * shape["vocab_size"] * hidden + hidden


def build_random_model(shape: dict[str, int], layers: int, targets: tuple[str, ...], rank: int, tokens: int):
    """A randomly initialised ``layers``-layer Llama of ``shape`` in bfloat16 with LoRA on ``targets``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**shape, "num_hidden_layers": layers}, max_position_embeddings=max(4096, tokens))
    model = LlamaForCausalLM._from_config(config, torch_dtype=torch.bfloat16)
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets)))


def _pass_seconds(
    shape: dict[str, int], layers: int, targets: tuple[str, ...], rank: int, tokens: int, repeats: int, seed: int
) -> float:
    """Median seconds of one forward and backward pass of one ``tokens``-long instance through a
    randomly initialised ``layers``-layer Llama of ``shape`` in bfloat16 with LoRA on ``targets``."""
    import torch

    torch.manual_seed(seed)
    model = build_random_model(shape, layers, targets, rank, tokens)
    ids = torch.randint(0, shape["vocab_size"], (1, tokens))
    seconds = []
    for i in range(repeats + 1):  # the first pass pays for allocations: not timed
        t0 = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        if i:
            seconds.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    del model
    return statistics.median(seconds)


def model_scale_plan(
    tokens: int = 300,
    rank: int = 8,
    sample_size: int = 64,
    edited: int = 20,
    train_instances: int = 10_000,
    epochs: int = 3,
    repeats: int = 3,
    mfu: float = 0.4,
    seed: int = 0,
    say: Say | None = None,
    shape: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The counts, the measured pass and the estimates of the module docstring, for LoRA on
    q, v and on every linear layer. ``edited``: instances a request changes (their new forms
    are computed too); ``train_instances`` × ``epochs``: the Retrain it is compared with;
    ``shape``: another Llama shape than Llama-2-7B's (the tests' tiny one)."""
    import torch

    from rec_eraser.core.fisher import fisher_memory_bytes

    say = say or (lambda _msg: None)
    shape = shape or LLAMA2_7B
    layers = shape["num_hidden_layers"]
    flops = 4 * base_parameters(shape) * tokens
    a100_pass = flops / (A100_BF16_PEAK * mfu)
    update_passes = sample_size + edited  # the sample's rows (edited old forms among them) + new forms
    retrain_passes = train_instances * epochs
    rows = {}
    for name, targets in TARGETS.items():
        say(f"timing one {tokens}-token pass on 1 and 2 random layers of the shape, LoRA r={rank} on {name}")
        one = _pass_seconds(shape, 1, targets, rank, tokens, repeats, seed)
        two = _pass_seconds(shape, 2, targets, rank, tokens, repeats, seed)
        per_layer = max(two - one, 0.0)  # below zero is timing noise (tiny shapes), not a cheaper layer
        full = one + (layers - 1) * per_layer
        p = lora_parameters(shape, targets, rank)
        rows[name] = {
            "lora_parameters": p,
            "fisher_rows": sample_size,
            "fisher_memory_gb": fisher_memory_bytes(sample_size, p) / 2**30,
            "measured_pass_seconds": {"1_layer": one, "2_layers": two},
            "this_machine": {
                "pass_seconds": full,
                "update_seconds": update_passes * full,
                "retrain_seconds": retrain_passes * full,
            },
            "a100_estimate": {
                "pass_seconds": a100_pass,
                "update_seconds": update_passes * a100_pass,
                "retrain_seconds": retrain_passes * a100_pass,
            },
        }
    return {
        "shape": dict(shape),
        "base_parameters": base_parameters(shape),
        "model_memory_gb_bf16": 2 * base_parameters(shape) / 2**30,
        "tokens": tokens,
        "rank": rank,
        "threads": torch.get_num_threads(),
        "update_passes": update_passes,
        "retrain_passes": retrain_passes,
        "ratio_to_retrain": update_passes / retrain_passes,
        "assumptions": {
            "sample_size": sample_size,
            "edited": edited,
            "train_instances": train_instances,
            "epochs": epochs,
            "a100_bf16_peak_flops": A100_BF16_PEAK,
            "mfu": mfu,
            "flops_per_pass": flops,
        },
        "targets": rows,
        "paper_table9": dict(PAPER_TABLE9),
    }


def shape_words(result: dict[str, Any]) -> str:
    """The model shape a result was computed for, in words: Llama-2-7B's, or its sizes."""
    shape = result["shape"]
    if shape == LLAMA2_7B:
        return "Llama-2-7B shape"
    return f"{shape['num_hidden_layers']}-layer, hidden-{shape['hidden_size']} shape"


def markdown(result: dict[str, Any]) -> str:
    """The plan as a Markdown table (for the docs); the A100 columns are estimates."""
    a, paper = result["assumptions"], result["paper_table9"]
    lines = [
        f"{shape_words(result)} ({result['base_parameters']:,} parameters; {result['model_memory_gb_bf16']:.1f} GB in "
        f"bfloat16), one instance of {result['tokens']} tokens, LoRA r = {result['rank']}. Update: "
        f"{result['update_passes']} gradient passes ({a['sample_size']} Fisher rows + {a['edited']} new forms; "
        "the forward-only passes measuring the edited losses before and after are not counted); Retrain: "
        f"{result['retrain_passes']:,} ({a['train_instances']:,} instances × {a['epochs']} epochs); ratio "
        f"{result['ratio_to_retrain']:.4f}.",
        "",
        "| LoRA on | parameters | Fisher rows (GB) | pass here (s) | update here (s) | Retrain here (s) "
        "| update, A100 estimate (s) | Retrain, A100 estimate (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["targets"].items():
        here, a100 = row["this_machine"], row["a100_estimate"]
        lines.append(
            f"| {name} | {row['lora_parameters']:,} | {row['fisher_memory_gb']:.1f} | {here['pass_seconds']:.1f} "
            f"| {here['update_seconds']:.0f} | {here['retrain_seconds']:.3g} | {a100['update_seconds']:.1f} "
            f"| {a100['retrain_seconds']:.3g} |"
        )
    lines += [
        "",
        f"Here: one pass timed on this machine's CPU, {result['threads']} threads, on 1 and 2 random layers of the "
        f"shape and extrapolated to {result['shape']['num_hidden_layers']}. A100: {a['flops_per_pass']:.3g} FLOP a pass at an assumed {a['mfu']:.0%} of "
        f"{a['a100_bf16_peak_flops']:.3g} FLOP/s (an estimate, not a measurement). The paper's Table 9 (A100): "
        f"{paper['update_seconds']:.3g} s a request, {paper['retrain_seconds']:.3g} s Retrain.",
    ]
    return "\n".join(lines) + "\n"
