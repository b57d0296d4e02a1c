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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rec_eraser.core.curvature import deterministic_mode
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.train import LoadedModel
from rec_eraser.workflows.experiments import ExperimentError


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


@dataclass
class Step:
    """What an objective sees at one optimiser step: the batch's per-instance losses, and on demand
    a retained batch's losses (one more gradient pass) and the pre-unlearning losses of the batch."""

    losses: torch.Tensor
    batch: list[dict[str, torch.Tensor]]
    retained: Callable[[], torch.Tensor]
    reference: dict[int, float]
    beta: float


@dataclass(frozen=True)
class Baseline:
    """A few-step unlearning baseline: the instances its batches come from and the loss it minimises."""

    name: str
    on: str  # "forget" or "corrected"
    objective: Callable[[Step], torch.Tensor]
    needs_retain: bool = False
    needs_reference: bool = False  # the forget instances' losses before unlearning (NPO's π_ref)


#: the registered baselines, by name; adding one is a :func:`register_baseline` call
BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> None:
    if baseline.name in BASELINES:
        raise ValueError(f"a baseline named {baseline.name!r} is registered already")
    BASELINES[baseline.name] = baseline


def _npo(step: Step) -> torch.Tensor:
    # the log-ratio log π_θ − log π_ref = ℓ_ref − ℓ_θ
    ratio = torch.tensor([step.reference[id(s)] for s in step.batch]) - step.losses
    return (2.0 / step.beta) * torch.nn.functional.softplus(step.beta * ratio).mean()


register_baseline(Baseline("gradient_ascent", "forget", lambda step: -step.losses.mean()))
register_baseline(
    Baseline("graddiff", "forget", lambda step: -step.losses.mean() + step.retained().mean(), needs_retain=True)
)
register_baseline(Baseline("npo", "forget", _npo, needs_reference=True))
register_baseline(Baseline("finetune", "corrected", lambda step: step.losses.mean()))
METHODS = tuple(BASELINES)


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
    if method not in BASELINES:
        raise ExperimentError(f"unknown baseline {method!r} (known: {', '.join(BASELINES)})")
    baseline = BASELINES[method]
    targets = corrected if baseline.on == "corrected" else forget
    if not targets:
        raise ExperimentError(f"{method} needs {baseline.on} instances")
    if baseline.needs_retain and not retain:
        raise ExperimentError(f"{method} needs retained instances")
    t0 = time.perf_counter()  # NPO's reference pass is part of its cost
    gen = torch.Generator().manual_seed(seed)
    encoded = _encode(loaded, targets)
    main = _batches(encoded, batch_size, gen)
    kept = _batches(_encode(loaded, retain), batch_size, gen) if baseline.needs_retain else None
    reference: dict[int, float] = {}
    if baseline.needs_reference:
        with torch.no_grad(), deterministic_mode(loaded.model):
            reference = {id(s): float(v) for s, v in zip(encoded, _losses(loaded, encoded))}
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    passes, objective = 0, float("nan")

    def retained() -> torch.Tensor:
        nonlocal passes
        passes += 1
        return _losses(loaded, next(kept))

    with deterministic_mode(loaded.model):
        for _ in range(steps):
            batch = next(main)
            loss = baseline.objective(Step(_losses(loaded, batch), batch, retained, reference, beta))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            passes += 1
            objective = float(loss.detach())
    return BaselineReport(
        method=method, steps=steps, gradient_passes=passes, seconds=time.perf_counter() - t0, final_objective=objective
    )
