"""``rec-eraser bench scaling``: how the cost of an update and of retraining grow with the training set.

For each size n, an adapter is trained from scratch on n instances (a seeded sub-sample
of the run's training split; its measured training seconds are what retraining costs at
that size, since Retrain runs the same recipe on n − k ≈ n instances), then two users are
forgotten one request after the other with the workflow's defaults. The first request builds
the version's curvature rows (the one-off build: it computes the whole sample); the second
reuses them through the curvature cache (:mod:`rec_eraser.workflows.curvature_cache`) and is
what a request costs in steady state: its seconds, rows computed and reused, its floor (the
gradients of its own edited instances) and the ratios to the floor and to retraining.
Retraining grows linearly in n (times epochs); the update's cost grows with the sample and the
edited instances, not with n. A power law ``seconds ≈ a·n^b`` fitted to each says how.

A size whose training would take longer than ``cap_seconds`` (projected from the previous
size's seconds per instance) is skipped and says so: the table holds measurements only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.tasks.prepare import prepare
from rec_eraser.tasks.prompt_registry import prompts_of
from rec_eraser.training.recipe import Recipe
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.experiments import ExperimentError
from rec_eraser.workflows.registry import DEFAULT_ROOT, Registry
from rec_eraser.workflows.study import Say, ensure_trained
from rec_eraser.workflows.unlearn import DEFAULT_SOLVER, apply_events
from rec_eraser.workflows.update import request_cost, update_seconds

DEFAULT_SIZES = (32, 64, 128)


def _forget(run: Path, registry: Registry, user: str, solver: Any) -> dict[str, Any]:
    """Forget ``user`` in one request; its record's seconds, rows and floor."""
    event = Event(f"scaling:delete_user:{user}", "delete_user", user)
    if event.id not in registry.applied_events(registry.current()):
        apply_events(run, [(None, event)], solver=solver)
    record = registry.manifest(registry.applied_events(registry.current())[event.id])
    cost = request_cost(record) or {}
    cache = (record.get("metrics") or {}).get("curvature_cache") or {}
    return {
        "user": user,
        "forgotten_instances": record["edits"]["removed"],
        "update_seconds": update_seconds(record),
        "floor_seconds": cost.get("floor_seconds"),
        "ratio_to_floor": cost.get("ratio_to_floor"),
        "rows_computed": cost.get("rows_computed"),
        "rows_reused": cost.get("rows_reused"),
        "cache": cache.get("verdict"),
        "update_gradients": record["solver"]["gradient_passes"],
    }


def power_law(sizes: Sequence[float], seconds: Sequence[float]) -> dict[str, float] | None:
    """Least-squares ``seconds ≈ a·n^b`` on log-log axes (None for fewer than two sizes)."""
    if len(sizes) < 2:
        return None
    b, log_a = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return {"a": float(np.exp(log_a)), "b": float(b)}


def run_scaling(
    sizes: Sequence[int] = DEFAULT_SIZES,
    task: str = "tallrec",
    out: Path | None = None,
    base_model: Path | None = None,
    sample_size: int | None = None,
    max_users: int | None = None,
    cap_seconds: float | None = 3600.0,
    say: Say | None = None,
) -> dict[str, Any]:
    """Train at each size, forget two users one after the other, and return the measured seconds (JSON-ready).

    ``sample_size``: the curvature sample (the workflow's default when None); ``max_users``
    keeps the dataset's first users only (for small checks); ``cap_seconds``: skip a size whose
    projected training exceeds it (None: no cap)."""
    say = say or (lambda _m: None)
    if len(set(sizes)) < 2 or len(set(sizes)) != len(sizes) or any(n < 4 for n in sizes):
        raise ExperimentError(f"scaling needs at least two distinct sizes of at least 4 instances, got {list(sizes)}")
    out = Path(out) if out is not None else DEFAULT_ROOT / "bench" / f"scaling-{task}"
    solver = DEFAULT_SOLVER if sample_size is None else replace(DEFAULT_SOLVER, sample_size=sample_size)
    rows, skipped = [], []
    per_instance: float | None = None
    t0 = time.perf_counter()
    for n in sorted(sizes):
        run = out / f"n{n}"
        if per_instance is not None and cap_seconds is not None and per_instance * n > cap_seconds:
            say(f"skipping n = {n}: its training would take about {per_instance * n:.0f} s > {cap_seconds:.0f} s")
            skipped.append({"n": n, "projected_retrain_seconds": per_instance * n, "cap_seconds": cap_seconds})
            continue
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
        retrain = registry.manifest("v0000")["training"]["seconds"]
        per_instance = retrain / len(trained)
        # the two users with the fewest instances: requests the size of one account
        counts = Counter(z.user for z in trained)
        first_user, next_user = sorted(counts, key=lambda u: (counts[u], u))[:2]
        say(f"n = {n}: forgetting user {first_user}, then user {next_user}")
        first, steady = _forget(run, registry, first_user, solver), _forget(run, registry, next_user, solver)
        rows.append(
            {
                "n": len(trained),
                "retrain_seconds": retrain,
                **{k: v for k, v in steady.items() if k != "user"},
                "ratio_to_retrain": steady["update_seconds"] / retrain,
                "first_request": {**first, "ratio_to_retrain": first["update_seconds"] / retrain},
            }
        )
    ns = [r["n"] for r in rows]
    return {
        "task": task,
        "solver": solver.to_dict(),
        "sizes": rows,
        "skipped": skipped,
        "fit": {
            "retrain": power_law(ns, [r["retrain_seconds"] for r in rows]),
            "update": power_law(ns, [r["update_seconds"] for r in rows]),
        },
        "ratio_to_retrain_at_largest": rows[-1]["ratio_to_retrain"] if rows else None,
        "seconds": time.perf_counter() - t0,
    }
