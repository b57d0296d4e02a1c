"""Apply unlearning events to a run's current adapter: one influence solve, one new version.

``apply_events`` is what ``forget-user``, ``forget-interactions``, ``correct`` and
``apply-events`` run. Under the run's lock it skips events already in effect (ids are
idempotency keys), checks the rest against the run (a bad event is reported, never
applied, and never stops the good ones), turns them into edits of the current training
set, solves once for all of them, and writes the next version atomically with its
manifest (events and the instances each touched, the solver report, losses before and
after) and a ledger line. Any error before the rename leaves the current version current.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec_eraser.core import InfluenceEngine, Removal, Replacement, SolverConfig
from rec_eraser.core.calibration import CalibrationConfig
from rec_eraser.core.edits import new_samples, old_samples
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prepare import load_instances, load_manifest
from rec_eraser.tasks.rewrite import PromptContext
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.model import rec_loss
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import LoadedModel, Measure, held_out_instances, load_version, save_version, version_name
from rec_eraser.workflows.calibration import (
    EditedLossObjective,
    MemorisationGap,
    drift_check,
    measure_memorisation,
    recorded_memorisation,
    trained_reference,
)
from rec_eraser.workflows.events import Event, EventError, EventProblem
from rec_eraser.workflows.plan import RunIndex, plan_edits
from rec_eraser.workflows.progress import Say
from rec_eraser.workflows.registry import EDITED, Registry, now

logger = logging.getLogger(__name__)

#: The workflows' default solver: the damped empirical Fisher of a 64-instance sub-sample
#: (always holding the edited instances), solved exactly. It costs one gradient per
#: sub-sample instance and no HVP; see ``rec_eraser.core.fisher`` for why.
DEFAULT_SOLVER = SolverConfig(method="fisher", sample_size=64, batch_size=4)


#: What the damping is matched on (``Calibrate.target``):
#: - "edited": the edited instances' measured loss move equals the memorisation gap (a search
#:   over the damping, each trial a forward pass over them);
#: - "reference": the unedited rows of the update's Fisher sample, each whole user's removed
#:   alone, are predicted (first order) to move by the gap on average; the edited instances then move
#:   as the influence function predicts at that damping, by more than the gap when they were
#:   memorised more than average and by less when less (``reference_factor``; no pass at all).
CALIBRATION_TARGETS = ("edited", "reference")


@dataclass(frozen=True)
class Calibrate:
    """How an update's damping is calibrated (``rec_eraser.workflows.calibration``).

    Up to ``reference_size`` trained and as many never-trained instances measure the
    memorisation gap, once per lineage (``rec_eraser.workflows.calibration``); at most
    ``max_edited`` removed instances and as many corrected forms are measured at each trial of
    the search; ``target``: one of :data:`CALIBRATION_TARGETS`.
    """

    search: CalibrationConfig = field(default_factory=CalibrationConfig)
    reference_size: int = 128
    max_edited: int = 64
    seed: int = 0
    target: str = "edited"

    def __post_init__(self) -> None:
        if self.target not in CALIBRATION_TARGETS:
            raise ValueError(f"unknown calibration target {self.target!r}; expected one of {', '.join(CALIBRATION_TARGETS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"search": self.search.to_dict(), "reference_size": self.reference_size, "max_edited": self.max_edited, "seed": self.seed,
                "target": self.target}

    def matches(self, recorded: dict[str, Any] | None) -> bool:
        """Whether a version's recorded settings are these (a record from before ``target`` existed was "edited")."""
        return recorded is not None and {"target": "edited", **recorded} == self.to_dict()


#: The workflows' default: calibrate the fisher update's damping (``None`` keeps the fixed rule).
DEFAULT_CALIBRATION = Calibrate()


@dataclass
class ApplyResult:
    """What one apply did. ``version`` is None when nothing was applied."""

    run: str
    parent: str
    version: str | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    problems: list[EventProblem] = field(default_factory=list)
    removed: int = 0
    modified: int = 0
    train_instances: int = 0
    solver: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "parent": self.parent, "version": self.version, "applied": self.applied, "skipped": self.skipped,
                "problems": [p.to_dict() for p in self.problems], "removed": self.removed, "modified": self.modified,
                "train_instances": self.train_instances, "solver": self.solver, "metrics": self.metrics, "seconds": self.seconds}


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def apply_events(run_dir: Path | str, events: Sequence[tuple[int | None, Event]], solver: SolverConfig | None = None,
                 damping: float | None = None, say: Say | None = None, on_gradient: Callable[[int], None] | None = None,
                 calibrate: Calibrate | None = DEFAULT_CALIBRATION, memorisation: MemorisationGap | None = None,
                 strict: bool = False) -> ApplyResult:
    """Apply ``events`` (each with its line number in the events file, or None) to the current version.

    ``calibrate``: for the ``fisher`` solver, choose the damping's scale for this request from
    the adapter's memorisation gap (see ``rec_eraser.workflows.calibration``): by default so
    that the edited instances' losses move by the gap, or with ``target="reference"`` so that
    the retained rows of the Fisher sample are predicted to (:data:`CALIBRATION_TARGETS`);
    ``None`` keeps the starting damping (the rule's, or ``damping``). Other solvers ignore it. The gap is ``memorisation`` when the caller
    measured it on the current version or an ancestor (with ``calibrate``'s settings), else
    the one recorded nearest on the lineage, else measured now (and then recorded).

    Returns the result; a new version exists iff ``result.version`` is not None. Bad events
    are in ``result.problems`` and were not applied; with ``strict``, one bad event refuses
    them all, before anything is computed or written (an :class:`EventError` listing them).

    Raises:
        EventError: ``strict`` and some events do not fit the run.
        RegistryError: no such run, no trained version, or another job holds the run.
        SolverError: the solve diverged or missed the residual bound (no version written).
    """
    say = say or (lambda _m: None)
    registry = Registry(run_dir)
    t0 = time.perf_counter()
    with registry.writing():
        work = _compute(registry, events, solver, damping, say, on_gradient, calibrate, memorisation, strict=strict)
        result = work.result
        if work.plan is None:
            result.seconds = time.perf_counter() - t0
            return result
        parent, plan, manifest = result.parent, work.plan, work.manifest
        edited = registry.edited(parent)
        edited.update({i: plan.after[i] for i in plan.changed})
        name = registry.next_version()
        root = registry.lineage(parent)[-1]
        record = {
            "version": name, "parent": parent, "kind": "unlearned", "created": now(),
            "base_model": root["base_model"], "base_model_sha256": root.get("base_model_sha256"), "task": manifest["task"],
            "data_hash": manifest["data_hash"], "recipe": root["recipe"], "train_instances": result.train_instances,
            "events": result.applied, "edits": {"removed": result.removed, "modified": result.modified},
            "solver": result.solver, "metrics": result.metrics,
        }
        say(f"writing {name}")
        save_version(work.loaded.model, registry.run_dir / name, record, files={EDITED: Registry.edited_jsonl(edited)})
        try:
            registry.append_ledger({"time": record["created"], "action": "apply", "version": name, "parent": parent,
                                    "events": [e.id for e in work.todo], "skipped": [s["id"] for s in result.skipped],
                                    "removed": result.removed, "modified": result.modified})
        except OSError as exc:  # the version is complete and current; the next writer recovers the ledger line
            logger.warning("%s is written but its ledger line is not (%s); it will be recovered", name, exc)
        result.version = name
    result.seconds = time.perf_counter() - t0
    return result


def preview_update(run_dir: Path | str, events: Sequence[Event], solver: SolverConfig | None = None, damping: float | None = None,
                   say: Say | None = None, calibrate: Calibrate | None = DEFAULT_CALIBRATION,
                   memorisation: MemorisationGap | None = None, parent: str | None = None,
                   strict: bool = False) -> tuple[LoadedModel | None, ApplyResult]:
    """What :func:`apply_events` would do to ``parent`` (the current version by default),
    computed in memory: that version's model holding the update (``None`` when no training
    instance would change) and the result (``version`` is None). No version, ledger line or
    gap is written for it; it takes the run's lock like a write (so it waits for no one and
    refuses while another job writes), and, as every writer does, first tidies what an
    interrupted writer left (stale staging folders, a missing ledger line). For comparing
    update settings on one run without adding versions. Raises what ``apply_events`` raises."""
    registry = Registry(run_dir)
    t0 = time.perf_counter()
    with registry.writing():  # the same snapshot a write would see
        work = _compute(registry, [(None, e) for e in events], solver, damping, say or (lambda _m: None), None, calibrate, memorisation,
                        parent, strict)
    work.result.seconds = time.perf_counter() - t0
    return (work.loaded if work.plan is not None and work.plan.changed else None), work.result


@dataclass
class _Computed:
    """An update computed under the run's lock and not yet written: ``plan`` is None when no event is left to apply."""

    result: ApplyResult
    todo: list[Event]
    plan: Any = None
    loaded: Any = None
    manifest: dict[str, Any] = field(default_factory=dict)


def _compute(registry: Registry, events: Sequence[tuple[int | None, Event]], solver: SolverConfig | None, damping: float | None,
             say: Say, on_gradient: Callable[[int], None] | None, calibrate: Calibrate | None,
             memorisation: MemorisationGap | None, parent: str | None = None, strict: bool = False) -> _Computed:
    """Check ``events`` against ``parent`` (the current version by default), plan their edits and
    compute the update in memory (apply_events' docstring; ``strict``: refuse all on a bad one)."""
    run_dir = registry.run_dir
    parent = parent or registry.current()
    result = ApplyResult(run=str(run_dir), parent=parent)
    in_effect = registry.applied_events(parent)
    manifest = load_manifest(run_dir)
    ctx = PromptContext.of_run(run_dir)
    say("reading the run")
    train_split = load_instances(run_dir, "train")  # read once: the base of the training set and part of the index
    training_set = registry.training_set(parent, train_split)
    index = _run_index(run_dir, manifest["task"], training_set, train_split, ctx)
    todo: list[Event] = []
    for line, event in events:
        if any(event.id == e.id for e in todo):
            continue  # the same event given twice in one call
        if event.id in in_effect:
            result.skipped.append({"id": event.id, "applied_in": in_effect[event.id]})
            continue
        try:
            index.validate(event)
        except EventError as exc:
            result.problems.append(EventProblem(line or 0, str(exc), event.id))
            continue
        todo.append(event)
    if strict and result.problems:
        raise EventError("; ".join(str(p) for p in result.problems) + " (nothing applied)")
    if not todo:
        return _Computed(result, todo)
    plan = plan_edits(todo, training_set, ctx)
    result.applied = [e.to_dict() for e in plan.effects]
    result.removed, result.modified = len(plan.removed), len(plan.modified)
    result.train_instances = len(training_set) - result.removed
    loaded = load_version(run_dir, parent)
    if plan.changed:
        say(f"solving for {len(plan.changed)} edited instances of {len(training_set)}")
        gauge = None
        solver = solver or DEFAULT_SOLVER
        lineage = registry.lineage(parent)
        if calibrate is not None and solver.method == "fisher":
            lineage_edits = set(registry.edited(parent))
            gap = _given_gap(memorisation, lineage, calibrate) or recorded_memorisation(lineage, calibrate.reference_size, calibrate.seed)
            measured_now = 0.0
            if gap is None:
                say(f"measuring {parent}'s memorisation gap (once per lineage)")
                gap = version_memorisation(registry, parent, loaded, train_split, calibrate)
                measured_now = gap.seconds if gap is not None else 0.0
            gauge = _Gauge(gap, measured_now, set(plan.changed) | lineage_edits)
        solution, metrics = _solve(loaded, training_set, plan, solver, damping, on_gradient, calibrate, gauge)
        result.solver, result.metrics = solution.report.to_dict(), metrics
        if gauge is not None and gauge.gap is not None:  # this request's retained change plus its lineage's, against the gap
            drift = drift_check([{"kind": "unlearned", "metrics": result.metrics}, *lineage], gauge.gap.gap)
            result.metrics["drift"] = drift
            if drift["trusted"] is False:
                logger.warning("the lineage's retained drift %.3g has reached the memorisation gap %.3g: retrain before trusting "
                               "further approximate updates", drift["retained_drift"], gauge.gap.gap)
    return _Computed(result, todo, plan, loaded, manifest)


def _run_index(run_dir: Path | str, task: str, training_set: list, train_split: list, ctx: PromptContext) -> RunIndex:
    """What events are checked against: every user's interactions in any split, and the run's items."""
    return RunIndex.build(task, [training_set, train_split, *(load_instances(run_dir, s) for s in ("valid", "test"))], dict(ctx.titles))


def validate_events(run_dir: Path | str, events: Sequence[Event]) -> list[EventProblem]:
    """The problems ``apply_events`` would report for ``events`` against the current version, without applying anything."""
    registry = Registry(run_dir)
    train_split = load_instances(run_dir, "train")
    index = _run_index(run_dir, load_manifest(run_dir)["task"], registry.training_set(registry.current(), train_split), train_split,
                       PromptContext.of_run(run_dir))
    problems = []
    for event in events:
        try:
            index.validate(event)
        except EventError as exc:
            problems.append(EventProblem(0, str(exc), event.id))
    return problems


def version_memorisation(registry: Registry, version: str, loaded: Any, train_split: list, calibrate: Calibrate) -> MemorisationGap | None:
    """Measure ``version``'s memorisation gap with ``calibrate``'s sample (done once per lineage,
    then recorded and reused); ``loaded``: that version's model."""
    root_recipe = Recipe.from_dict(registry.lineage(version)[-1]["recipe"])
    return _memorisation_of(registry.run_dir, root_recipe, version, loaded, registry.training_set(version, train_split),
                            set(registry.edited(version)), registry.training_set("v0000", train_split), train_split, calibrate)


def _memorisation_of(run_dir: Path, root_recipe: Recipe, version: str, loaded: Any, training_set: list, edited_ids: set[str],
                     ever_trained: list, train_split: list, calibrate: Calibrate) -> MemorisationGap | None:
    """The one wiring of the gap's sample (validation split, held-out users, size, seed) that
    requests and training share, so both measure the same figure."""
    return measure_memorisation(partial(instance_losses, loaded), version, training_set, edited_ids, ever_trained, train_split,
                                load_instances(run_dir, "valid"), calibrate.reference_size, calibrate.seed,
                                held_out_instances(run_dir, root_recipe, train_split))


def training_memorisation(run_dir: Path | str, recipe: Recipe, calibrate: Calibrate = DEFAULT_CALIBRATION) -> Measure:
    """For ``train_run(..., measure=)``: v0000's memorisation gap, measured on the freshly trained
    model with ``calibrate``'s sample, recorded in v0000's manifest where every request of the
    lineage finds and reuses it. Training pays the one-time measurement, so no deletion request
    does (a lineage trained without it gets it measured by its first calibrated request)."""
    run_dir = Path(run_dir)

    def measure(loaded: LoadedModel, training_set: list[Instance]) -> dict[str, Any]:
        train_split = load_instances(run_dir, "train")
        gap = _memorisation_of(run_dir, recipe, version_name(0), loaded, training_set, set(), training_set, train_split, calibrate)
        return {} if gap is None else {"calibration": {"memorisation_gap": gap.to_dict()}}

    return measure


def _given_gap(gap: MemorisationGap | None, lineage: list[dict[str, Any]], calibrate: Calibrate) -> MemorisationGap | None:
    """A caller's gap, checked: measured on a version of this lineage, with ``calibrate``'s sample settings."""
    if gap is None:
        return None
    versions = [record["version"] for record in lineage]
    if gap.measured_on not in versions:
        raise ValueError(f"the memorisation gap given was measured on {gap.measured_on!r}, not on a version of this lineage ({versions[0]})")
    if (gap.reference_size, gap.seed) != (calibrate.reference_size, calibrate.seed):
        raise ValueError(f"the memorisation gap given was measured with reference_size {gap.reference_size}, seed {gap.seed}; "
                         f"the calibration asks for {calibrate.reference_size}, {calibrate.seed}")
    return gap


@dataclass(frozen=True)
class _Gauge:
    """What a calibrated request knows before its solve: the gap (None: too few reference
    instances), the seconds this request spent measuring it, and the ids of every instance
    edited by its lineage or by itself (kept out of the retained check)."""

    gap: MemorisationGap | None
    seconds: float
    edited_ids: set[str]


def _retained_rows(fisher: Any, encoded: dict[str, Any], training_set: list, edited_ids: set[str], calibrate: Calibrate,
                   losses: Callable[[Sequence], np.ndarray]) -> tuple[list, np.ndarray, list[int]]:
    """Unedited training instances of the Fisher's sample (up to ``reference_size``), their current
    losses (those of its per-instance passes: no second forward; or one forward each when its
    rows came from batched passes) and their rows in the Fisher. The retained-loss check before
    and after the update, and the reference of the "reference" calibration. When the request
    edits (nearly) the whole sample, a seeded draw of other training instances (one forward
    each) with no rows."""
    instance_of = {id(encoded[z.id]): z for z in training_set}
    rows = [(i, instance_of[id(s)]) for i, s in enumerate(fisher.samples)
            if id(s) in instance_of and instance_of[id(s)].id not in edited_ids]
    if len(rows) > calibrate.reference_size:
        pick = np.random.default_rng(calibrate.seed).choice(len(rows), calibrate.reference_size, replace=False)
        rows = [rows[i] for i in np.sort(pick)]
    retained = [z for _, z in rows]
    if len(retained) < 2:
        retained = trained_reference(training_set, edited_ids, calibrate.reference_size, calibrate.seed)
        return retained, losses(retained), []
    if fisher.losses is None:
        return retained, losses(retained), [i for i, _ in rows]
    return retained, np.array([float(fisher.losses[i]) for i, _ in rows], dtype=float), [i for i, _ in rows]


def _reference_calibration(engine: InfluenceEngine, fisher: Any, edits: list, retained: list, rows: list[int], gap: float,
                           calibrate: Calibrate, removed_before: np.ndarray, corrected_before: np.ndarray,
                           training_set: list) -> tuple[dict[str, Any], dict[str, float | None]]:
    """The "reference" target: the damping factor at which the retained rows, each whole user's
    removed alone (``whole_groups``), are predicted to move by ``gap`` on average
    (``reference_factor``, with how many rows and users, and its seconds), and the edited groups'
    mean losses after the update that it predicts to first order."""
    t0 = time.perf_counter()
    chosen, spectrum, whole = engine.match_reference(fisher, rows, [z.user for z in retained], Counter(z.user for z in training_set),
                                                     gap, calibrate.search)
    n = len(engine.train_samples)
    row_of = {id(z): i for i, z in enumerate(fisher.samples)}
    olds, news = old_samples(edits), new_samples(edits)
    removed_olds = [e.sample for e in edits if isinstance(e, Removal)]
    rhs = torch.zeros(fisher.size, dtype=torch.float64)  # b = Gᵀ rhs / n
    rhs[[row_of[id(z)] for z in olds]] += 1.0
    if news:
        rhs[[row_of[id(z)] for z in news]] -= 1.0

    def predicted_mean_change(group: list) -> float | None:
        if not group:
            return None
        e = torch.zeros(fisher.size, dtype=torch.float64)
        e[[row_of[id(z)] for z in group]] = 1.0
        return spectrum.bilinear(e, rhs, chosen.factor) / n / len(group)

    removed_change, corrected_change = predicted_mean_change(removed_olds), predicted_mean_change(news)
    targets = {"removed_loss": None if removed_change is None else float(removed_before.mean() + removed_change),
               "corrected_loss": None if corrected_change is None else float(corrected_before.mean() + corrected_change)}
    return {**chosen.to_dict(), "users": chosen.groups, "whole_users": whole, "seconds": time.perf_counter() - t0}, targets


def _solve(loaded: Any, training_set: list, plan: Any, solver: SolverConfig, damping: float | None,
           on_gradient: Callable[[int], None] | None, calibrate: Calibrate | None = None,
           gauge: _Gauge | None = None) -> tuple[Any, dict[str, Any]]:
    """Compute and apply the update in place; return it with losses before and after.

    With ``gauge`` (the memorisation gap and what measuring it cost this request), the damping
    is calibrated on that gap; the metrics then hold the gap, the targets, the retained
    instances' loss change (the unedited instances of the Fisher's sample, whose losses its
    gradient passes measured already) and the trust check (the first-order prediction of the
    edited losses' change against the measured one).
    """
    tok, items, max_length = loaded.tokenizer, loaded.item_index, loaded.recipe.max_length
    encoded = {z.id: encode_instance(z, tok, items, max_length) for z in training_set}
    edits = []
    for i in plan.changed:
        new = plan.after[i]
        edits.append(Removal(encoded[i]) if new is None else Replacement(encoded[i], encode_instance(new, tok, items, max_length)))
    removed = [plan.before[i] for i in plan.removed]
    corrected = [plan.after[i] for i in plan.modified]
    corrected_old = [plan.before[i] for i in plan.modified]

    def losses(instances: Sequence) -> np.ndarray:
        return instance_losses(loaded, instances)

    removed_before, corrected_before, corrected_old_before = losses(removed), losses(corrected), losses(corrected_old)
    before = {"forgotten_loss": _mean(removed_before), "corrected_loss": _mean(corrected_before)}
    engine = InfluenceEngine(loaded.model, rec_loss(), list(encoded.values()), collate, curvature="ggn", damping=damping, solver=solver)
    engine.on_gradient = on_gradient
    objective, calibration, retained, retained_before, fisher, damping_factor = None, {}, [], None, None, None
    if gauge is not None and calibrate is not None:
        fisher = engine.empirical_fisher(edits)  # its seconds count in the solve's
        retained, retained_before, rows = _retained_rows(fisher, encoded, training_set, gauge.edited_ids, calibrate, losses)
        calibration["reference_seconds"] = gauge.seconds  # part of the request's cost (0 when reused)
        calibration["target"] = calibrate.target
        gap = gauge.gap
        if gap is None:
            calibration["note"] = "too few reference instances to measure the memorisation gap: the starting damping"
        else:
            calibration["memorisation_gap"] = gap.to_dict()
            if gap.gap > 0 and calibrate.target == "reference" and not rows:  # falls through to the edited target below
                calibration["note"] = "the request edits the whole Fisher sample: no reference rows, the edited instances' target"
            if gap.gap > 0 and calibrate.target == "reference" and rows:
                calibration["reference"], calibration["targets"] = _reference_calibration(
                    engine, fisher, edits, retained, rows, gap.gap, calibrate, removed_before, corrected_before, training_set)
                damping_factor = calibration["reference"]["factor"]
            elif gap.gap > 0:
                rng = np.random.default_rng(calibrate.seed)
                cap = calibrate.max_edited
                # at most ``cap`` of each group, with the losses measured above (no second pass)
                pick = lambda n: np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))  # noqa: E731
                r, c = pick(len(removed)), pick(len(corrected))
                objective = EditedLossObjective(losses, [removed[j] for j in r], [corrected[j] for j in c], gap.gap,
                                                removed_before=removed_before[r], corrected_before=corrected_before[c])
                calibration["targets"] = objective.targets()
            else:
                calibration["note"] = "no memorisation measured (gap <= 0): the smallest step of the search range"
    if damping_factor is not None:
        update = engine.compute(edits, damping_factor=damping_factor, fisher=fisher)
    elif objective is None and calibration.get("memorisation_gap", {}).get("gap", 1.0) <= 0:
        update = engine.compute(edits, damping_factor=calibrate.search.max_factor, fisher=fisher)
    else:
        update = engine.compute(edits, objective=objective, calibration=calibrate.search if objective is not None else None,
                                fisher=fisher)
    update.apply(loaded.model)
    removed_after, corrected_after, corrected_old_after = losses(removed), losses(corrected), losses(corrected_old)
    after = {"forgotten_loss": _mean(removed_after), "corrected_loss": _mean(corrected_after)}
    metrics: dict[str, Any] = {"before": before, "after": after}
    if calibration:
        measured = float((removed_after - removed_before).sum() + (corrected_old_after - corrected_old_before).sum()
                         - (corrected_after - corrected_before).sum())
        predicted = update.report.predicted_change
        calibration["trust"] = {"predicted_change": predicted, "measured_change": measured,
                                "ratio": measured / predicted if predicted else None}
        if len(retained):
            calibration["retained_loss"] = {"before": float(retained_before.mean()), "after": float(losses(retained).mean()),
                                            "instances": len(retained)}
        calibration["settings"] = calibrate.to_dict()
        metrics["calibration"] = calibration
    # forgotten_loss should rise (toward the loss of unseen instances); corrected_loss (the
    # loss of the corrected instances' new form) should fall
    return update, metrics

