"""``rec-eraser bench scaling``: how the cost of an update and of retraining grow with the training set.

For each size n, an adapter is trained from scratch on n instances (a seeded sub-sample
of the run's training split; its measured training seconds are what retraining costs at
that size, since Retrain runs the same recipe on n − k ≈ n instances), then one user is
forgotten with the workflow's default solver and the update's seconds are measured. The
default solver's cost grows with its fixed curvature sub-sample and the edited instances,
not with n; retraining grows linearly in n (times epochs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rec_eraser.tasks.prepare import prepare
from rec_eraser.tasks.prompt_registry import prompts_of
from rec_eraser.training.recipe import Recipe
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.experiments import ExperimentError
from rec_eraser.workflows.registry import DEFAULT_ROOT
from rec_eraser.workflows.study import Say, ensure_trained
from rec_eraser.workflows.unlearn import DEFAULT_SOLVER, apply_events
from rec_eraser.workflows.update import update_seconds

DEFAULT_SIZES = (32, 64, 128)


def run_scaling(
    sizes: Sequence[int] = DEFAULT_SIZES,
    task: str = "tallrec",
    out: Path | None = None,
    base_model: Path | None = None,
    sample_size: int = 24,
    max_users: int | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Train at each size, forget one user, and return the measured seconds (JSON-ready).

    ``max_users`` keeps the dataset's first users only (for small checks)."""
    say = say or (lambda _m: None)
    if len(set(sizes)) < 2 or len(set(sizes)) != len(sizes) or any(n < 4 for n in sizes):
        raise ExperimentError(f"scaling needs at least two distinct sizes of at least 4 instances, got {list(sizes)}")
    out = Path(out) if out is not None else DEFAULT_ROOT / "bench" / f"scaling-{task}"
    solver = replace(DEFAULT_SOLVER, sample_size=sample_size)
    rows = []
    t0 = time.perf_counter()
    for n in sorted(sizes):
        run = out / f"n{n}"
        recipe = Recipe(
            max_train=n,
            item_tokens=prompts_of(task).item_tokens,
            base_model=None if base_model is None else str(base_model),
        )
        if not (run / "manifest.json").is_file():
            say(f"preparing ml-100k ({task}) for n = {n}")
            out.mkdir(parents=True, exist_ok=True)
            prepare("ml-100k", task, run, max_users=max_users)
        registry = ensure_trained(run, recipe, say)
        trained = registry.training_set("v0000")
        user = sorted({z.user for z in trained}, key=lambda u: (len(u), u))[0]
        event = Event(f"scaling:delete_user:{user}", "delete_user", user)
        say(f"forgetting user {user} ({sum(z.user == user for z in trained)} instances)")
        apply_events(run, [(None, event)], solver=solver)
        version = registry.applied_events(registry.current())[event.id]
        record, trained_record = registry.manifest(version), registry.manifest("v0000")
        retrain, update = trained_record["training"]["seconds"], update_seconds(record)
        # the memorisation gap, measured once per lineage (at training, or else by this first request), apart:
        # it grows with n up to its sample size
        gap = ((record.get("metrics") or {}).get("calibration") or {}).get("memorisation_gap") or {}
        gap_seconds = gap.get("seconds", 0.0)  # also what a first request that measured it counted (reference_seconds)
        rows.append(
            {
                "n": len(trained),
                "forgotten_instances": record["edits"]["removed"],
                "retrain_seconds": retrain,
                "update_seconds": update,
                "gap_seconds": gap_seconds,
                "update_gradients": record["solver"]["gradient_passes"],
                "update_to_retrain": update / retrain,
            }
        )
    return {"task": task, "solver": solver.to_dict(), "sizes": rows, "seconds": time.perf_counter() - t0}
