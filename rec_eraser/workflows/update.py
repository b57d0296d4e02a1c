"""One update of an adapter: the solve of a request's edits, its damping calibrated on the
adapter's memorisation gap, and the figures recorded with it (losses before and after, the
trust check, the retained instances' change).

:mod:`rec_eraser.workflows.unlearn` turns events into a plan of edits under the run's lock and
writes the version; this module computes the update the plan asks for, in memory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rec_eraser.core import InfluenceEngine, Removal, Replacement, SolverConfig, Update
from rec_eraser.core.calibration import CalibrationConfig, edit_coefficients, quantile_moves
from rec_eraser.core.edits import new_samples, old_samples
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.model import RecModel, rec_loss
from rec_eraser.training.scoring import instance_losses
from rec_eraser.workflows.calibration import EditedLossObjective, MemorisationGap, trained_reference
from rec_eraser.workflows.curvature_cache import CacheRequest, CurvatureCache, cached_fisher, instance_key

#: The workflows' default solver: the damped empirical Fisher of a 64-instance sub-sample
#: (always holding the edited instances), solved exactly. It costs one gradient per
#: sub-sample instance and no HVP; see ``rec_eraser.core.fisher`` for why.
DEFAULT_SOLVER = SolverConfig(method="fisher", sample_size=64, batch_size=4)


#: What the damping is matched on (``Calibrate.target``):
#: - "reference" (the default): the unedited rows of the update's Fisher sample, each whole
#:   user's removed alone, are predicted (first order) to move by the gap on average; the edited
#:   instances then move as the influence function predicts at that damping, by more than the gap
#:   when they were memorised more than average and by less when less (``reference_factor``; no
#:   pass at all). Chosen over "edited" on the TALLRec IR medium experiment with held-out users,
#:   by a rule fixed before that run (docs/fidelity.md);
#: - "edited": the edited instances' measured loss move equals the memorisation gap (a search
#:   over the damping, each trial a forward pass over them); the default before;
#: - "quantile": each edited instance's own target move, its loss carried to the same quantile
#:   of the other population (``core.calibration.quantile_moves``: a removed or replaced form from
#:   the trained reference losses to the never-trained ones, a corrected form back), and the
#:   damping at which the influence function predicts the edited rows' total move to equal the
#:   sum of those targets (``core.calibration.move_factor``; no pass). It needs the reference
#:   samples' losses, which gaps recorded before them lack (then measured once again).
CALIBRATION_TARGETS = ("reference", "edited", "quantile")


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
    target: str = "reference"

    def __post_init__(self) -> None:
        if self.target not in CALIBRATION_TARGETS:
            raise ValueError(
                f"unknown calibration target {self.target!r}; expected one of {', '.join(CALIBRATION_TARGETS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "search": self.search.to_dict(),
            "reference_size": self.reference_size,
            "max_edited": self.max_edited,
            "seed": self.seed,
            "target": self.target,
        }

    def matches(self, recorded: dict[str, Any] | None) -> bool:
        """Whether a version's recorded settings are these (a record from before ``target`` existed was "edited")."""
        return recorded is not None and {"target": "edited", **recorded} == self.to_dict()


#: The workflows' default: calibrate the fisher update's damping (``None`` keeps the fixed rule).
DEFAULT_CALIBRATION = Calibrate()


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


@dataclass(frozen=True)
class Gauge:
    """What a calibrated request knows before its solve: the gap (None: too few reference
    instances), the seconds this request spent measuring it, and the ids of every instance
    edited by its lineage or by itself (kept out of the retained check)."""

    gap: MemorisationGap | None
    seconds: float
    edited_ids: set[str]


def _retained_rows(
    fisher: Any,
    encoded: dict[str, Any],
    training_set: list,
    edited_ids: set[str],
    calibrate: Calibrate,
    losses: Callable[[Sequence], np.ndarray],
) -> tuple[list, np.ndarray, list[int]]:
    """Unedited training instances of the Fisher's sample (up to ``reference_size``), their current
    losses (those of its per-instance passes: no second forward; or one forward each when its
    rows came from batched passes) and their rows in the Fisher. The retained-loss check before
    and after the update, and the reference of the "reference" calibration. When the request
    edits (nearly) the whole sample, a seeded draw of other training instances (one forward
    each) with no rows."""
    instance_of = {id(encoded[z.id]): z for z in training_set}
    rows = [
        (i, instance_of[id(s)])
        for i, s in enumerate(fisher.samples)
        if id(s) in instance_of and instance_of[id(s)].id not in edited_ids
    ]
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


def _reference_calibration(
    engine: InfluenceEngine,
    fisher: Any,
    edits: list,
    retained: list,
    rows: list[int],
    gap: float,
    calibrate: Calibrate,
    removed_before: np.ndarray,
    corrected_before: np.ndarray,
    training_set: list,
) -> tuple[dict[str, Any], dict[str, float | None], Any]:
    """The "reference" target: the damping factor at which the retained rows, each whole user's
    removed alone (``whole_groups``), are predicted to move by ``gap`` on average
    (``reference_factor``, with how many rows and users, how the Fisher's rows were weighted, and
    its seconds), the edited groups' mean losses after the update that it predicts to first
    order, and the Fisher to solve with (``InfluenceEngine.match_reference``: ``row_weights``
    "auto" may have weighted it)."""
    t0 = time.perf_counter()
    chosen, spectrum, whole, fisher = engine.match_reference(
        fisher, rows, [z.user for z in retained], Counter(z.user for z in training_set), gap, calibrate.search
    )
    n = len(engine.train_samples)
    row_of = {id(z): i for i, z in enumerate(fisher.samples)}
    news = new_samples(edits)
    removed_olds = [e.sample for e in edits if isinstance(e, Removal)]
    rhs = edit_coefficients(fisher, edits)  # b = Gᵀ rhs / n

    def predicted_mean_change(group: list) -> float | None:
        if not group:
            return None
        e = torch.zeros(fisher.size, dtype=torch.float64)
        e[[row_of[id(z)] for z in group]] = 1.0
        return spectrum.bilinear(e, rhs, chosen.factor) / n / len(group)

    removed_change, corrected_change = predicted_mean_change(removed_olds), predicted_mean_change(news)
    targets = {
        "removed_loss": None if removed_change is None else float(removed_before.mean() + removed_change),
        "corrected_loss": None if corrected_change is None else float(corrected_before.mean() + corrected_change),
    }
    return (
        {
            **chosen.to_dict(),
            "users": chosen.groups,
            "whole_users": whole,
            "row_weights": fisher.weighting,
            "seconds": time.perf_counter() - t0,
        },
        targets,
        fisher,
    )


def on_which_fisher(reference: dict[str, Any]) -> str:
    """The words a report appends to a reference match (``_reference_calibration``'s record):
    which Fisher it was made on, where that is not the uniform (1/m per row) one."""
    return " on the inclusion-weighted Fisher" if reference.get("row_weights") == "inclusion" else ""


def _quantile_calibration(
    engine: InfluenceEngine,
    fisher: Any,
    edits: list,
    gap: MemorisationGap,
    calibrate: Calibrate,
    before: dict[str, np.ndarray],
) -> tuple[dict[str, Any], dict[str, float | None]] | None:
    """The "quantile" target (:data:`CALIBRATION_TARGETS`): the damping factor at which the
    edited rows' predicted total move equals the sum of their quantile targets, and the groups'
    target mean losses; None when that sum is not positive (nothing to move: the caller takes
    the smallest step). ``before``: the current losses of the removed instances, the corrected
    forms and their old forms."""
    t0 = time.perf_counter()
    trained, untrained = gap.trained_losses, gap.untrained_losses
    up_removed = quantile_moves(before["removed"], trained, untrained)
    up_old = quantile_moves(before["corrected_old"], trained, untrained)
    down_corrected = -quantile_moves(before["corrected"], untrained, trained)
    total = float(up_removed.sum() + up_old.sum() + down_corrected.sum())
    if not total > 0:
        return None
    rows = len(old_samples(edits)) + len(new_samples(edits))
    chosen = engine.match_edits(fisher, edits, total / rows, calibrate.search)
    targets = {
        "removed_loss": _mean(before["removed"] + up_removed),
        "corrected_loss": _mean(before["corrected"] - down_corrected),
    }
    return {**chosen.to_dict(), "total_target_move": total, "seconds": time.perf_counter() - t0}, targets


def encoded_edits(
    training_set: Sequence[Instance],
    new_forms: dict[str, Instance | None],
    tokenizer: Any,
    item_index: dict[str, int] | None,
    max_length: int,
) -> tuple[dict[str, Any], list[Removal | Replacement]]:
    """The encoded training set (by id) and the engine's edits: each id of ``new_forms`` removed
    (``None``) or replaced by its new form, in ``new_forms``' order. The one translation from
    instances to the engine's edits, shared by the workflow, the benchmark and
    :func:`influence_update`."""
    encoded = {z.id: encode_instance(z, tokenizer, item_index, max_length) for z in training_set}
    unknown = [i for i in new_forms if i not in encoded]
    if unknown:
        raise ValueError(f"instance {unknown[0]!r} is not in the training set, so it cannot be removed or corrected")
    edits: list[Removal | Replacement] = [
        Removal(encoded[i])
        if new is None
        else Replacement(encoded[i], encode_instance(new, tokenizer, item_index, max_length))
        for i, new in new_forms.items()
    ]
    return encoded, edits


def sample_keys(
    encoded: dict[str, Any],
    training_set: Sequence[Instance],
    edits: Sequence[Removal | Replacement],
    new_forms: dict[str, Instance | None],
) -> dict[int, str]:
    """:func:`~rec_eraser.workflows.curvature_cache.instance_key` by ``id`` of each encoded sample (the
    training set's and the corrected forms', ``edits`` in ``new_forms``' order): the engine's
    ``sample_key``, which draws the curvature sample by a seeded hash of each instance, so that
    it stays drawn while others leave (what the curvature cache reuses)."""
    key_of = {id(encoded[z.id]): instance_key(z) for z in training_set}
    key_of.update(
        {id(e.new): instance_key(new) for e, new in zip(edits, new_forms.values()) if isinstance(e, Replacement)}
    )
    return key_of


def influence_update(
    model: Any,
    tokenizer: Any,
    training_set: Sequence[Instance],
    removed: Sequence[Instance] = (),
    corrected: Sequence[Instance] = (),
    *,
    solver: SolverConfig = DEFAULT_SOLVER,
    damping: float | None = None,
    max_length: int = 512,
) -> Update:
    """The influence update of a model for removing and correcting training instances, with no run folder.

    Args:
        model: the causal LM with its (trainable) LoRA adapter, e.g. a ``peft`` model, or a
            :class:`~rec_eraser.training.model.RecModel`.
        tokenizer: its tokenizer.
        training_set: the instances the adapter was trained on (the curvature's sample is drawn
            from them; ``n`` is their number).
        removed: instances of ``training_set`` to forget.
        corrected: the new forms of instances of ``training_set`` (matched by id).
        solver, damping: as for the engine; the default is the workflows' (``fisher``, the
            damping rule; no calibration, which needs a run's never-trained instances).

    Returns:
        The :class:`~rec_eraser.core.Update` (Δθ by parameter name of ``model``, and its report);
        ``update.apply(model)`` applies it in place. Prompts with item-embedding tokens (LLaRA)
        need the run's item encoder: use :class:`rec_eraser.Run` for those.
    """
    new_forms: dict[str, Instance | None] = {z.id: None for z in removed}
    new_forms.update({z.id: z for z in corrected})
    if not new_forms:
        raise ValueError("nothing to remove or correct")
    wrapped = model if isinstance(model, RecModel) else RecModel(model)
    encoded, edits = encoded_edits(training_set, new_forms, tokenizer, None, max_length)
    engine = InfluenceEngine(
        wrapped, rec_loss(), list(encoded.values()), collate, curvature="ggn", damping=damping, solver=solver
    )
    key_of = sample_keys(encoded, training_set, edits, new_forms)
    engine.sample_key = lambda z: key_of[id(z)]  # the workflows' draw, so that both give one update
    update = engine.compute(edits)
    if wrapped is not model:  # named as the caller's model's parameters, not the wrapper's
        update = Update(delta={name.removeprefix("lm."): d for name, d in update.delta.items()}, report=update.report)
    return update


def solve_update(
    loaded: Any,
    training_set: list,
    plan: Any,
    solver: SolverConfig,
    damping: float | None,
    on_gradient: Callable[[int], None] | None,
    calibrate: Calibrate | None = None,
    gauge: Gauge | None = None,
    cache: CacheRequest | None = None,
) -> tuple[Any, dict[str, Any], CurvatureCache | None]:
    """Compute and apply the update in place; return it with losses before and after, and the
    curvature cache to write once the version is (with ``cache`` and the ``fisher`` solver:
    :mod:`rec_eraser.workflows.curvature_cache`; its report is the metrics' ``curvature_cache``).

    With ``gauge`` (the memorisation gap and what measuring it cost this request), the damping
    is calibrated on that gap; the metrics then hold the gap, the targets, the retained
    instances' loss change (the unedited instances of the Fisher's sample, whose losses its
    gradient passes measured already) and the trust check (the first-order prediction of the
    edited losses' change against the measured one).
    """
    encoded, edits = encoded_edits(
        training_set,
        {i: plan.after[i] for i in plan.changed},
        loaded.tokenizer,
        loaded.item_index,
        loaded.recipe.max_length,
    )
    removed = [plan.before[i] for i in plan.removed]
    corrected = [plan.after[i] for i in plan.modified]
    corrected_old = [plan.before[i] for i in plan.modified]

    def losses(instances: Sequence) -> np.ndarray:
        return instance_losses(loaded, instances)

    removed_before, corrected_before, corrected_old_before = losses(removed), losses(corrected), losses(corrected_old)
    before = {"forgotten_loss": _mean(removed_before), "corrected_loss": _mean(corrected_before)}
    engine = InfluenceEngine(
        loaded.model, rec_loss(), list(encoded.values()), collate, curvature="ggn", damping=damping, solver=solver
    )
    engine.on_gradient = on_gradient
    objective, calibration, retained, retained_before, fisher, damping_factor = None, {}, [], None, None, None
    cache_report, new_cache = None, None
    key_of = sample_keys(encoded, training_set, edits, {i: plan.after[i] for i in plan.changed})
    engine.sample_key = lambda z: key_of[id(z)]
    if cache is not None and solver.method == "fisher":
        fisher, cache_report, new_cache = cached_fisher(
            engine, edits, key_of, cache.run_dir, cache.lineage, cache.settings
        )
        for i in plan.changed:  # the old forms leave the training set
            new_cache.rows.pop(instance_key(plan.before[i]), None)
    if gauge is not None and calibrate is not None:
        fisher = fisher or engine.empirical_fisher(edits)  # its seconds count in the solve's
        retained, retained_before, rows = _retained_rows(
            fisher, encoded, training_set, gauge.edited_ids, calibrate, losses
        )
        calibration["reference_seconds"] = gauge.seconds  # part of the request's cost (0 when reused)
        calibration["target"] = calibrate.target
        gap = gauge.gap
        if gap is None:
            calibration["note"] = "too few reference instances to measure the memorisation gap: the starting damping"
        else:
            calibration["memorisation_gap"] = gap.to_dict()
            if gap.gap > 0 and calibrate.target == "reference" and not rows:  # falls through to the edited target below
                calibration["note"] = (
                    "the request edits the whole Fisher sample: no reference rows, the edited instances' target"
                )
            if calibrate.target == "quantile" and gap.gap > 0:
                if not gap.has_losses:
                    raise ValueError("the quantile target needs the reference samples' losses; this gap has none")
                quantile = _quantile_calibration(
                    engine,
                    fisher,
                    edits,
                    gap,
                    calibrate,
                    {"removed": removed_before, "corrected": corrected_before, "corrected_old": corrected_old_before},
                )
                if quantile is None:
                    calibration["note"] = "the quantile targets ask for no move: the smallest step of the search range"
                    damping_factor = calibrate.search.max_factor
                else:
                    calibration["quantile"], calibration["targets"] = quantile
                    damping_factor = calibration["quantile"]["factor"]
            elif gap.gap > 0 and calibrate.target == "reference" and rows:
                calibration["reference"], calibration["targets"], fisher = _reference_calibration(
                    engine,
                    fisher,
                    edits,
                    retained,
                    rows,
                    gap.gap,
                    calibrate,
                    removed_before,
                    corrected_before,
                    training_set,
                )
                damping_factor = calibration["reference"]["factor"]
            elif gap.gap > 0:
                rng = np.random.default_rng(calibrate.seed)
                cap = calibrate.max_edited
                # at most ``cap`` of each group, with the losses measured above (no second pass)
                pick = lambda n: np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))  # noqa: E731
                r, c = pick(len(removed)), pick(len(corrected))
                objective = EditedLossObjective(
                    losses,
                    [removed[j] for j in r],
                    [corrected[j] for j in c],
                    gap.gap,
                    removed_before=removed_before[r],
                    corrected_before=corrected_before[c],
                )
                calibration["targets"] = objective.targets()
            else:
                calibration["note"] = "no memorisation measured (gap <= 0): the smallest step of the search range"
    if damping_factor is not None:
        update = engine.compute(edits, damping_factor=damping_factor, fisher=fisher)
    elif objective is None and calibration.get("memorisation_gap", {}).get("gap", 1.0) <= 0:
        update = engine.compute(edits, damping_factor=calibrate.search.max_factor, fisher=fisher)
    else:
        update = engine.compute(
            edits, objective=objective, calibration=calibrate.search if objective is not None else None, fisher=fisher
        )
    if cache_report is not None:  # the probes are this request's work; the rows it reused are not
        update.report.reused_rows = cache_report["reused"]
        update.report.gradient_passes += cache_report["probes"]
        update.report.seconds += cache_report["seconds"]
    update.apply(loaded.model)
    removed_after, corrected_after, corrected_old_after = losses(removed), losses(corrected), losses(corrected_old)
    after = {"forgotten_loss": _mean(removed_after), "corrected_loss": _mean(corrected_after)}
    metrics: dict[str, Any] = {"before": before, "after": after}
    if calibration:
        measured = float(
            (removed_after - removed_before).sum()
            + (corrected_old_after - corrected_old_before).sum()
            - (corrected_after - corrected_before).sum()
        )
        predicted = update.report.predicted_change
        calibration["trust"] = {
            "predicted_change": predicted,
            "measured_change": measured,
            "ratio": measured / predicted if predicted else None,
        }
        if len(retained):
            calibration["retained_loss"] = {
                "before": float(retained_before.mean()),
                "after": float(losses(retained).mean()),
                "instances": len(retained),
            }
        calibration["settings"] = calibrate.to_dict()
        metrics["calibration"] = calibration
    if cache_report is not None:
        metrics["curvature_cache"] = cache_report
    # forgotten_loss should rise (toward the loss of unseen instances); corrected_loss (the
    # loss of the corrected instances' new form) should fall
    return update, metrics, new_cache


def update_seconds(record: dict[str, Any]) -> float:
    """A request's own work, from its record (``solver``, ``metrics``): the solve (its calibration
    trials included), the "reference" or "quantile" target's matching when it ran, plus measuring the
    memorisation gap when this request did (once per lineage; a reused gap costs nothing), plus
    serialising the curvature cache for the next request."""
    metrics = record.get("metrics") or {}
    cal = metrics.get("calibration") or {}
    matching = (cal.get("reference") or {}).get("seconds", 0.0) + (cal.get("quantile") or {}).get("seconds", 0.0)
    # the curvature cache's reading and probes are in the solver's seconds; serialising it for the next request is not
    cache_write = (metrics.get("curvature_cache") or {}).get("write_seconds", 0.0)
    return (
        float(record["solver"]["seconds"])
        + float(cal.get("reference_seconds", 0.0))
        + float(matching)
        + float(cache_write)
    )


def request_cost(record: dict[str, Any]) -> dict[str, Any] | None:
    """A request's cost beside its physical floor, from its record (``solver``, ``metrics``).

    Any update must at least compute the gradients of its edited instances, old and new forms:
    that is the floor (``floor_rows`` gradients, ``floor_seconds`` at the solve's own measured
    seconds per gradient row). ``rows_computed`` are the Fisher rows this request computed (the
    floor's and the cache's probes among them), ``rows_reused`` those it took from the curvature cache. None for a solver
    that reports no floor (the Gauss–Newton methods)."""
    solver = record.get("solver") or {}
    floor = solver.get("floor_seconds")
    if not floor:
        return None
    seconds = update_seconds(record)
    return {
        "update_seconds": seconds,
        "rows_computed": solver.get("curvature_samples", 0) - solver.get("reused_rows", 0),
        "rows_reused": solver.get("reused_rows", 0),
        "floor_rows": solver.get("floor_rows"),
        "floor_seconds": floor,
        "ratio_to_floor": seconds / floor,
    }
