"""What every recipe study shares: opening it, its run folder and v0000, the context its
methods run in, their observed outcomes and every figure computed from them.

``rec-eraser bench RECIPE`` (:mod:`rec_eraser.workflows.benchmark`), its ``--check`` and the
sequential study (:mod:`rec_eraser.workflows.sequential`) all start with :func:`open_study`,
prepare the same run folder (:func:`prepare_study_run`) and measure adapters in the same way
(:func:`observe`, :func:`metrics_of`), so a figure means one thing in every report.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.core import SolverConfig
from rec_eraser.evaluation.unlearning import membership_inference_auc, recovery
from rec_eraser.memory import PeakMemory  # noqa: F401  (the benchmark's methods import it from here)
from rec_eraser.tasks.base import Task
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prepare import load_instances, load_manifest, load_titles, prepare
from rec_eraser.tasks.registry import task_of
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import LoadedModel, checkpoint_path, fit_adapter, load_version, train_run
from rec_eraser.training.versions import TRAIN_IDS, instance_ids_hash, save_version, train_ids_json, version_manifest
from rec_eraser.workflows.calibration import MemorisationGap, recorded_memorisation
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.experiments import Experiment, ExperimentError, corruption, load_experiment
from rec_eraser.workflows.progress import Say, logged, training_progress
from rec_eraser.workflows.registry import DEFAULT_ROOT, Registry
from rec_eraser.workflows.unlearn import DEFAULT_CALIBRATION, training_memorisation, version_memorisation

logger = logging.getLogger(__name__)


# -- cost accounting ----------------------------------------------------------------------
@dataclass
class Outcome:
    """A method's scores on the test prompts and its cost."""

    test_scores: np.ndarray  # tallrec: [n] Yes−No scores; llara: [n, candidates] likelihoods
    forget_losses: np.ndarray | None
    unseen_losses: np.ndarray  # the test prompts' own losses: the membership attack's non-members
    corrected_losses: np.ndarray | None
    answers: list[str] | None
    seconds: float
    gradient_passes: int | None = None
    hvps: int | None = None
    peak_mb: float | None = None
    notes: str | None = None
    floor_seconds: float | None = None  # the edited instances' gradients, for methods that report them


# -- the run --------------------------------------------------------------------------------
@dataclass
class BenchContext:
    run: Path
    experiment: Experiment
    recipe: Recipe
    task: str
    before: list[Instance]  # v0000's training set
    after: list[Instance]  # the edited training set
    forget: list[Instance]  # trained forms of the removed and corrected instances
    corrected: list[Instance]  # the corrected forms (qm, rc)
    test: list[Instance]
    titles: dict[str, str]
    events: list[Event]

    @property
    def task_spec(self) -> Task:
        """How the run's task scores and judges an adapter."""
        return task_of(self.task)


def default_out(recipe_path: Path, tier: str, study: str = "") -> Path:
    """``adapters/bench/RECIPE[-TIER][-STUDY]``: one folder per recipe, tier and kind of study."""
    return (
        DEFAULT_ROOT
        / "bench"
        / (recipe_path.stem + ("" if tier == "full" else f"-{tier}") + (f"-{study}" if study else ""))
    )


PROGRESS_LOG = "bench.log"


def open_study(
    recipe_path: Path | str,
    tier: str,
    out: Path | None,
    base_model: Path | None,
    say: Say | None,
    study: str = "",
    precision: str | None = None,
) -> tuple[Experiment, Recipe, Path, Say]:
    """What every recipe study starts with: its experiment and training recipe at ``tier``, on
    ``base_model`` and in ``precision`` when given (refused before anything is written; the
    override is part of the recipe that v0000's manifest and the report record, so a run
    folder never mixes precisions), its folder (``out`` or the default), and a progress callback that also appends each
    message, timestamped, to ``OUT/bench.log``: a study runs for an hour or more, and ``--json``
    or a closed terminal must not lose where it got to."""
    recipe_path = Path(recipe_path)
    experiment, recipe = load_experiment(recipe_path, tier)
    if base_model is not None:
        recipe = replace(recipe, base_model=str(base_model))
    if precision is not None:
        recipe = replace(recipe, precision=precision)
    out = Path(out) if out is not None else default_out(recipe_path, tier, study)
    return experiment, recipe, out, logged(out / PROGRESS_LOG, say)


#: the experiment settings that shape the run's data and events; a run folder serves one set of them
DATA_SETTINGS = ("dataset", "task", "edit", "fraction", "injected", "max_users", "seed")
EXPERIMENT_FILE = "experiment.json"


def prepare_study_run(run: Path, experiment: Experiment, recipe: Recipe, say: Say) -> None:
    prepare_study_data(run, experiment, say)
    ensure_trained(run, recipe, say)


def prepare_study_data(run: Path, experiment: Experiment, say: Say) -> None:
    """The experiment's prepared run folder (made now, or checked to be this experiment's)."""
    fingerprint = {k: experiment.to_dict()[k] for k in DATA_SETTINGS}
    stamp = run.parent / EXPERIMENT_FILE
    if (run / "manifest.json").is_file():
        kept = json.loads(stamp.read_text()) if stamp.is_file() else None
        if kept != fingerprint:
            differs = sorted(k for k in DATA_SETTINGS if (kept or {}).get(k) != fingerprint[k])
            raise ExperimentError(
                f"{run.parent} holds a run of another experiment (it differs in {', '.join(differs)}); "
                "use another --out or remove that folder"
            )
    else:
        say(f"preparing {experiment.dataset} ({experiment.task}, {experiment.edit}) into {run}")
        run.parent.mkdir(parents=True, exist_ok=True)
        prepare(
            experiment.dataset,
            experiment.task,
            run,
            seed=experiment.seed,
            max_users=experiment.max_users,
            transform=corruption(experiment),
        )
        stamp.write_text(json.dumps(fingerprint, indent=2) + "\n")


def ensure_trained(run: Path, recipe: Recipe, say: Say) -> Registry:
    """Train the run's v0000 with ``recipe``, or check that the one already there was trained with it."""
    registry = Registry(run)
    if not registry.versions():
        held = f", {recipe.holdout_users} of their users held out" if recipe.holdout_users else ""
        say(f"training v0000 ({recipe.max_train or 'all'} instances drawn{held}) and measuring its memorisation gap")
        train_run(
            run, recipe, progress=training_progress("training v0000", say), measure=training_memorisation(run, recipe)
        )
    elif Recipe.from_dict(registry.manifest("v0000")["recipe"]) != recipe:
        raise ExperimentError(
            f"{run}/v0000 was trained with another recipe (another base model?); use another --out or remove {run}"
        )
    return registry


def study_context(run: Path, experiment: Experiment, recipe: Recipe, events: list[Event], version: str) -> BenchContext:
    registry = Registry(run)
    before, after = registry.training_set("v0000"), registry.training_set(version)
    after_by_id = {z.id: z for z in after}
    changed = [z for z in before if after_by_id.get(z.id) != z]
    corrected = [after_by_id[z.id] for z in changed if z.id in after_by_id]
    manifest = load_manifest(run)
    return BenchContext(
        run=run,
        experiment=experiment,
        recipe=recipe,
        task=manifest["task"],
        before=before,
        after=after,
        forget=changed,
        corrected=corrected,
        test=load_instances(run, "test")[: experiment.eval_prompts],
        titles=load_titles(run) if task_of(manifest["task"]).uses_titles else {},
        events=events,
    )


def test_scores_and_losses(ctx: BenchContext, loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The test prompts' scores and losses, as the run's task scores them."""
    return ctx.task_spec.scores_and_losses(loaded, ctx.test, ctx.titles)


def observe(ctx: BenchContext, loaded: LoadedModel, seconds: float, **cost: Any) -> Outcome:
    answers = ctx.task_spec.answers(loaded, ctx.test) if ctx.experiment.generate else None
    test_scores, test_losses = test_scores_and_losses(ctx, loaded)
    return Outcome(
        test_scores=test_scores,
        forget_losses=instance_losses(loaded, ctx.forget) if ctx.forget else None,
        unseen_losses=test_losses,
        corrected_losses=instance_losses(loaded, ctx.corrected) if ctx.corrected else None,
        answers=answers,
        seconds=seconds,
        **cost,
    )


def cached_adapter(
    ctx: BenchContext, folder: str, recipe: Recipe, instances: list[Instance], say: Say, label: str
) -> tuple[LoadedModel, dict[str, Any]]:
    """Train (or reuse) an adapter on ``instances`` saved as ``RUN/folder``; the loaded model and its record."""
    target = ctx.run / folder
    if (target / "manifest.json").is_file():
        cached = version_manifest(target)
        # compared as recipes, not dicts, so that a setting added later with its default keeps the cache
        if (
            cached.get("train_ids_sha256") != instance_ids_hash(instances)
            or Recipe.from_dict(cached.get("recipe") or {}) != recipe
        ):
            logger.info("%s was trained on other instances or with another recipe: training it again", target)
            shutil.rmtree(target)
    if not (target / "manifest.json").is_file():
        say(f"training {label} on {len(instances)} instances")
        memory = PeakMemory()
        with memory.watch():
            model, record = fit_adapter(
                ctx.run,
                recipe,
                instances,
                progress=training_progress(f"training {label}", say),
                checkpoint=checkpoint_path(ctx.run, folder),
            )
        record["bench_cost"] = {"peak_mb": memory.peak_mb}
        save_version(
            model,
            target,
            {"version": folder, "parent": None, "kind": "bench", "label": label, **record, "events": []},
            files={TRAIN_IDS: train_ids_json(instances)},
        )
        checkpoint_path(ctx.run, folder).unlink(missing_ok=True)
        del model
    return load_version(ctx.run, folder), version_manifest(target)


def default_solver(experiment: Experiment) -> SolverConfig:
    return SolverConfig(
        method="fisher",
        sample_size=experiment.sample_size,
        retained_floor=experiment.retained_floor,
        batch_size=experiment.solver_batch_size,
    )


# -- can the run judge? -------------------------------------------------------------------------
def task_baseline(ctx: BenchContext) -> dict[str, Any]:
    """The task's simple baseline on the test prompts, on the main metric (as ``rec-eraser evaluate`` computes it)."""
    return ctx.task_spec.simple_baseline(load_instances(ctx.run, "train"), ctx.test)


def original_memorisation(run: Path, say: Say, version: str | None = None) -> MemorisationGap | None:
    """``v0000``'s memorisation gap, measured as the default update's calibration measures it
    (same sample and settings), so the benchmark's ``can_judge`` and the update read one figure
    and the request reuses it (it is a property of the adapter, measured once per lineage): the
    one recorded on ``version``'s lineage (at training, or by the request that wrote ``version``),
    else measured now (a v0000 trained before training recorded it)."""
    registry = Registry(run)
    recorded = recorded_memorisation(
        registry.lineage(version or "v0000"), DEFAULT_CALIBRATION.reference_size, DEFAULT_CALIBRATION.seed
    )
    if recorded is not None:
        return recorded
    say("measuring v0000's memorisation gap")
    return version_memorisation(
        registry, "v0000", load_version(run, "v0000"), load_instances(run, "train"), DEFAULT_CALIBRATION
    )


def memorisation_dict(gap: MemorisationGap | None) -> dict[str, Any]:
    if gap is None:
        return {"gap": None, "standard_error": None, "untrained_source": "too few reference instances"}
    return gap.to_dict()


# -- metrics ----------------------------------------------------------------------------------
def utility_of(ctx: BenchContext, outcome: Outcome) -> dict[str, float | None]:
    return ctx.task_spec.utility(outcome.test_scores, ctx.test, ctx.titles, outcome.answers)


def agreement(ctx: BenchContext, a: Outcome, b: Outcome) -> float:
    return ctx.task_spec.agreement(a.test_scores, b.test_scores)


def _number(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _difference(a: float | None, b: float | None) -> float | None:
    a, b = _number(a), _number(b)
    return None if a is None or b is None else a - b


def _mean(x: np.ndarray | None) -> float | None:
    return None if x is None or len(x) == 0 else float(np.mean(x))


def metrics_of(ctx: BenchContext, outcome: Outcome, retrain: Outcome, original: Outcome) -> dict[str, Any]:
    """Every figure of one method (see the module docstring)."""
    main = ctx.task_spec.main_metric
    utility, retrain_utility, original_utility = (
        utility_of(ctx, outcome),
        utility_of(ctx, retrain),
        utility_of(ctx, original),
    )
    m: dict[str, Any] = dict(utility)
    m["utility_gap"] = _difference(utility[main], retrain_utility[main])
    m["agreement_with_retrain"] = agreement(ctx, outcome, retrain)
    m["agreement_kind"] = ctx.task_spec.agreement_kind
    m["forget_loss"] = _mean(outcome.forget_losses)
    m["corrected_loss"] = _mean(outcome.corrected_losses)
    m["unseen_loss"] = float(np.mean(outcome.unseen_losses))
    m["membership_auc"] = (
        membership_inference_auc(outcome.forget_losses, outcome.unseen_losses)
        if outcome.forget_losses is not None
        else None
    )
    if ctx.experiment.edit in ("qm", "rc"):
        m["recovery"] = recovery(utility[main], original_utility[main], retrain_utility[main])
        m["recovery_corrected_loss"] = (
            None
            if outcome.corrected_losses is None
            else recovery(
                _mean(outcome.corrected_losses), _mean(original.corrected_losses), _mean(retrain.corrected_losses)
            )
        )
    return m
