"""``rec-eraser bench RECIPE --sequential N``: deletions arriving one batch after another.

An IR experiment's run (the same data and ``v0000`` as ``rec-eraser bench RECIPE``) receives
``N`` successive batches of account deletions, each about ``batch_fraction`` of the trained
users, each applied by the workflow's default update as its own request (``v0001`` …
``v000N``). After the batches named in ``checkpoints`` the current version is compared with
a Retrain on the training set edited so far (one seed; the single-request benchmark gives
Retrain's seed spread), on the benchmark's figures: utility and its gap, agreement with
Retrain, the loss on everything forgotten so far, the test loss and the membership AUC.

Does the error accumulate? Each checkpoint reports the distance of the current version to
Retrain on the forget-set loss as a fraction of Retrain's own move from ``v0000``
(``relative_error``), and a drift figure the tool has without retraining: the retained
reference instances' loss, as the requests recorded it, summed in absolute change over the
lineage (``retained_drift``), beside the share of the training set removed approximately.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.jsonable import finite
from rec_eraser.training.train import load_version
from rec_eraser.workflows.calibration import retained_drift
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.experiments import ExperimentError
from rec_eraser.workflows.registry import Registry
from rec_eraser.workflows.study import (
    Say,
    cached_adapter,
    metrics_of,
    observe,
    open_study,
    prepare_study_run,
    study_context,
)
from rec_eraser.workflows.unlearn import apply_events
from rec_eraser.workflows.update import update_seconds

logger = logging.getLogger(__name__)


def deletion_batches(users: list[str], batches: int, batch_fraction: float, seed: int) -> list[list[str]]:
    """``batches`` disjoint groups of ``max(1, round(batch_fraction · len(users)))`` users, a seeded draw."""
    ordered = sorted(set(users), key=lambda u: (len(u), u))
    size = max(1, round(batch_fraction * len(ordered)))
    if size * batches > len(ordered):
        raise ExperimentError(
            f"{batches} batches of {size} users need {size * batches} users; the adapter was trained on {len(ordered)}"
        )
    perm = np.random.default_rng([seed, 3]).permutation(len(ordered))
    return [[ordered[j] for j in sorted(perm[i * size : (i + 1) * size])] for i in range(batches)]


def run_sequential(
    recipe_path: Path | str,
    tier: str = "medium",
    batches: int = 10,
    checkpoints: tuple[int, ...] = (1, 5, 10),
    batch_fraction: float = 0.01,
    out: Path | None = None,
    base_model: Path | None = None,
    say: Say | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Run the sequential study of an IR benchmark recipe; returns the JSON-ready result and writes ``OUT/report/sequential.json``."""
    experiment, recipe, out, say = open_study(recipe_path, tier, out, base_model, say, "sequential", precision)
    if experiment.edit != "ir":
        raise ExperimentError(
            f"the sequential study deletes users: it needs an ir recipe, and {recipe_path} is {experiment.edit}"
        )
    if batches < 1 or not checkpoints or any(not 1 <= c <= batches for c in checkpoints):
        raise ExperimentError(f"checkpoints must lie in 1..{batches}, got {list(checkpoints)}")
    run = out / "run"
    t_start = time.perf_counter()
    prepare_study_run(run, experiment, recipe, say)
    registry = Registry(run)
    groups = deletion_batches(
        [z.user for z in registry.training_set("v0000")], batches, batch_fraction, experiment.seed
    )
    applied: list[Event] = []
    requests, rows = [], []
    for k, users in enumerate(groups, start=1):
        events = [Event(f"bench:sequential:{k}:delete_user:{u}", "delete_user", u) for u in users]
        in_effect = registry.applied_events(registry.current())
        if not all(e.id in in_effect for e in events):
            say(f"batch {k}/{batches}: deleting {len(users)} users")
            result = apply_events(run, [(None, e) for e in events], say=say)
            if result.problems:
                raise ExperimentError(f"batch {k}: {result.problems[0].message}")
        applied += events
        version = registry.current()
        record = registry.manifest(version)
        cal = (record.get("metrics") or {}).get("calibration") or {}
        search = (record.get("solver") or {}).get("calibration") or {}
        requests.append(
            {
                "batch": k,
                "version": version,
                "users": users,
                "removed": record["edits"]["removed"],
                "seconds": update_seconds(record),
                "memorisation_gap": (cal.get("memorisation_gap") or {}).get("gap"),
                # the edited target's search, else the reference target's matched factor (no search, no progress)
                "damping_factor": search.get("factor", (cal.get("reference") or {}).get("factor")),
                "progress": search.get("progress"),
                "trust_ratio": (cal.get("trust") or {}).get("ratio"),
            }
        )
        if k not in checkpoints:
            continue
        say(f"checkpoint after batch {k}: Retrain on the edited training set")
        ctx = study_context(run, experiment, recipe, applied, version)
        original = observe(ctx, load_version(run, "v0000"), 0.0)
        loaded, trained = cached_adapter(
            ctx, f"bench-sequential-retrain-b{k}", recipe, ctx.after, say, f"Retrain after batch {k}"
        )
        retrain = observe(ctx, loaded, trained["training"]["seconds"])
        current = observe(ctx, load_version(run, version), sum(r["seconds"] for r in requests))
        m, o = metrics_of(ctx, current, retrain, original), metrics_of(ctx, original, retrain, original)
        r = metrics_of(ctx, retrain, retrain, original)
        move = r["forget_loss"] - o["forget_loss"]
        rows.append(
            {
                "batch": k,
                "version": version,
                "forget_instances": len(ctx.forget),
                "train_instances": len(ctx.after),
                "removed_share": len(ctx.forget) / len(ctx.before),
                "current": m,
                "original": o,
                "retrain": r,
                "relative_error": abs(m["forget_loss"] - r["forget_loss"]) / abs(move) if move else None,
                "retained_drift": retained_drift(registry.lineage(version))[0],
                "trusted": ((record.get("metrics") or {}).get("drift") or {}).get("trusted"),
                "update_seconds": current.seconds,
                "retrain_seconds": retrain.seconds,
                "ratio_to_retrain": current.seconds / retrain.seconds if retrain.seconds else None,
            }
        )
    # the one-time gap, when training measured it (otherwise the first request did, in its seconds)
    at_training = registry.manifest("v0000")["training"].get("measure_seconds")
    result = {
        "recipe": str(recipe_path),
        "tier": tier,
        "batches": batches,
        "batch_fraction": batch_fraction,
        "checkpoints": rows,
        "requests": requests,
        "gap_seconds_at_training": at_training,
        "run": str(run),
        "seconds": time.perf_counter() - t_start,
    }
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "sequential.json").write_text(
        json.dumps(finite(result), indent=2, allow_nan=False, default=str) + "\n"
    )
    result["report"] = str(out / "report" / "sequential.json")
    return result
