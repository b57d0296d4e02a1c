"""``rec-eraser bench RECIPE --profile``: what a training step costs, kernel by kernel.

Training is the largest cost of every benchmark and of every compaction. This profiles a few
optimiser steps of a benchmark recipe's training (its tier's data, LoRA, batch size and
learning rate) under variants of the three settings that could make it cheaper:

- the attention kernel: ``eager`` (transformers' explicit softmax(QKᵀ)V, which stores the
  attention matrix of every layer for the backward pass) or ``sdpa`` (PyTorch's
  ``scaled_dot_product_attention``, fused kernels where the CPU has them). The influence
  engine's curvature products need a double backward, which only the math kernel has; they pin
  it whatever the model was loaded with (:func:`rec_eraser.core.curvature.deterministic_mode`),
  so the choice is free for training and scoring;
- the precision of the matrix products: float32 or bfloat16 under autocast;
- the batching: the recipe's random batches, or length-bucketed ones (the same instances
  regrouped so that a batch's lengths are close: less padding).

Every variant starts from the same LoRA (and, for LLaRA, projector) initialisation, takes one
untimed warm-up step on the same batch, then the same instances in the same order (bucketing
regroups them), so its per-step losses can be compared with the first variant's: a kernel that
changed the maths would show there. Reported per variant: seconds per instance-step, the
resident memory the steps added on top of the loaded model (``step_peak_mb``; the process's
total at its peak is ``peak_mb``, which also holds the interpreter and the loaded dataset),
the share of padding tokens, and the largest difference of a step's loss from the first
variant's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rec_eraser.models import load_causal_lm
from rec_eraser.training.batching import bucketed_order
from rec_eraser.training.encode import encode_instance
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.train import (
    backward_step,
    base_model_path,
    build_model,
    ensure_item_encoder,
    parameter_groups,
    training_instances,
    uses_item_tokens,
)
from rec_eraser.workflows.experiments import ExperimentError
from rec_eraser.workflows.progress import Say
from rec_eraser.workflows.study import PeakMemory, open_study, prepare_study_data

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    attention: str  # "eager" or "sdpa"
    precision: str  # "float32" or "bfloat16"
    bucketed: bool = False

    @property
    def name(self) -> str:
        return f"{self.attention}, {self.precision}" + (", length-bucketed" if self.bucketed else "")


#: the first is the reference the others' losses are compared with (today's training)
DEFAULT_VARIANTS = (
    Variant("eager", "float32"),
    Variant("eager", "bfloat16"),
    Variant("sdpa", "float32"),
    Variant("sdpa", "bfloat16"),
    Variant("eager", "bfloat16", bucketed=True),  # bucketing on the kernel training uses
    Variant("sdpa", "bfloat16", bucketed=True),
)


def _padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - real / padded if padded else 0.0


def _profile_variant(
    run: Path, recipe: Recipe, variant: Variant, warm_up: list, timed: list
) -> tuple[dict[str, Any], list[float]]:
    lm, tokenizer = load_causal_lm(base_model_path(recipe), attention=variant.attention)
    model, item_index = build_model(run, recipe, lm, recipe.seed)
    encode = lambda z: encode_instance(z, tokenizer, item_index, recipe.max_length)  # noqa: E731
    samples = [encode(z) for z in timed]
    lengths = [int(s["input_ids"].shape[0]) for s in samples]
    # one window over the timed instances: the same instances as unbucketed, regrouped
    order = bucketed_order(lengths, recipe.batch_size, len(timed)) if variant.bucketed else list(range(len(timed)))
    batches = [order[i : i + recipe.batch_size] for i in range(0, len(order), recipe.batch_size)]
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe), weight_decay=0.0)
    model.train()
    memory = PeakMemory(host=True)  # a CPU profile: resident memory, whatever torch sees
    with memory.watch():
        # one untimed step first, the same for every variant: it pays for allocations and lazy set-up
        optimizer.zero_grad()
        backward_step(model, [encode(z) for z in warm_up], "cpu", variant.precision)
        optimizer.step()
        losses, t0 = [], time.perf_counter()
        for batch in batches:
            optimizer.zero_grad()
            loss = backward_step(model, [samples[i] for i in batch], "cpu", variant.precision)
            optimizer.step()
            losses.append(float(loss))
        seconds = time.perf_counter() - t0
    tokens = sum(lengths)
    return {
        "variant": variant.name,
        "attention": variant.attention,
        "precision": variant.precision,
        "bucketed": variant.bucketed,
        "steps": len(batches),
        "instances": len(timed),
        "seconds": seconds,
        "seconds_per_instance_step": seconds / len(timed),
        "peak_mb": memory.peak_mb,
        "step_peak_mb": None if memory.peak_mb is None or memory.start_mb is None else memory.peak_mb - memory.start_mb,
        "padding_share": _padding_share(batches, lengths),
        "mean_tokens": tokens / len(timed),
    }, losses


def profile_training(
    recipe_path: Path | str,
    tier: str = "medium",
    steps: int = 8,
    out: Path | None = None,
    variants: tuple[Variant, ...] = DEFAULT_VARIANTS,
    say: Say | None = None,
    base_model: Path | None = None,
) -> dict[str, Any]:
    """Profile ``steps`` optimiser steps (plus a warm-up) of ``recipe_path``'s training at ``tier``
    under each of ``variants``; returns the JSON-ready result (see the module)."""
    experiment, recipe, out, say = open_study(recipe_path, tier, out, base_model, say, study="training")
    run = out / "run"
    prepare_study_data(run, experiment, say)
    instances = training_instances(run, recipe)
    gen = torch.Generator().manual_seed(recipe.seed)  # the training's own first-epoch order
    order = torch.randperm(len(instances), generator=gen).tolist()
    size = recipe.batch_size
    warm_up, timed = [instances[i] for i in order[:size]], [instances[i] for i in order[size : (steps + 1) * size]]
    if not timed:
        raise ExperimentError(
            f"{len(instances)} training instances leave none to time after a warm-up batch of {size}; "
            "choose a tier with more (max_train)"
        )
    if uses_item_tokens(run, recipe):  # trained once here, so that no variant's start depends on training it
        ensure_item_encoder(run, recipe, recipe.seed)
    rows, reference = [], None
    for variant in variants:
        say(f"profiling {steps} steps: {variant.name}")
        row, losses = _profile_variant(run, recipe, variant, warm_up, timed)
        if variant.bucketed:  # other instances per step: its losses are not comparable step by step
            row["max_loss_difference"] = None
        elif reference is None:
            reference, row["max_loss_difference"] = losses, 0.0
        else:
            row["max_loss_difference"] = max(abs(a - b) for a, b in zip(losses, reference))
        rows.append(row)
    base = rows[0]["seconds_per_instance_step"]
    for row in rows:
        row["speedup"] = base / row["seconds_per_instance_step"] if base and row["seconds_per_instance_step"] else None
    return {
        "recipe": str(recipe_path),
        "tier": tier,
        "task": experiment.task,
        "batch_size": recipe.batch_size,
        "threads": torch.get_num_threads(),
        "variants": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """The profile as a Markdown table, for the docs (rendered from the result file)."""

    def num(value: Any, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}g}"

    lines = [
        f"{result['task']} training, `{result['recipe']}` at tier {result['tier']}: batch {result['batch_size']}, "
        f"{result['threads']} threads, {result['variants'][0]['steps']} timed steps "
        f"({result['variants'][0]['instances']} instances) per variant after one warm-up step.",
        "",
        "| variant | s / instance-step | speed-up | peak MB (process) | MB added by the steps | padding share | max loss difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["variants"]:
        lines.append(
            f"| {row['variant']} | {num(row['seconds_per_instance_step'])} | {num(row['speedup'])} | "
            f"{num(row['peak_mb'], 4)} | {num(row['step_peak_mb'], 4)} | {num(row['padding_share'], 2)} | "
            f"{num(row['max_loss_difference'], 2)} |"
        )
    return "\n".join(lines) + "\n"
