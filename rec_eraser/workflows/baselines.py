"""The cheaper alternatives to an influence update, for comparison (issue: evaluation harness).

Each edits a loaded model's trainable parameters (LoRA + projector) in place with a few
optimiser steps and reports what it cost, in the same units as the engine's report
(gradient passes, seconds):

- ``gradient_ascent``: ascend the loss of the forget set.
- ``graddiff``: ascend the forget set's loss while descending the retained data's.
- ``npo``: Negative Preference Optimisation (Zhang et al., 2024), a bounded form of gradient
  ascent: minimise (2/β) E_forget[log(1 + (π_θ/π_ref)^β)], with log π the mean response-token
  log-likelihood (the per-instance training loss negated) and π_ref the model before unlearning.
- ``finetune``: descend on the corrected instances (QM / RC): the plain way to fix an adapter.

All run with dropout off, a seeded order, and AdamW; the settings are arguments with the
values commonly used for LoRA adapters as defaults.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rec_eraser.core.curvature import deterministic_mode
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.train import LoadedModel
from rec_eraser.workflows.experiments import ExperimentError

METHODS = ("gradient_ascent", "graddiff", "npo", "finetune")


@dataclass
class BaselineReport:
    method: str
    steps: int
    gradient_passes: int
    seconds: float
    final_objective: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encode(loaded: LoadedModel, instances: Sequence[Instance]) -> list[dict[str, torch.Tensor]]:
    return [encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length) for z in instances]


def _losses(loaded: LoadedModel, samples: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return loaded.model.response_losses(collate(samples))


def _batches(samples: list, size: int, gen: torch.Generator):
    while True:
        order = torch.randperm(len(samples), generator=gen).tolist()
        for start in range(0, len(order), size):
            yield [samples[i] for i in order[start : start + size]]


def run_baseline(
    method: str,
    loaded: LoadedModel,
    forget: Sequence[Instance] = (),
    retain: Sequence[Instance] = (),
    corrected: Sequence[Instance] = (),
    steps: int = 10,
    lr: float = 1e-4,
    batch_size: int = 4,
    beta: float = 0.1,
    seed: int = 0,
) -> BaselineReport:
    """Apply ``method`` to ``loaded.model`` in place; see the module docstring for each objective."""
    if method not in METHODS:
        raise ExperimentError(f"unknown baseline {method!r} (known: {', '.join(METHODS)})")
    targets = corrected if method == "finetune" else forget
    if not targets:
        raise ExperimentError(f"{method} needs {'corrected' if method == 'finetune' else 'forget'} instances")
    if method == "graddiff" and not retain:
        raise ExperimentError("graddiff needs retained instances")
    t0 = time.perf_counter()  # NPO's reference pass is part of its cost
    gen = torch.Generator().manual_seed(seed)
    main = _batches(_encode(loaded, targets), batch_size, gen)
    kept = _batches(_encode(loaded, retain), batch_size, gen) if method == "graddiff" else None
    reference: dict[int, float] = {}
    if method == "npo":
        encoded = _encode(loaded, forget)
        with torch.no_grad(), deterministic_mode(loaded.model):
            reference = {id(s): float(v) for s, v in zip(encoded, _losses(loaded, encoded))}
        main = _batches(encoded, batch_size, gen)
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    passes, objective = 0, float("nan")
    with deterministic_mode(loaded.model):
        for _ in range(steps):
            batch = next(main)
            losses = _losses(loaded, batch)
            if method == "gradient_ascent":
                loss = -losses.mean()
            elif method == "finetune":
                loss = losses.mean()
            elif method == "graddiff":
                loss = -losses.mean() + _losses(loaded, next(kept)).mean()
                passes += 1
            else:  # npo: log-ratio log π_θ − log π_ref = ℓ_ref − ℓ_θ
                ratio = torch.tensor([reference[id(s)] for s in batch]) - losses
                loss = (2.0 / beta) * torch.nn.functional.softplus(beta * ratio).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            passes += 1
            objective = float(loss.detach())
    return BaselineReport(
        method=method, steps=steps, gradient_passes=passes, seconds=time.perf_counter() - t0, final_objective=objective
    )
