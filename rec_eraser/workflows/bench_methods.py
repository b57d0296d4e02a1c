"""The unlearning methods a benchmark measures, one registered runner each.

Every method starts from ``v0000`` and returns an :class:`~rec_eraser.workflows.study.Outcome`
(its test scores, losses and cost); the benchmark runs the registered methods a recipe names
and computes every figure from their outcomes the same way. Adding a method is one
:func:`register_method` here (and, for a few-step baseline, its objective in
:mod:`rec_eraser.workflows.baselines`); nothing else branches on method names.

- ``retrain``: from scratch on the edited training set, once per seed of ``retrain_seeds``;
  the first seed is the reference, the second gives Retrain's own seed-to-seed spread.
- ``rec_eraser``: the workflow's own version (the calibrated damped empirical Fisher, with the
  default "reference" calibration target and "auto" row weights); ``rec_eraser_edited`` the same
  update with the "edited" target (the default before), in memory; ``rec_eraser_quantile``
  (optional) the same with the "quantile" target; ``rec_eraser_inclusion`` and
  ``rec_eraser_uniform`` (optional) with the Fisher's rows always inclusion-weighted, or always
  uniform (the default before "auto");
  ``rec_eraser_rule`` the same solve with the fixed damping rule; ``rec_eraser_cg`` (CG to a
  relative residual of 1e-2 on the Gauss–Newton system, building the low-rank preconditioner
  when it pays, as ``--solver cg`` does; ``rec_eraser_cg_plain`` / ``_lowrank``, optional:
  never / always), ``rec_eraser_sqp`` (the same system as a QP by SVRG within
  ``sqp_hvp_budget`` HVPs) and ``reference_recipe`` (the reference implementation's 20 Adam
  steps at lr 1e-5 on that QP), on ``hvp_sample_size`` curvature instances (grown as every sample is, ``retained_floor``).
- ``sisa``: shards by user, one adapter per shard, scores averaged; forgetting retrains only
  the shards holding edited instances.
- ``gradient_ascent``, ``graddiff``, ``npo`` on the forget set; ``finetune`` on the corrected
  forms (qm, rc only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from rec_eraser.core import InfluenceEngine, SolverConfig, SolverReport
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.encode import collate
from rec_eraser.training.model import rec_loss
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import load_version
from rec_eraser.workflows.baselines import BASELINES, run_baseline
from rec_eraser.workflows.registry import Registry
from rec_eraser.workflows.study import (
    BenchContext,
    Outcome,
    PeakMemory,
    Say,
    cached_adapter,
    default_solver,
    observe,
    original_memorisation,
    test_scores_and_losses,
)
from rec_eraser.workflows.unlearn import DEFAULT_CALIBRATION, preview_update
from rec_eraser.workflows.update import encoded_edits, on_which_fisher, update_seconds


@dataclass(frozen=True)
class MethodCall:
    """What a method's runner is handed: the run, the workflow's unlearned version, and progress."""

    ctx: BenchContext
    version: str  # the version rec-eraser's own workflow wrote for the experiment's events
    retrain: Outcome  # the reference Retrain (its first seed)
    say: Say


@dataclass(frozen=True)
class BenchMethod:
    name: str
    run: Callable[[MethodCall], Outcome]
    optional: bool = False  # run only when named (not part of "every method")
    correction_only: bool = False  # needs corrected data: left out of an ir experiment


#: name -> method, in report order
BENCH_METHODS: dict[str, BenchMethod] = {}


def register_method(
    name: str, run: Callable[[MethodCall], Outcome], optional: bool = False, correction_only: bool = False
) -> None:
    if name in BENCH_METHODS:
        raise ValueError(f"benchmark method {name!r} is registered twice")
    BENCH_METHODS[name] = BenchMethod(name, run, optional, correction_only)


def run_retrain(ctx: BenchContext, seed: int, say: Say) -> Outcome:
    loaded, record = cached_adapter(
        ctx, f"bench-retrain-seed{seed}", replace(ctx.recipe, seed=seed), ctx.after, say, f"Retrain (seed {seed})"
    )
    return observe(
        ctx,
        loaded,
        record["training"]["seconds"],
        gradient_passes=record["training"]["steps"],
        hvps=0,
        peak_mb=record.get("bench_cost", {}).get("peak_mb"),
    )


def sisa_shards(users: Sequence[str], shards: int, seed: int) -> dict[str, int]:
    """User → shard: a seeded permutation of the sorted users dealt round-robin (a random
    stream of its own, independent of the one that picks the experiment's users)."""
    ordered = sorted(set(users), key=lambda u: (len(u), u))
    perm = np.random.default_rng([seed, shards, 1]).permutation(len(ordered))
    return {ordered[j]: i % shards for i, j in enumerate(perm)}


def touched_shards(shard_of: dict[str, int], before: list[Instance], after: list[Instance]) -> list[int]:
    """The shards whose training instances the edits changed (removed or rewritten)."""
    after_by_id = {z.id: z for z in after}
    return sorted({shard_of[z.user] for z in before if after_by_id.get(z.id) != z})


def _run_sisa(ctx: BenchContext, say: Say) -> Outcome:
    k = ctx.experiment.sisa_shards
    shard_of = sisa_shards([z.user for z in ctx.before], k, ctx.experiment.seed)
    touched = touched_shards(shard_of, ctx.before, ctx.after)
    scores, forget_losses, unseen_losses, corrected_losses, seconds, steps, peak = [], [], [], [], 0.0, 0, None
    for shard in range(k):
        edited = shard in touched
        instances = [z for z in (ctx.after if edited else ctx.before) if shard_of[z.user] == shard]
        if not instances:
            continue
        folder = f"bench-sisa-{k}-shard{shard}" + ("-edited" if edited else "")
        loaded, record = cached_adapter(
            ctx, folder, ctx.recipe, instances, say, f"SISA shard {shard}/{k}" + (" (edited)" if edited else "")
        )
        if edited:  # forgetting costs only the retraining of the touched shards
            seconds += record["training"]["seconds"]
            steps += record["training"]["steps"]
            mb = record.get("bench_cost", {}).get("peak_mb")
            peak = mb if peak is None or (mb is not None and mb > peak) else peak
        shard_scores, shard_losses = test_scores_and_losses(ctx, loaded)
        scores.append(shard_scores)
        unseen_losses.append(shard_losses)
        if ctx.forget:
            forget_losses.append(instance_losses(loaded, ctx.forget))
        if ctx.corrected:
            corrected_losses.append(instance_losses(loaded, ctx.corrected))
        del loaded
    return Outcome(
        test_scores=np.mean(scores, axis=0),
        forget_losses=np.mean(forget_losses, axis=0) if forget_losses else None,
        unseen_losses=np.mean(unseen_losses, axis=0),
        corrected_losses=np.mean(corrected_losses, axis=0) if corrected_losses else None,
        answers=None,
        seconds=seconds,
        gradient_passes=steps,
        hvps=0,
        peak_mb=peak,
        notes=f"{k} shards, {len(touched)} retrained (shards {touched}); scores and losses are the shards' means",
    )


def _built(report: SolverReport) -> str:
    """Where CG's preconditioner came from, for the notes."""
    if report.preconditioner == "auto":
        at = report.preconditioner_built_at
        return (
            " (low-rank preconditioner not needed)"
            if at is None
            else f" (low-rank preconditioner built after {at} plain ones)"
        )
    return f" ({report.preconditioner} preconditioner)" if report.preconditioner else ""


def _solve_from_original(ctx: BenchContext, solver: SolverConfig) -> Outcome:
    """An influence update of v0000 with ``solver``, in memory (the same edits as the workflow's),
    with the automatic damping rule (its Hutchinson probes are HVPs and are counted)."""
    loaded = load_version(ctx.run, "v0000")
    after_by_id = {z.id: z for z in ctx.after}
    encoded, edits = encoded_edits(
        ctx.before,
        {z.id: after_by_id.get(z.id) for z in ctx.forget},
        loaded.tokenizer,
        loaded.item_index,
        loaded.recipe.max_length,
    )
    memory = PeakMemory()
    with memory.watch():
        update = InfluenceEngine(
            loaded.model, rec_loss(), list(encoded.values()), collate, curvature="ggn", solver=solver
        ).compute(edits)
    update.apply(loaded.model)
    r = update.report
    return observe(
        ctx,
        loaded,
        r.seconds,
        gradient_passes=r.gradient_passes,
        hvps=r.hvps,
        floor_seconds=r.floor_seconds,
        peak_mb=memory.peak_mb,
        notes=f"{r.curvature_samples} curvature instances, {r.iterations} iterations{_built(r)}, relative residual {r.relative_residual:.3g}, damping {r.damping:.3g} ({r.damping_rule})",
    )


COST_FILE = "rec_eraser-cost.json"  # the peak memory of the workflow's apply (the registry's files stay untouched)


def _run_rec_eraser(ctx: BenchContext, version: str) -> Outcome:
    record = Registry(ctx.run).manifest(version)
    cost_file = ctx.run.parent / COST_FILE
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    s = record["solver"]
    return observe(
        ctx,
        load_version(ctx.run, version),
        update_seconds(record),
        gradient_passes=s["gradient_passes"],
        hvps=s["hvps"],
        floor_seconds=s.get("floor_seconds"),
        peak_mb=cost.get("peak_mb") if cost.get("version") == version else None,
        notes=f"{version}; {s['method']}, relative residual {s['relative_residual']:.3g}, damping {s['damping']:.3g}; "
        f"{_calibration_note(record)}",
    )


def _run_other_target(call: MethodCall, target: str, row_weights: str | None = None) -> Outcome:
    """The workflow's update of v0000 for the same events, with another calibration ``target``
    (``rec_eraser.workflows.update.CALIBRATION_TARGETS``) or the Fisher's rows weighted otherwise
    (``row_weights``: ``SolverConfig.row_weights``), computed in memory; its seconds count as the
    ``rec_eraser`` row's do (the solve, plus the gap only if this request had to measure it)."""
    ctx = call.ctx
    # v0000's gap as the workflow's own request used it (recorded at training, or measured by that
    # request and recorded in its version): never measured again here, as the rec_eraser row's is not;
    # except by the "quantile" target when that record predates keeping the samples' losses: the
    # request then measures them again and pays for it, as the workflow would
    memorisation = original_memorisation(ctx.run, call.say, call.version)
    memory = PeakMemory()
    with memory.watch():
        solver = default_solver(ctx.experiment)
        loaded, result = preview_update(
            ctx.run,
            ctx.events,
            solver=solver if row_weights is None else replace(solver, row_weights=row_weights),
            parent="v0000",
            calibrate=replace(DEFAULT_CALIBRATION, target=target),
            memorisation=memorisation,
        )
    if loaded is None:
        raise ValueError("the experiment's events change no training instance of v0000")
    record = {"solver": result.solver, "metrics": result.metrics}
    s = result.solver
    return observe(
        ctx,
        loaded,
        update_seconds(record),
        gradient_passes=s["gradient_passes"],
        hvps=s["hvps"],
        floor_seconds=s.get("floor_seconds"),
        peak_mb=memory.peak_mb,
        notes=f"in memory; {s['method']}, relative residual {s['relative_residual']:.3g}, damping {s['damping']:.3g}; "
        f"{_calibration_note(record)}",
    )


def _calibration_note(record: dict[str, Any]) -> str:
    """What the calibration measured and chose, for the notes."""
    cal = (record.get("metrics") or {}).get("calibration")
    if not cal:
        return "no calibration"
    gap = cal.get("memorisation_gap") or {}
    search = (record.get("solver") or {}).get("calibration")
    text = f"calibration: memorisation gap {gap.get('gap', float('nan')):.3g} ± {gap.get('standard_error', float('nan')):.2g}"
    if gap.get("measured_on") and not cal.get("reference_seconds") and gap.get("seconds") is not None:
        text += (
            f" (measured on {gap['measured_on']} once, {gap['seconds']:.3g} s of {gap['trained_instances']} + "
            f"{gap['untrained_instances']} forwards, reused by every request on the lineage: not in this row's seconds)"
        )
    if search:
        text += f", damping x {search['factor']:.3g} of the rule, progress {search['progress']:.3g} in {len(search['trials'])} trials"
    reference = cal.get("reference")
    if reference:
        text += (
            f", damping x {reference['factor']:.3g} of the rule: {reference['rows']} retained rows of {reference['users']} users "
            f"predicted to move {reference['predicted']:.3g} on average{'' if reference['reached'] else ' (end of the range)'}"
            f"{on_which_fisher(reference)}"
        )
    quantile = cal.get("quantile")
    if quantile:
        text += (
            f", damping x {quantile['factor']:.3g} of the rule: {quantile['rows']} edited rows predicted to move "
            f"{quantile['predicted']:.3g} on average, their quantile targets' mean {quantile['target']:.3g}"
            f"{'' if quantile['reached'] else ' (end of the range)'}"
        )
    if gap.get("measured_on") and cal.get("reference_seconds"):
        text += f" (the gap measured by this request: {cal['reference_seconds']:.3g} s, in this row's seconds)"
    if cal.get("note"):
        text += f" ({cal['note']})"
    trust = cal.get("trust") or {}
    if trust.get("ratio") is not None:
        text += f"; measured/predicted change {trust['ratio']:.3g}"
    return text


def _run_baseline(ctx: BenchContext, method: str) -> Outcome:
    loaded = load_version(ctx.run, "v0000")
    exp = ctx.experiment
    forget_ids = {z.id for z in ctx.forget}
    kept = [z for z in ctx.after if z.id not in forget_ids]
    rng = np.random.default_rng(exp.seed)
    retain = (
        [kept[i] for i in np.sort(rng.choice(len(kept), min(exp.retain_sample, len(kept)), replace=False))]
        if kept
        else []
    )
    memory = PeakMemory()
    with memory.watch():
        report = run_baseline(
            method,
            loaded,
            forget=ctx.forget,
            retain=retain,
            corrected=ctx.corrected,
            steps=exp.baseline_steps,
            lr=exp.baseline_lr,
            seed=exp.seed,
        )
    return observe(
        ctx,
        loaded,
        report.seconds,
        gradient_passes=report.gradient_passes,
        hvps=0,
        peak_mb=memory.peak_mb,
        notes=f"{report.steps} steps at lr {exp.baseline_lr:g}",
    )


def _gauss_newton(ctx: BenchContext) -> SolverConfig:
    """The Gauss–Newton rows' starting point: the default solver on ``hvp_sample_size`` curvature instances (HVPs cost per instance)."""
    return replace(default_solver(ctx.experiment), sample_size=ctx.experiment.hvp_sample_size)


def _cg(preconditioner: str | None) -> Callable[[MethodCall], Outcome]:
    def run(call: MethodCall) -> Outcome:
        return _solve_from_original(
            call.ctx,
            replace(
                _gauss_newton(call.ctx),
                method="cg",
                preconditioner=preconditioner,
                tol=1e-2,
                hvp_budget=call.ctx.experiment.sqp_hvp_budget,
                max_residual=float("inf"),
            ),
        )

    return run


def _sqp(call: MethodCall) -> Outcome:
    return _solve_from_original(
        call.ctx,
        replace(
            _gauss_newton(call.ctx),
            method="sqp",
            tol=1e-2,
            max_iters=100_000,
            power_iters=5,
            hvp_budget=call.ctx.experiment.sqp_hvp_budget,
            max_residual=float("inf"),
        ),
    )


def _reference_recipe(call: MethodCall) -> Outcome:
    return _solve_from_original(
        call.ctx, replace(_gauss_newton(call.ctx), method="adam", max_iters=20, lr=1e-5, max_residual=float("inf"))
    )


def _descent_baseline(method: str) -> Callable[[MethodCall], Outcome]:
    return lambda call: _run_baseline(call.ctx, method)


register_method("retrain", lambda call: call.retrain)
register_method("sisa", lambda call: _run_sisa(call.ctx, call.say))
for _name, _baseline in BASELINES.items():  # the few-step baselines, in their registered order
    register_method(_name, _descent_baseline(_name), correction_only=_baseline.on == "corrected")
register_method("rec_eraser", lambda call: _run_rec_eraser(call.ctx, call.version))
register_method("rec_eraser_edited", partial(_run_other_target, target="edited"))
register_method("rec_eraser_quantile", partial(_run_other_target, target="quantile"), optional=True)
# the default's reference target on an inclusion-weighted Fisher (rec_eraser.core.fisher) always, not
# only where "auto" takes it (LLaRA's 74-row samples cap every row's uniform predicted move at m/n)
register_method(
    "rec_eraser_inclusion", partial(_run_other_target, target="reference", row_weights="inclusion"), optional=True
)
# the default before "auto" (uniform unless the uniform match hits that cap, then inclusion) replaced it
register_method(
    "rec_eraser_uniform", partial(_run_other_target, target="reference", row_weights="uniform"), optional=True
)
register_method("rec_eraser_rule", lambda call: _solve_from_original(call.ctx, default_solver(call.ctx.experiment)))
register_method("rec_eraser_cg", _cg("auto"))
register_method("rec_eraser_sqp", _sqp)
register_method("reference_recipe", _reference_recipe)
# rec_eraser_cg never and always building its preconditioner: what the preconditioner and the choice of when to build it save
register_method("rec_eraser_cg_plain", _cg(None), optional=True)
register_method("rec_eraser_cg_lowrank", _cg("lowrank"), optional=True)


def method_names(optional: bool = False) -> tuple[str, ...]:
    """The registered methods in report order: "every method" (``optional=False``), or also the ones run only when named."""
    return tuple(name for name, m in BENCH_METHODS.items() if optional or not m.optional)
