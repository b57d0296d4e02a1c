"""The paper's experiments as recipe files: which data, which corruption, which events.

A benchmark recipe (``recipes/ml100k-<task>-<edit>.toml``) holds a training recipe
(``[lora]``, ``[train]``, ``[model]``) and an ``[experiment]`` section; ``[quick]`` and
``[medium]`` override settings of either for ``--tier quick`` / ``--tier medium``::

    [experiment]
    dataset = "ml-100k"     # or lastfm / steam / a folder (see rec_eraser.data)
    task = "tallrec"        # or "llara"
    edit = "ir"             # ir | qm | rc
    fraction = 0.05         # ir: of the trained users; qm: of all users; rc: of training targets

The three edits (LLMEraser's settings):

- ``ir``: delete ``fraction`` of the users of the trained adapter (``delete_user`` events).
- ``qm``: ``fraction`` of the users get ``injected`` random items inserted into their
  training histories; the adapter is trained on that data; the correction removes them
  (``remove_interactions`` events).
- ``rc``: ``fraction`` of the training targets are corrupted (TALLRec: the rating flipped
  across the like threshold; LLaRA: the item replaced by a random one); the adapter is
  trained on that; the correction restores them (``correct_label`` / ``correct_target``).

Corruptions are drawn with the experiment's seed, applied to the loaded interactions before
instances are built (so the corrupted run is an ordinary run), and recorded in the run's
manifest; the events that undo them are derived from that record.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.data import Dataset
from rec_eraser.data.dataset import Interaction
from rec_eraser.data.split import chronological
from rec_eraser.errors import RecEraserError
from rec_eraser.tasks.prompt_registry import prompts_of, task_names
from rec_eraser.training.recipe import (
    SECTION_OF,
    Recipe,
    RecipeError,
    check_types,
    find_recipe,
    read_toml,
    recipe_from_sections,
    settings_from_dict,
)
from rec_eraser.workflows.events import Event


class ExperimentError(RecEraserError, ValueError):
    """A benchmark experiment that cannot run as asked: methods that do not fit its edit, a run
    folder of another experiment, too few users for the batches requested, and the like."""


EDITS = ("ir", "qm", "rc")


@dataclass(frozen=True)
class Experiment:
    """The ``[experiment]`` section. See the module docstring for ``edit`` and ``fraction``."""

    dataset: str = "ml-100k"
    task: str = "tallrec"
    edit: str = "ir"
    fraction: float = 0.05
    injected: int = 2  # qm: random items inserted into each chosen user's history
    max_users: int | None = None  # keep the dataset's first N users (size control)
    eval_prompts: int = 200  # test prompts every method is evaluated on
    generate: bool = False  # llara: also greedy generation (ValidRatio); ranking always
    seed: int = 0  # corruption, event choice, SISA shards
    # ir only: seeds which users are deleted in place of `seed`. It is not a data setting, so a
    # run folder (its data, v0000) is reused and one adapter is judged on several forget sets.
    forget_seed: int | None = None
    retrain_seeds: tuple[int, ...] = (0, 1)
    sample_size: int = 64  # rec_eraser: curvature sub-sample
    retained_floor: float = 0.5  # rec_eraser: its unedited share, at least (SolverConfig.retained_floor)
    solver_batch_size: int = 4
    sqp_hvp_budget: int = 200
    hvp_sample_size: int = 32  # rec_eraser_sqp and reference_recipe: curvature sub-sample (HVPs cost per instance)
    sisa_shards: int = 4
    baseline_steps: int = 10
    baseline_lr: float = 1e-4
    retain_sample: int = 64  # graddiff: retained instances it descends on
    methods: tuple[str, ...] | None = None  # the default method set of `bench` at this tier (None: every method)

    def __post_init__(self) -> None:
        check_types(self, "recipe", {f.name: "experiment" for f in dataclasses.fields(self)})
        if self.edit not in EDITS:
            raise RecipeError(f"recipe: [experiment] edit must be one of {', '.join(EDITS)}, got {self.edit!r}")
        if self.task not in task_names():
            raise RecipeError(f"recipe: [experiment] task must be one of {', '.join(task_names())}, got {self.task!r}")
        if not 0 < self.fraction < 1:
            raise RecipeError(f"recipe: [experiment] fraction must be in (0, 1), got {self.fraction}")
        if len(set(self.retrain_seeds)) < 2 or len(set(self.retrain_seeds)) != len(self.retrain_seeds):
            raise RecipeError(
                "recipe: [experiment] retrain_seeds needs at least two distinct seeds (Retrain's seed-to-seed spread is the noise floor)"
            )
        if not 0.0 <= self.retained_floor <= 1.0:
            raise RecipeError(f"recipe: [experiment] retained_floor must be in [0, 1], got {self.retained_floor}")
        if not self.baseline_lr > 0:
            raise RecipeError(f"recipe: [experiment] baseline_lr must be > 0, got {self.baseline_lr}")
        if self.methods is not None and not self.methods:
            raise RecipeError(
                "recipe: [experiment] methods must name at least one method (leave it out for every method)"
            )
        known = _benchmark_methods() if self.methods else ()
        unknown = [m for m in self.methods or () if m not in known]
        if unknown:
            raise RecipeError(
                f"recipe: [experiment] methods: unknown method {unknown[0]!r} in methods; choose from {', '.join(known)}"
                f"{renamed_hint(unknown[0])}"
            )
        if self.forget_seed is not None and self.edit != "ir":
            raise RecipeError(
                f"recipe: [experiment] forget_seed applies to the ir edit only (the {self.edit} events undo "
                "the recorded corruption, which `seed` draws)"
            )
        if self.max_users is not None and self.max_users < 1:
            raise RecipeError(f"recipe: [experiment] max_users must be >= 1, got {self.max_users}")
        for name in (
            "injected",
            "eval_prompts",
            "sample_size",
            "solver_batch_size",
            "sqp_hvp_budget",
            "hvp_sample_size",
            "sisa_shards",
            "baseline_steps",
            "retain_sample",
        ):
            if getattr(self, name) < 1:
                raise RecipeError(f"recipe: [experiment] {name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["retrain_seeds"] = list(self.retrain_seeds)
        d["methods"] = None if self.methods is None else list(self.methods)
        return d


def _benchmark_methods() -> tuple[str, ...]:
    """The registered benchmark methods, optional ones included. Imported when a recipe names
    methods rather than at import: the registry's runners import this module (for Experiment)."""
    from rec_eraser.workflows.bench_methods import method_names

    return method_names(optional=True)


def _experiment(values: dict[str, Any], source: str) -> Experiment:
    if isinstance(values.get("methods"), str):
        raise RecipeError(
            f'{source}: recipe: [experiment] methods must be a list of method names, e.g. methods = ["retrain", "rec_eraser"]'
        )
    try:
        return settings_from_dict(
            Experiment, values, f"{source}: unknown experiment setting", tuples=("retrain_seeds", "methods")
        )
    except (TypeError, RecipeError) as exc:
        if str(exc).startswith(f"{source}: "):  # the unknown-setting message names the file already
            raise
        raise RecipeError(f"{source}: {exc}") from exc


#: benchmark methods renamed, and what to name instead
RENAMED_METHODS = {
    "rec_eraser_reference": "the reference target is the default now, so it is the rec_eraser row; "
    "the other target is rec_eraser_edited",
    "rec_eraser_auto": "row weights auto are the default now, so it is the rec_eraser row; "
    "the former uniform default is rec_eraser_uniform",
}


def renamed_hint(name: str) -> str:
    return f" ({name} was renamed: {RENAMED_METHODS[name]})" if name in RENAMED_METHODS else ""


#: the sizes a benchmark recipe can run at: ``full`` is the recipe's own settings; ``quick`` and
#: ``medium`` override some of them from the recipe's ``[quick]`` / ``[medium]`` section
TIERS = ("quick", "medium", "full")


def load_experiment(path_or_name: Path | str, tier: str = "full") -> tuple[Experiment, Recipe]:
    """Read a benchmark recipe (a path, or a shipped recipe's name) at ``tier``: its ``[quick]``
    or ``[medium]`` settings override the others."""
    if tier not in TIERS:
        raise RecipeError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
    path = find_recipe(path_or_name)
    raw = read_toml(path)
    experiment_values = raw.pop("experiment", None)
    if not isinstance(experiment_values, dict):
        raise RecipeError(f"{path}: a benchmark recipe needs an [experiment] section")
    tier_values = {name: raw.pop(name, {}) for name in TIERS if name != "full"}
    overrides = tier_values.get(tier, {})
    if tier != "full" and not overrides:
        raise RecipeError(f"{path}: no [{tier}] section, so there is no {tier} tier")
    experiment_names = {f.name for f in fields(Experiment)}
    to_experiment = {k: v for k, v in overrides.items() if k in experiment_names}
    to_recipe = {k: v for k, v in overrides.items() if k not in experiment_names}
    try:
        experiment = _experiment({**experiment_values, **to_experiment}, str(path))
    except RecipeError as exc:
        raise RecipeError(_named_in_tier(str(exc), {k: "experiment" for k in to_experiment}, tier)) from None
    try:
        recipe = recipe_from_sections(raw, str(path), to_recipe)
    except RecipeError as exc:
        sections = {k: SECTION_OF[k] for k in to_recipe if k in SECTION_OF}
        raise RecipeError(_named_in_tier(str(exc), sections, tier)) from None
    unnamed = [name for name in ("task", "edit") if name not in experiment_values]
    if unnamed:  # a base for benchmark recipes to extend (base-ml100k-*.toml), or a recipe leaning on code defaults
        raise RecipeError(
            f"{path}: [experiment] names no {' and no '.join(unnamed)}, so it is not a benchmark "
            "(a base recipe is extended, not run)"
        )
    return experiment, recipe


def _named_in_tier(message: str, sections: dict[str, str], tier: str) -> str:
    """``message`` with each setting the tier's section set (``sections``: its name -> the section
    the message names it in, ``[train] max_train``) named where the file sets it: ``[medium] max_train``."""
    for name, section in sections.items():
        message = re.sub(rf"\[{section}\] {re.escape(name)}\b", f"[{tier}] {name}", message, count=1)
    return message


# -- corruptions --------------------------------------------------------------------------
def _train_positions(seq: list[Interaction]) -> range:
    """Positions that are training targets with a history (leave-last-out keeps the last two)."""
    return range(1, max(1, len(seq) - 2))


def inject_items(dataset: Dataset, fraction: float, per_user: int, seed: int) -> tuple[Dataset, dict[str, Any]]:
    """QM: insert ``per_user`` random unseen items into the training span of ``fraction`` of the users.

    Each injected interaction gets a timestamp strictly before the user's valid target (so
    it lands in the training part of the sequence), a new line number after the file's
    last, and a rating drawn from the user's own (for TALLRec). Injected items are drawn
    from the dataset's items (with titles); the run's item encoder is trained on the
    corrupted interactions, as the adapter is. Needs timestamps.
    """
    if any(x.timestamp is None for x in dataset.interactions):
        # without timestamps a sequence is file order, and an injected line (after the file's
        # last) would become the user's test target
        raise RecipeError(f"the qm experiment injects items by timestamp, and dataset {dataset.name!r} has none")
    rng = np.random.default_rng(seed)
    sequences = chronological(dataset.interactions)
    users = [u for u, seq in sequences.items() if len(seq) >= 4 and seq[-2].timestamp - seq[0].timestamp >= 1]
    chosen = [users[i] for i in np.sort(rng.choice(len(users), max(1, round(fraction * len(users))), replace=False))]
    all_items = sorted(dataset.titles) if dataset.titles else dataset.items
    next_line = max(x.line for x in dataset.interactions) + 1
    added, record = [], []
    for user in chosen:
        seq = sequences[user]
        seen = {x.item for x in seq}
        pool = [i for i in all_items if i not in seen]
        for item in rng.choice(pool, per_user, replace=False):
            # strictly before the valid target, at or after the first interaction
            stamp = float(rng.uniform(seq[0].timestamp, seq[-2].timestamp - 0.5))
            rating = None if seq[0].rating is None else float(rng.choice([x.rating for x in seq]))
            added.append(Interaction(user=user, item=str(item), rating=rating, timestamp=stamp, line=next_line))
            record.append({"user": user, "item": str(item), "line": next_line})
            next_line += 1
    return dataclasses.replace(dataset, interactions=dataset.interactions + tuple(added)), {
        "kind": "inject",
        "injected": record,
    }


def corrupt_targets(dataset: Dataset, task: str, fraction: float, seed: int) -> tuple[Dataset, dict[str, Any]]:
    """RC: corrupt ``fraction`` of the training targets, as the task's correction undoes
    (:meth:`~rec_eraser.tasks.base.TaskPrompts.corrupt`: TALLRec flips the label, LLaRA replaces
    the item)."""
    prompts = prompts_of(task)
    if not prompts.corrections:
        raise RecipeError(f"the rc edit needs a task that takes a correction; {task} takes deletions only")
    rng = np.random.default_rng(seed)
    sequences = chronological(dataset.interactions)
    targets = [x for seq in sequences.values() for i in _train_positions(seq) for x in [seq[i]]]
    picked = [
        targets[i] for i in np.sort(rng.choice(len(targets), max(1, round(fraction * len(targets))), replace=False))
    ]
    corrupted, record = prompts.corrupt(dataset, picked, rng)
    interactions = tuple(corrupted.get(x.line, x) for x in dataset.interactions)
    return dataclasses.replace(dataset, interactions=interactions), {"kind": "corrupt_targets", "corrupted": record}


def corruption(experiment: Experiment):
    """The dataset transform of ``experiment`` (None for ``ir``), for :func:`prepare`."""
    if experiment.edit == "qm":
        return lambda d: inject_items(d, experiment.fraction, experiment.injected, experiment.seed)
    if experiment.edit == "rc":
        return lambda d: corrupt_targets(d, experiment.task, experiment.fraction, experiment.seed)
    return None


def experiment_events(
    experiment: Experiment, transform_record: dict[str, Any] | None, trained_users: list[str]
) -> list[Event]:
    """The events of ``experiment``: deletions of a seeded share of ``trained_users`` (ir), or
    the events that undo the recorded corruption (qm, rc)."""
    if experiment.edit == "ir":
        rng = np.random.default_rng(experiment.seed if experiment.forget_seed is None else experiment.forget_seed)
        users = sorted(set(trained_users), key=lambda u: (len(u), u))
        count = max(1, round(experiment.fraction * len(users)))
        return [
            Event(f"bench:delete_user:{users[i]}", "delete_user", users[i])
            for i in np.sort(rng.choice(len(users), count, replace=False))
        ]
    if not transform_record:
        raise RecipeError(f"the {experiment.edit} experiment's run has no corruption record in its manifest")
    if experiment.edit == "qm":
        by_user: dict[str, list[str]] = {}
        for row in transform_record["injected"]:
            by_user.setdefault(row["user"], []).append(row["item"])
        return [
            Event(f"bench:remove_interactions:{u}", "remove_interactions", u, items=tuple(items))
            for u, items in by_user.items()
        ]
    events = []
    for row in transform_record["corrupted"]:
        if "label" in row:
            events.append(
                Event(
                    f"bench:correct_label:{row['line']}",
                    "correct_label",
                    row["user"],
                    item=row["item"],
                    label=row["label"],
                )
            )
        else:
            events.append(
                Event(
                    f"bench:correct_target:{row['line']}",
                    "correct_target",
                    row["user"],
                    item=row["item"],
                    target=row["target"],
                )
            )
    return events
