"""``rec-eraser bench RECIPE``: every unlearning method on one experiment, judged against Retrain.

One run folder holds the (possibly corrupted) prepared data and the original adapter
``v0000``; the experiment's events are applied by rec-eraser's own workflow (``v0001``),
and every other method (:mod:`rec_eraser.workflows.bench_methods`) starts from ``v0000`` too.

Every method is measured on the same test prompts: utility (TALLRec ``auc``; LLaRA ``hit@1``
and ``ndcg@10`` by likelihood ranking, generation's ``gen_hit@1`` and ``valid_ratio`` when the
recipe asks), agreement with Retrain (LLaRA: top-1 agreement; TALLRec: correlation of the
Yes/No scores), the loss on the forget set beside that of never-trained (test) instances,
a loss-based membership-inference AUC, recovery (qm, rc), and its cost: seconds of the
method's own work (model loading excluded for all; for ``rec_eraser``, one request's, the
memorisation gap being measured once on ``v0000`` beforehand and reused, as every later
request of a lineage reuses it), gradient passes and HVPs as the method counts them, the
process's peak resident memory while it ran, and its seconds as a ratio to Retrain's.

Adapters that are costly to make (``v0000``, Retrain's, SISA's shards) are cached in the
run folder, so a second run re-measures without retraining.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rec_eraser.core import SolverConfig, SolverError
from rec_eraser.jsonable import finite
from rec_eraser.tasks.prepare import load_manifest
from rec_eraser.training.train import load_version
from rec_eraser.workflows.bench_methods import BENCH_METHODS, COST_FILE, MethodCall, method_names, run_retrain
from rec_eraser.workflows.bench_report import write_report
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.experiments import Experiment, ExperimentError, experiment_events, renamed_hint
from rec_eraser.workflows.fidelity import adapter_conditions, can_judge, main_metric, targets
from rec_eraser.workflows.registry import Registry
from rec_eraser.workflows.study import (
    Outcome,
    PeakMemory,
    Say,
    default_solver,
    memorisation_dict,
    metrics_of,
    observe,
    open_study,
    original_memorisation,
    prepare_study_run,
    study_context,
    task_baseline,
    test_scores_and_losses,
    utility_of,
)
from rec_eraser.workflows.unlearn import DEFAULT_CALIBRATION, apply_events, validate_events

logger = logging.getLogger(__name__)

#: every method, in report order (the optional ones run only when named)
METHODS = method_names()


def chosen_methods(experiment: Experiment, methods: Sequence[str] | None = None) -> list[str]:
    """The methods a run measures: ``methods`` if given, else the tier's ``methods`` setting, else
    every method; correction-only methods are left out of an IR experiment."""
    chosen = [m.strip() for m in (methods or experiment.methods or method_names()) if m.strip()]
    unknown = [m for m in chosen if m not in BENCH_METHODS]
    if unknown:
        raise ExperimentError(
            f"unknown method {unknown[0]!r}; choose from {', '.join(BENCH_METHODS)}{renamed_hint(unknown[0])}"
        )
    if experiment.edit == "ir":
        correction_only = [name for name, m in BENCH_METHODS.items() if m.correction_only]
        chosen = [m for m in chosen if m not in correction_only]
        if not chosen:
            raise ExperimentError(
                f"{', '.join(correction_only)} corrects data, and an ir experiment has nothing to correct; choose other methods"
            )
    return chosen


def run_benchmark(
    recipe_path: Path | str,
    tier: str = "full",
    out: Path | None = None,
    methods: Sequence[str] | None = None,
    base_model: Path | None = None,
    say: Say | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark of ``recipe_path``; returns the JSON-ready result and writes the report folder.

    A method that fails (a diverging solver, a training that blows up) gets ``{"error": ...}``
    in place of its figures; the others are still measured.
    """
    experiment, recipe, out, say = open_study(recipe_path, tier, out, base_model, say, precision=precision)
    chosen = chosen_methods(experiment, methods)
    run = out / "run"
    t_start = time.perf_counter()
    prepare_study_run(run, experiment, recipe, say)
    registry = Registry(run)
    events = experiment_events(
        experiment, load_manifest(run).get("transform"), sorted({z.user for z in registry.training_set("v0000")})
    )
    if not events:
        raise ExperimentError("the experiment yields no events (raise fraction or max_users)")
    version = _unlearned_version(registry, events, default_solver(experiment))
    # v0000's gap: the one the cached update used or training recorded, else measured now (and handed to the update)
    memorisation = original_memorisation(run, say, version)
    if version is None:
        problems = validate_events(run, events)  # all or nothing: a refused event must not leave a partial version
        if problems:
            raise ExperimentError(
                f"the experiment's events do not fit its run: {problems[0].message} ({problems[0].event_id})"
            )
        (out / "events.jsonl").write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
        say(f"rec_eraser: applying {len(events)} events")
        memory = PeakMemory()
        with memory.watch():
            applied = apply_events(
                run, [(None, e) for e in events], solver=default_solver(experiment), say=say, memorisation=memorisation
            )
        version = applied.version
        (out / COST_FILE).write_text(json.dumps({"version": version, "peak_mb": memory.peak_mb}))
    ctx = study_context(run, experiment, recipe, events, version)
    if not ctx.forget:
        raise ExperimentError(
            "the experiment's events change no training instance of v0000 (raise fraction or max_train)"
        )

    say("measuring the original adapter")
    original_model = load_version(run, "v0000")
    original = observe(ctx, original_model, float(registry.manifest("v0000")["training"]["seconds"]))
    del original_model
    retrains = {seed: run_retrain(ctx, seed, say) for seed in experiment.retrain_seeds}
    reference = retrains[experiment.retrain_seeds[0]]

    outcomes: dict[str, Outcome | str] = {}
    call = MethodCall(ctx=ctx, version=version, retrain=reference, say=say)
    for name in chosen:
        say(f"method {name}")
        try:
            outcomes[name] = BENCH_METHODS[name].run(call)
        except (SolverError, FloatingPointError, ValueError) as exc:
            logger.warning("%s failed: %s", name, exc)
            outcomes[name] = f"{type(exc).__name__}: {exc}"

    retrain_seconds = reference.seconds
    result: dict[str, Any] = {
        "recipe": str(recipe_path),
        "tier": tier,
        "quick": tier == "quick",
        "experiment": experiment.to_dict() | {"methods": chosen},  # what ran (--methods), not the tier's default set
        "training_recipe": recipe.to_dict(),
        "run": str(run),
        "unlearned_version": version,
        "train_instances": len(ctx.before),
        "edited_train_instances": len(ctx.after),
        "events": len(events),
        "forget_instances": len(ctx.forget),
        "corrected_instances": len(ctx.corrected),
        "test_prompts": len(ctx.test),
        "original": {
            "metrics": metrics_of(ctx, original, reference, original),
            "seconds": original.seconds,
            "memorisation_seconds": memorisation.seconds if memorisation else None,
        },
        "methods": {},
    }
    for name, outcome in outcomes.items():
        if isinstance(outcome, str):
            result["methods"][name] = {"error": outcome}
            continue
        result["methods"][name] = {
            "metrics": metrics_of(ctx, outcome, reference, original),
            "seconds": outcome.seconds,
            "ratio_to_retrain": outcome.seconds / retrain_seconds if retrain_seconds else None,
            "ratio_to_floor": outcome.seconds / outcome.floor_seconds if outcome.floor_seconds else None,
            "gradient_passes": outcome.gradient_passes,
            "hvps": outcome.hvps,
            "peak_mb": outcome.peak_mb,
            "notes": outcome.notes,
        }
    seeds = experiment.retrain_seeds
    result["retrain_spread"] = {
        f"seed{seed}_vs_seed{seeds[0]}": metrics_of(ctx, retrains[seed], reference, original)
        | {"seconds": retrains[seed].seconds}
        for seed in seeds[1:]
    }
    if "retrain" in result["methods"] and "metrics" in result["methods"]["retrain"]:
        result["can_judge"] = can_judge(result, task_baseline(ctx), memorisation_dict(memorisation))
        for row in result["methods"].values():
            if "metrics" in row:
                row["targets"] = targets(result, row)
    result["seconds"] = time.perf_counter() - t_start
    result["report"] = str(out / "report")
    write_report(result, out / "report")
    return result


CHECK_FILE = "check.json"


def check_adapter(
    recipe_path: Path | str,
    tier: str = "full",
    out: Path | None = None,
    base_model: Path | None = None,
    say: Say | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Train (or reuse) a benchmark's ``v0000`` and judge the adapter alone, before any Retrain.

    The two ``can_judge`` conditions that need no retraining (``beats_baselines``,
    ``memorised``), measured exactly as the benchmark measures them and in the same run
    folder, so the benchmark reuses the adapter: sizing a tier costs one training and an
    evaluation instead of the whole benchmark. Writes ``OUT/report/check.json``.
    """
    experiment, recipe, out, say = open_study(recipe_path, tier, out, base_model, say, precision=precision)
    run = out / "run"
    prepare_study_run(run, experiment, recipe, say)
    ctx = study_context(run, experiment, recipe, [], "v0000")
    say("measuring the original adapter")
    loaded = load_version(run, "v0000")
    scores, losses = test_scores_and_losses(ctx, loaded)
    del loaded  # the gap loads its own copy
    main = main_metric(ctx.task)
    utility = utility_of(
        ctx,
        Outcome(
            test_scores=scores,
            forget_losses=None,
            unseen_losses=losses,
            corrected_losses=None,
            answers=None,
            seconds=0.0,
        ),
    )
    conditions = adapter_conditions(
        main, utility[main], task_baseline(ctx), memorisation_dict(original_memorisation(run, say))
    )
    training = Registry(run).manifest("v0000")["training"]
    result = {
        "recipe": str(recipe_path),
        "tier": tier,
        "run": str(run),
        "train_instances": len(ctx.before),
        "test_prompts": len(ctx.test),
        "training_recipe": recipe.to_dict(),
        "training": training,
        **conditions,
        "verdict": all(c["verdict"] for c in conditions.values()),
    }
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / CHECK_FILE).write_text(json.dumps(finite(result), indent=2, allow_nan=False, default=str) + "\n")
    result["report"] = str(out / "report" / CHECK_FILE)
    return result


def _unlearned_version(registry: Registry, events: list[Event], solver: SolverConfig) -> str | None:
    """The version that applied exactly ``events`` to v0000 with ``solver``, if one exists; refuses
    a run edited otherwise, or by another solver configuration."""
    current = registry.current()
    if current == "v0000":
        return None
    chain = registry.lineage(current)
    applied = {e["id"] for record in chain for e in record.get("events", [])}
    if len(chain) != 2 or applied != {e.id for e in events}:
        raise ExperimentError(
            f"{registry.run_dir} holds edits other than this experiment's events ({current}); "
            "use another --out or remove that folder"
        )
    made_with = (chain[0].get("metrics") or {}).get("calibration", {}).get("settings")
    if not DEFAULT_CALIBRATION.matches(made_with):
        raise ExperimentError(
            f"{registry.run_dir}/{current} was made by another version of the default update (its calibration "
            "settings differ); use another --out, or remove that version folder to apply the events again"
        )
    # a version written before retained_floor existed drew its sample under the old rule (floor 0),
    # one written before row_weights existed weighted its rows uniformly
    solved_with = {
        "retained_floor": 0.0,
        "row_weights": "uniform",
        **((chain[0].get("solver") or {}).get("config") or {}),
    }
    wanted = json.loads(json.dumps(solver.to_dict()))  # as the manifest holds it (tuples as lists)
    differs = sorted(k for k, v in wanted.items() if solved_with.get(k, v) != v)
    if differs:
        raise ExperimentError(
            f"{registry.run_dir}/{current} was made by another version of the default update (its solver's "
            f"{', '.join(differs)} differ); use another --out, or remove that version folder to apply the events again"
        )
    return current
