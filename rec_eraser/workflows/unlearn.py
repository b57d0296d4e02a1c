"""Apply unlearning events to a run's current adapter: one influence solve, one new version.

``apply_events`` is what ``forget-user``, ``forget-interactions``, ``correct`` and
``apply-events`` run. Under the run's lock it skips events already in effect (ids are
idempotency keys), checks the rest against the run (a bad event is reported, never
applied, and never stops the good ones), turns them into edits of the current training
set, solves once for all of them, and writes the next version atomically with its
manifest (events and the instances each touched, the solver report, losses before and
after) and a ledger line. Any error before the rename leaves the current version current.
The update itself (the solve, its calibrated damping, its figures) is computed by
:mod:`rec_eraser.workflows.update`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rec_eraser.core import SolverConfig, distributed
from rec_eraser.errors import RecEraserError
from rec_eraser.memory import PeakMemory
from rec_eraser.tasks.prepare import load_instances, load_manifest
from rec_eraser.tasks.rewrite import PromptContext
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import LoadedModel, load_version, uses_item_tokens, version_item_encoder
from rec_eraser.training.versions import save_version
from rec_eraser.workflows.calibration import (
    MemorisationGap,
    drift_check,
    recorded_memorisation,
)
from rec_eraser.workflows.curvature_cache import (
    DEFAULT_CACHE,
    CacheRequest,
    CacheSettings,
    CurvatureCache,
    cache_sha256,
    write_cache,
)
from rec_eraser.workflows.erasure import owed_by_compaction, owed_encoder_choice
from rec_eraser.workflows.events import Event, EventError, EventProblem, parse_event
from rec_eraser.workflows.item_encoder import (
    DEFAULT_ENCODER_CHOICE,
    check_alignment_rows,
    check_encoder_choice,
    encoder_files,
    retrain_item_encoder,
    swap_item_encoder,
)
from rec_eraser.workflows.memorisation import checked_gap, training_memorisation, version_memorisation
from rec_eraser.workflows.plan import RunIndex, plan_edits
from rec_eraser.workflows.progress import Say
from rec_eraser.workflows.registry import EDITED, Registry, now
from rec_eraser.workflows.update import (
    CALIBRATION_TARGETS,
    DEFAULT_CALIBRATION,
    DEFAULT_SOLVER,
    Calibrate,
    Gauge,
    request_cost,
    solve_update,
)

logger = logging.getLogger(__name__)

# the update's settings are part of this module's API
__all__ = [
    "CALIBRATION_TARGETS",
    "DEFAULT_CALIBRATION",
    "DEFAULT_SOLVER",
    "ApplyResult",
    "Calibrate",
    "apply_events",
    "preview_update",
    "training_memorisation",
    "validate_events",
    "version_memorisation",
]


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
    #: the version's ``item_encoder`` manifest entry (LLaRA: which version's retrained encoder it reads;
    #: None: the run's)
    item_encoder: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "parent": self.parent,
            "version": self.version,
            "applied": self.applied,
            "skipped": self.skipped,
            "problems": [p.to_dict() for p in self.problems],
            "removed": self.removed,
            "modified": self.modified,
            "train_instances": self.train_instances,
            "solver": self.solver,
            "metrics": self.metrics,
            "seconds": self.seconds,
            "item_encoder": self.item_encoder,
        }


def apply_events(
    run_dir: Path | str,
    events: Sequence[tuple[int | None, Event]],
    solver: SolverConfig | None = None,
    damping: float | None = None,
    say: Say | None = None,
    on_gradient: Callable[[int], None] | None = None,
    calibrate: Calibrate | None = DEFAULT_CALIBRATION,
    memorisation: MemorisationGap | None = None,
    strict: bool = False,
    wait: float = 0.0,
    cache: CacheSettings = DEFAULT_CACHE,
    item_encoder: str = DEFAULT_ENCODER_CHOICE,
) -> ApplyResult:
    """Apply ``events`` (each with its line number in the events file, or None) to the current version.

    ``wait``: seconds to wait for another job's lock on the run before giving up with RunBusy.
    ``cache``: how the ``fisher`` solver reuses the curvature rows of the lineage's last request
    (:mod:`rec_eraser.workflows.curvature_cache`); the run's cache is replaced after the version is written.

    ``calibrate``: for the ``fisher`` solver, choose the damping's scale for this request from
    the adapter's memorisation gap (see ``rec_eraser.workflows.calibration``): by default so
    that the retained rows of the Fisher sample are predicted to move by the gap, or with
    ``target="edited"`` so that the edited instances' losses do, or with ``target="quantile"``
    each by its own quantile target (:data:`CALIBRATION_TARGETS`); ``None`` keeps the starting
    damping (the rule's, or ``damping``). Other solvers ignore it. The gap is ``memorisation``
    when the caller measured it on the current version or an ancestor (with ``calibrate``'s
    settings), else the one recorded nearest on the lineage, else measured now (and then
    recorded). The quantile target also needs the gap's samples' losses: a given or recorded
    gap without them is passed over (so its figure, in the drift check too, is the one found or
    measured with them).

    ``item_encoder``: ``"keep"`` leaves a LLaRA run's item encoder as the parent version had it;
    ``"retrain"`` also retrains it without every erased interaction in effect and carries the
    projector over to it (:mod:`rec_eraser.workflows.item_encoder`). Runs without item tokens
    accept only ``"keep"``.

    Returns the result; a new version exists iff ``result.version`` is not None. Bad events
    are in ``result.problems`` and were not applied; with ``strict``, one bad event refuses
    them all, before anything is computed or written (an :class:`EventError` listing them).

    Raises:
        EventError: ``strict`` and some events do not fit the run.
        RegistryError: no such run or no trained version. RunBusy: another job holds the run (exit code 3).
        SolverError: the solve diverged or missed the residual bound (no version written).
        RecEraserError: ``item_encoder="retrain"`` on a run without item tokens, or where the
            projector could not be carried over (too few items and histories for the embedding's
            width; counted with every event given, before any work).
    """
    say = say or (lambda _m: None)
    check_encoder_choice(item_encoder)
    registry = Registry(run_dir)
    if item_encoder == "retrain" and not uses_item_tokens(registry.run_dir, registry.recipe()):
        raise RecEraserError(f"{registry.run_dir}: its adapter reads no item encoder, so there is none to retrain")
    t0 = time.perf_counter()
    with registry.writing(wait):
        with_owed = _with_owed_events(registry, events, say)
        if len(with_owed) > len(events) and owed_encoder_choice(registry) == "retrain":
            item_encoder = "retrain"  # what the owed requests did; keeping would leave their data in the encoder
        events = with_owed
        result = apply_locked(
            registry,
            events,
            solver,
            damping,
            say,
            on_gradient,
            calibrate,
            memorisation,
            strict=strict,
            cache=cache,
            item_encoder=item_encoder,
        )
    result.seconds = time.perf_counter() - t0
    return result


def _with_owed_events(
    registry: Registry, events: Sequence[tuple[int | None, Event]], say: Say
) -> list[tuple[int | None, Event]]:
    """``events`` after the ones an interrupted compaction left out of effect (re-applied first,
    so no deletion stays undone longer than the next request; a retried copy of one of them is
    the same event given twice, which the plan applies once, and a different event under one
    of their ids is refused there as any id clash is)."""
    owed = owed_by_compaction(registry)
    if not owed:
        return list(events)
    ids = ", ".join(e["id"] for e in owed)
    logger.warning("re-applying %d event(s) that an interrupted compaction left out of effect: %s", len(owed), ids)
    say(f"re-applying {len(owed)} event(s) an interrupted compaction left out of effect")
    return [*((None, parse_event(e)) for e in owed), *events]


def apply_locked(
    registry: Registry,
    events: Sequence[tuple[int | None, Event]],
    solver: SolverConfig | None,
    damping: float | None,
    say: Say,
    on_gradient: Callable[[int], None] | None = None,
    calibrate: Calibrate | None = DEFAULT_CALIBRATION,
    memorisation: MemorisationGap | None = None,
    strict: bool = False,
    cache: CacheSettings = DEFAULT_CACHE,
    item_encoder: str = DEFAULT_ENCODER_CHOICE,
) -> ApplyResult:
    """:func:`apply_events` for a caller that holds the run's lock already (``registry.writing()``):
    a compaction re-applies, under its own lock, the events that landed while it trained."""
    if item_encoder == "retrain":  # a refusal now, not after the solve and SASRec's training
        current = registry.current()
        in_effect = [parse_event(content) for _, content in registry.applied_event_records(current).values()]
        old = version_item_encoder(registry.run_dir, registry.record(current))
        check_alignment_rows(registry.run_dir, [*in_effect, *(e for _, e in events)], old)
    memory = PeakMemory()
    with memory.watch():
        work = _compute(
            registry, events, solver, damping, say, on_gradient, calibrate, memorisation, strict=strict, cache=cache
        )
    result = work.result
    if work.plan is None:
        return result
    result.metrics["peak_mb"] = memory.peak_mb  # the process's peak resident memory (CUDA: the allocator's)
    parent, plan, manifest = result.parent, work.plan, work.manifest
    edited = registry.edited(parent)
    edited.update({i: plan.after[i] for i in plan.changed})
    name = registry.next_version()
    root = registry.lineage(parent)[-1]
    record = {
        "version": name,
        "parent": parent,
        "kind": "unlearned",
        "created": now(),
        "base_model": root["base_model"],
        "base_model_sha256": root.get("base_model_sha256"),
        "base_model_weights_sha256": root.get("base_model_weights_sha256"),
        "task": manifest["task"],
        "data_hash": manifest["data_hash"],
        "recipe": root["recipe"],
        "train_instances": result.train_instances,
        "events": result.applied,
        "edits": {"removed": result.removed, "modified": result.modified},
        "solver": result.solver,
        "metrics": result.metrics,
    }
    files = {EDITED: Registry.edited_jsonl(edited)}
    inherited = registry.manifest(parent).get("item_encoder")
    if item_encoder == "retrain":
        # on every rank (a deterministic training; the losses after it are a sharded pass all ranks join)
        in_effect = [parse_event(content) for _, content in registry.applied_event_records(parent).values()]
        encoder, files_of_encoder = _retrain_encoder(registry, parent, [*in_effect, *work.todo], work, say)
        record["item_encoder"] = {"version": name, "retrained": True, **encoder}
        files.update(files_of_encoder)
    elif inherited:
        # the encoder that version retrained stays in use: a deletion once out of it stays out
        record["item_encoder"] = {"version": inherited["version"], "retrained": False}
    result.item_encoder = record.get("item_encoder")
    if not distributed.is_main():  # rank 0 writes; the lock's barrier holds the others until it has
        result.version = name
        return result
    t0 = time.perf_counter()
    # the rows were computed through the parent's encoder: a version reading another one starts a new cache
    fresh_rows = work.new_cache is not None and work.new_cache.rows and item_encoder != "retrain"
    cache_bytes = work.new_cache.to_bytes(name) if fresh_rows else None
    if cache_bytes is not None:  # what the next request checks the cache file against; its writing is this request's
        record["metrics"]["curvature_cache"]["sha256"] = cache_sha256(cache_bytes)
        record["metrics"]["curvature_cache"]["write_seconds"] = time.perf_counter() - t0
        cost = request_cost(record)
        if cost is not None:
            record["metrics"]["cost"] = cost
    say(f"writing {name}")
    save_version(work.loaded.model, registry.run_dir / name, record, files=files)
    if cache_bytes is not None:
        try:
            write_cache(registry.run_dir, cache_bytes)
        except OSError as exc:  # the version stands; the next request computes its rows
            logger.warning("%s is written but the curvature cache is not (%s)", name, exc)
    try:
        registry.append_ledger(
            {
                "time": record["created"],
                "action": "apply",
                "version": name,
                "parent": parent,
                "events": [e.id for e in work.todo],
                "skipped": [s["id"] for s in result.skipped],
                "removed": result.removed,
                "modified": result.modified,
            }
        )
    except OSError as exc:  # the version is complete and current; the next writer recovers the ledger line
        logger.warning("%s is written but its ledger line is not (%s); it will be recovered", name, exc)
    result.version = name
    return result


def _retrain_encoder(
    registry: Registry, parent: str, events: list[Event], work: _Computed, say: Say
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Retrain the item encoder without ``events`` (every event in effect), swap it into the
    updated model, and return its manifest entry and files (rec_eraser.workflows.item_encoder).
    The entry holds the edited instances' losses again, read through the new encoder: the
    version's own figures (the request's ``after`` losses were read through the old one)."""
    started = time.perf_counter()
    old = version_item_encoder(registry.run_dir, registry.record(parent))
    say(f"retraining the item encoder without the {len(events)} events in effect")
    new, histories, trained = retrain_item_encoder(registry.run_dir, events, old)
    alignment = swap_item_encoder(work.loaded.model, old, new, histories)
    plan = work.plan
    removed, corrected = [plan.before[i] for i in plan.removed], [plan.after[i] for i in plan.modified]
    after = {
        "forgotten_loss": float(instance_losses(work.loaded, removed).mean()) if removed else None,
        "corrected_loss": float(instance_losses(work.loaded, corrected).mean()) if corrected else None,
    }
    entry = {
        "events": len(events),
        **trained,
        "alignment": alignment,
        "after": after,
        "seconds": time.perf_counter() - started,
    }
    return entry, encoder_files(new)


def preview_update(
    run_dir: Path | str,
    events: Sequence[Event],
    solver: SolverConfig | None = None,
    damping: float | None = None,
    say: Say | None = None,
    calibrate: Calibrate | None = DEFAULT_CALIBRATION,
    memorisation: MemorisationGap | None = None,
    parent: str | None = None,
    strict: bool = False,
    cache: CacheSettings = DEFAULT_CACHE,
) -> tuple[LoadedModel | None, ApplyResult]:
    """What :func:`apply_events` would do to ``parent`` (the current version by default),
    computed in memory: that version's model holding the update (``None`` when no training
    instance would change) and the result (``version`` is None). No version, ledger line,
    gap or curvature cache is written for it (the cache is read as ``apply_events`` would); it takes the run's lock like a write (so it waits for no one and
    refuses while another job writes), and, as every writer does, first tidies what an
    interrupted writer left (stale staging folders, a missing ledger line). For comparing
    update settings on one run without adding versions. Raises what ``apply_events`` raises."""
    registry = Registry(run_dir)
    t0 = time.perf_counter()
    with registry.writing():  # the same snapshot a write would see
        work = _compute(
            registry,
            [(None, e) for e in events],
            solver,
            damping,
            say or (lambda _m: None),
            None,
            calibrate,
            memorisation,
            parent,
            strict,
            cache,
        )
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
    new_cache: CurvatureCache | None = None


def _compute(
    registry: Registry,
    events: Sequence[tuple[int | None, Event]],
    solver: SolverConfig | None,
    damping: float | None,
    say: Say,
    on_gradient: Callable[[int], None] | None,
    calibrate: Calibrate | None,
    memorisation: MemorisationGap | None,
    parent: str | None = None,
    strict: bool = False,
    cache: CacheSettings | None = None,
) -> _Computed:
    """Check ``events`` against ``parent`` (the current version by default), plan their edits and
    compute the update in memory (apply_events' docstring; ``strict``: refuse all on a bad one)."""
    run_dir = registry.run_dir
    parent = parent or registry.current()
    result = ApplyResult(run=str(run_dir), parent=parent)
    in_effect = registry.applied_event_records(parent)
    manifest = load_manifest(run_dir)
    ctx = PromptContext.of_run(run_dir)
    say("reading the run")
    train_split = load_instances(run_dir, "train")  # read once: the base of the training set and part of the index
    training_set = registry.training_set(parent, train_split)
    index = _run_index(run_dir, manifest["task"], training_set, train_split, ctx)
    todo: list[Event] = []
    for line, event in events:
        first = next((e for e in todo if e.id == event.id), None)
        if first is not None:
            if not event.same_request(first.to_dict()):
                result.problems.append(
                    EventProblem(
                        line or 0, f"event id {event.id!r} names two different events in this request", event.id
                    )
                )
            continue  # the same event given twice in one call
        if event.id in in_effect:
            applied_in, applied_as = in_effect[event.id]
            if not event.same_request(applied_as):  # an id names one event: never skip a different request as done
                result.problems.append(
                    EventProblem(
                        line or 0,
                        f"event id {event.id!r} was applied in {applied_in} as {json.dumps(applied_as, sort_keys=True)}, "
                        f"and this event is {json.dumps(event.to_dict(), sort_keys=True)}: give it an id of its own",
                        event.id,
                    )
                )
                continue
            result.skipped.append({"id": event.id, "applied_in": applied_in})
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
    new_cache = None
    if plan.changed:
        say(f"solving for {len(plan.changed)} edited instances of {len(training_set)}")
        gauge = None
        solver = solver or DEFAULT_SOLVER
        lineage = registry.lineage(parent)
        if calibrate is not None and solver.method == "fisher":
            lineage_edits = set(registry.edited(parent))
            # the quantile target reads the gap's samples' losses: a gap without them (given, or recorded
            # before they were kept) gives way to one recorded with them, else to a new measurement
            needs_losses = calibrate.target == "quantile"
            gap = checked_gap(memorisation, lineage, calibrate)
            if gap is None or (needs_losses and not gap.has_losses):
                gap = recorded_memorisation(lineage, calibrate.reference_size, calibrate.seed, with_losses=needs_losses)
            measured_now = 0.0
            if gap is None:
                say(f"measuring {parent}'s memorisation gap (once per lineage)")
                gap = version_memorisation(registry, parent, loaded, train_split, calibrate)
                measured_now = gap.seconds if gap is not None else 0.0
            gauge = Gauge(gap, measured_now, set(plan.changed) | lineage_edits)
        request = None if cache is None else CacheRequest(run_dir, lineage, cache)
        solution, metrics, new_cache = solve_update(
            loaded, training_set, plan, solver, damping, on_gradient, calibrate, gauge, request
        )
        result.solver, result.metrics = solution.report.to_dict(), metrics
        cost = request_cost({"solver": result.solver, "metrics": result.metrics})
        if cost is not None:
            result.metrics["cost"] = cost
        if (
            gauge is not None and gauge.gap is not None
        ):  # this request's retained change plus its lineage's, against the gap
            drift = drift_check([{"kind": "unlearned", "metrics": result.metrics}, *lineage], gauge.gap.gap)
            result.metrics["drift"] = drift
            if drift["trusted"] is False:
                logger.warning(
                    "the lineage's retained drift %.3g has reached the memorisation gap %.3g: retrain before trusting "
                    "further approximate updates",
                    drift["retained_drift"],
                    gauge.gap.gap,
                )
    return _Computed(result, todo, plan, loaded, manifest, new_cache)


def _run_index(run_dir: Path | str, task: str, training_set: list, train_split: list, ctx: PromptContext) -> RunIndex:
    """What events are checked against: every user's interactions in any split, and the run's items."""
    return RunIndex.build(
        task, [training_set, train_split, *(load_instances(run_dir, s) for s in ("valid", "test"))], dict(ctx.titles)
    )


def validate_events(run_dir: Path | str, events: Sequence[Event]) -> list[EventProblem]:
    """The problems ``apply_events`` would report for ``events`` against the current version, without applying anything."""
    registry = Registry(run_dir)
    train_split = load_instances(run_dir, "train")
    index = _run_index(
        run_dir,
        load_manifest(run_dir)["task"],
        registry.training_set(registry.current(), train_split),
        train_split,
        PromptContext.of_run(run_dir),
    )
    problems = []
    for event in events:
        try:
            index.validate(event)
        except EventError as exc:
            problems.append(EventProblem(0, str(exc), event.id))
    return problems
