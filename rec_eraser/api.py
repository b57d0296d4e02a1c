"""The Python API for a notebook: one run folder as an object, and the events that edit it.

    import rec_eraser as rx

    run = rx.Run.prepare("ml-100k", task="tallrec", out="runs/demo", max_users=50)
    run.train()                                   # the shipped recipe demo-tallrec
    result = run.apply([rx.delete_user("42")])    # a new adapter version, calibrated
    run.evaluate(limit=200)

Without a run folder, :func:`influence_update` (from :mod:`rec_eraser.workflows.update`) takes
a ``peft`` model, its training instances and the ones to remove or correct, and returns the
update (``update.apply(model)``).

It sits beside the CLI, above the workflows, and is as thin: every method is one call into
``rec_eraser.workflows``, ``rec_eraser.training`` or ``rec_eraser.evaluation``, with the same
defaults as the matching command. Errors a caller can cause are those of
:data:`rec_eraser.errors.USER_ERRORS` (the project's :class:`~rec_eraser.errors.RecEraserError`,
and ``OSError`` / ``ValueError`` for a folder that exists already, a file that does not, a bad
argument); each message says what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rec_eraser.core import SolverConfig
from rec_eraser.evaluation.evaluate import evaluate_version
from rec_eraser.tasks.prepare import load_manifest, prepare
from rec_eraser.training.train import LoadedModel, load_version, run_recipe, train_run
from rec_eraser.training.versions import resolve_version
from rec_eraser.workflows.audit import audit_user
from rec_eraser.workflows.curvature_cache import DEFAULT_CACHE
from rec_eraser.workflows.erasure import DEFAULT_DEADLINE, erasure_status, parse_duration
from rec_eraser.workflows.events import Event, EventError, request_event
from rec_eraser.workflows.registry import DEFAULT_ROOT, Registry, resolve_run
from rec_eraser.workflows.unlearn import (
    DEFAULT_CALIBRATION,
    ApplyResult,
    apply_events,
    preview_update,
    training_memorisation,
)
from rec_eraser.workflows.update import influence_update

__all__ = ["Run", "correct_label", "correct_target", "delete_user", "influence_update", "remove_interactions"]

#: the ``source`` part of the ids of events made by the functions below
SOURCE = "api"


def delete_user(user: str) -> Event:
    """An account deletion: every training instance built from ``user``'s data is removed."""
    return request_event("delete_user", user, source=SOURCE)


def remove_interactions(user: str, items: Sequence[str]) -> Event:
    """Noisy interactions of ``user`` with ``items``: dropped from every prompt that shows them;
    instances that target them are removed."""
    return request_event("remove_interactions", user, items=items, source=SOURCE)


def correct_label(user: str, item: str, label: str) -> Event:
    """TALLRec: the user's interaction with ``item`` was really liked (``"Yes"``) or not (``"No"``)."""
    return request_event("correct_label", user, item=item, label=label, source=SOURCE)


def correct_target(user: str, item: str, target: str) -> Event:
    """LLaRA: the user's interaction with ``item`` was really with ``target``."""
    return request_event("correct_target", user, item=item, target=target, source=SOURCE)


class Run:
    """A prepared run folder: its data, its adapter versions and its ledger.

    ``Run(path_or_name)`` opens one (a folder, or a name under ``adapters/``);
    :meth:`Run.prepare` makes one from a dataset.
    """

    def __init__(self, path_or_name: str | Path, root: str | Path = DEFAULT_ROOT) -> None:
        self.path = resolve_run(path_or_name, root)
        self._registry = Registry(self.path)

    @classmethod
    def prepare(
        cls,
        dataset: str | Path,
        task: str,
        out: str | Path,
        *,
        seed: int = 0,
        max_users: int | None = None,
        negatives: int = 20,
        max_history: int = 10,
        root: str | Path | None = None,
    ) -> Run:
        """Build ``task``'s instances (``"tallrec"`` or ``"llara"``) from ``dataset`` (a known
        name such as ``"ml-100k"``, or a folder of RecBole atomic files) into the new folder ``out``."""
        prepare(
            dataset, task, out, seed=seed, negatives=negatives, max_history=max_history, max_users=max_users, root=root
        )
        return cls(out)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def task(self) -> str:
        return load_manifest(self.path)["task"]

    @property
    def versions(self) -> list[str]:
        """The adapter versions, oldest first."""
        return self._registry.versions()

    @property
    def current(self) -> str:
        """The version the next request builds on (the newest)."""
        return self._registry.current()

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        """A version's record (default: the current one): events, edits, solver, calibration, cost."""
        return self._registry.manifest(version or self.current)

    def ledger(self) -> list[dict[str, Any]]:
        """Every action on the run, oldest first (the audit trail)."""
        return self._registry.ledger()

    def train(
        self,
        recipe: str | Path | None = None,
        *,
        base_model: str | Path | None = None,
        measure_gap: bool = True,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> str:
        """Train ``v0000``; returns its name. ``recipe``: a file or a shipped recipe's name
        (default ``demo-<task>``); ``base_model``: a local Hugging Face causal-LM folder instead
        of the recipe's; ``measure_gap``: measure the memorisation gap now, as ``rec-eraser train`` does."""
        loaded_recipe = run_recipe(self.path, recipe, base_model)
        measure = training_memorisation(self.path, loaded_recipe) if measure_gap else None
        return train_run(self.path, loaded_recipe, progress=progress, measure=measure).name

    def apply(
        self,
        events: Sequence[Event],
        *,
        calibration_target: str = DEFAULT_CALIBRATION.target,
        calibrate: bool = True,
        solver: SolverConfig | None = None,
        damping: float | None = None,
        say: Callable[[str], None] | None = None,
        reuse_curvature: bool = True,
        item_encoder: str = "keep",
    ) -> ApplyResult:
        """Apply ``events`` to the current version as one update; ``result.version`` is the new
        version (None when every event was applied before). Events that do not fit the run (an
        unknown user or item, the other task's correction) are refused together, before
        anything is written: :class:`EventError` lists them. ``reuse_curvature``: reuse the
        lineage's cached curvature rows when fresh (:mod:`rec_eraser.workflows.curvature_cache`).
        ``item_encoder``: LLaRA, ``"keep"`` the item encoder or ``"retrain"`` it without every
        erased interaction in effect (:mod:`rec_eraser.workflows.item_encoder`)."""
        _check_events(events)
        calibration = replace(DEFAULT_CALIBRATION, target=calibration_target) if calibrate else None
        return apply_events(
            self.path,
            [(None, e) for e in events],
            solver=solver,
            damping=damping,
            say=say,
            calibrate=calibration,
            strict=True,
            cache=replace(DEFAULT_CACHE, enabled=reuse_curvature),
            item_encoder=item_encoder,
        )

    def preview(
        self,
        events: Sequence[Event],
        *,
        calibration_target: str = DEFAULT_CALIBRATION.target,
        solver: SolverConfig | None = None,
        damping: float | None = None,
    ) -> tuple[LoadedModel | None, ApplyResult]:
        """What :meth:`apply` would do, in memory: the updated model (None when nothing would
        change) and the result; no version is written."""
        _check_events(events)
        return preview_update(
            self.path,
            events,
            solver=solver,
            damping=damping,
            calibrate=replace(DEFAULT_CALIBRATION, target=calibration_target),
            strict=True,
        )

    def load(self, version: str | None = None) -> LoadedModel:
        """A version's model (default: the current one) with its tokenizer, ready to score."""
        return load_version(self.path, resolve_version(self.path, version))

    def evaluate(
        self, version: str | None = None, *, split: str = "test", limit: int | None = None, generate: bool = True
    ) -> dict[str, Any]:
        """A version's metrics on ``split`` (its first ``limit`` prompts) beside the task's simple
        baselines; ``generate=False`` skips LLaRA's generation mode (the slower one)."""
        return evaluate_version(self.path, version, split=split, limit=limit, generate=generate)

    def rollback(self, to: str) -> dict[str, Any]:
        """Make ``to`` current again, as a new version (nothing is deleted; the ledger says why)."""
        return self._registry.rollback(to)

    def status(self, deadline: str = DEFAULT_DEADLINE) -> dict[str, Any]:
        """The requests the current version honours only approximately, their ages, and whether
        the oldest is past ``deadline`` (as ``rec-eraser status``; ``overdue`` in the result)."""
        return erasure_status(self._registry, parse_duration(deadline))

    def audit(self, user: str) -> dict[str, Any]:
        """One user's data through the run's versions, with a membership test (as ``rec-eraser audit``)."""
        return audit_user(self.path, user)


def _check_events(events: Sequence[Event]) -> None:
    if isinstance(events, Event) or not events or not all(isinstance(e, Event) for e in events):
        raise EventError("give a non-empty list of events (rx.delete_user(...), rx.remove_interactions(...), ...)")
