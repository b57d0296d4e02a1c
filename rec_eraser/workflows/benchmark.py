"""``rec-eraser bench RECIPE``: every unlearning method on one experiment, judged against Retrain.

One run folder holds the (possibly corrupted) prepared data and the original adapter
``v0000``; the experiment's events are applied by rec-eraser's own workflow (``v0001``),
and every other method starts from ``v0000`` too:

- ``retrain``: from scratch on the edited training set, once per seed of ``retrain_seeds``;
  the first seed is the reference, the second gives Retrain's own seed-to-seed spread (the
  noise floor every gap is read against).
- ``rec_eraser`` (the workflows' default solver: the damped empirical Fisher of
  ``sample_size`` instances), ``rec_eraser_cg`` (the Gauss–Newton system by CG to a
  relative residual of 1e-2, building the low-rank Gauss–Newton preconditioner when it
  pays, as ``--solver cg`` does; ``rec_eraser_cg_plain`` and ``rec_eraser_cg_lowrank``,
  run only when named, never and always build it),
  ``rec_eraser_sqp`` (the same system as a QP by SVRG within ``sqp_hvp_budget`` HVPs) and
  ``reference_recipe`` (the reference implementation's 20 Adam steps at lr 1e-5 on the same
  QP); the last three on ``hvp_sample_size`` curvature instances, since each costs HVPs
  per instance.
- ``sisa``: shards by user, one adapter per shard, scores averaged; forgetting retrains only
  the shards holding edited instances.
- ``gradient_ascent``, ``graddiff``, ``npo`` on the forget set (the removed instances and the
  trained forms of the corrected ones); ``finetune`` on the corrected forms (qm, rc).

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

import ctypes
import gc
import json
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec_eraser.core import InfluenceEngine, Removal, Replacement, SolverConfig, SolverError, SolverReport
from rec_eraser.evaluation.baselines import like_counts, like_rate_baseline, popularity_baseline
from rec_eraser.evaluation.metrics import classification_metrics, ranking_metrics
from rec_eraser.evaluation.unlearning import membership_inference_auc, recovery, score_correlation, top1_agreement
from rec_eraser.jsonable import finite
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prepare import load_instances, load_manifest, load_titles, prepare
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.model import rec_loss
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.scoring import candidate_scores, generate_answers, instance_losses, yes_no_scores_and_losses
from rec_eraser.training.train import (
    LoadedModel,
    fit_adapter,
    instance_ids_hash,
    load_version,
    save_version,
    train_run,
)
from rec_eraser.workflows.baselines import run_baseline
from rec_eraser.workflows.bench_report import write_report
from rec_eraser.workflows.calibration import MemorisationGap, recorded_memorisation
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.experiments import (METHODS, OPTIONAL_METHODS, Experiment, ExperimentError, corruption,
                                              experiment_events, load_experiment)
from rec_eraser.workflows.fidelity import adapter_conditions, can_judge, main_metric, targets
from rec_eraser.workflows.registry import DEFAULT_ROOT, Registry
from rec_eraser.workflows.unlearn import (DEFAULT_CALIBRATION, apply_events, training_memorisation, validate_events,
                                         version_memorisation)

logger = logging.getLogger(__name__)

CG_PRECONDITIONERS = {"rec_eraser_cg": "auto", "rec_eraser_cg_plain": None, "rec_eraser_cg_lowrank": "lowrank"}
CORRECTION_ONLY = ("finetune",)
Say = Callable[[str], None]


# -- cost accounting ----------------------------------------------------------------------
class PeakMemory:
    """The process's peak resident memory while a block runs (Linux: /proc/self/statm, sampled
    every 20 ms; CUDA: the allocator's peak), in MiB; None where neither is available.

    Before the block, garbage is collected and glibc is asked to return freed memory to the
    system (``malloc_trim``): otherwise memory an earlier method freed but the allocator kept
    would count toward every later method's peak.
    """

    def __init__(self) -> None:
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._page = 4096
        try:
            import os

            self._page = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass

    def _rss_mb(self) -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / 2**20
        except (OSError, ValueError, IndexError):
            return None

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = self._rss_mb()
            if rss is not None:
                self.peak_mb = rss if self.peak_mb is None else max(self.peak_mb, rss)
            self._stop.wait(0.02)

    @staticmethod
    def _release_freed_memory() -> None:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to release
            pass

    @contextmanager
    def watch(self) -> Iterator[PeakMemory]:
        self._release_freed_memory()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        thread = threading.Thread(target=self._poll, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            if torch.cuda.is_available():
                self.peak_mb = torch.cuda.max_memory_allocated() / 2**20


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


def default_out(recipe_path: Path, tier: str, study: str = "") -> Path:
    """``adapters/bench/RECIPE[-TIER][-STUDY]``: one folder per recipe, tier and kind of study."""
    return DEFAULT_ROOT / "bench" / (recipe_path.stem + ("" if tier == "full" else f"-{tier}") + (f"-{study}" if study else ""))


PROGRESS_LOG = "bench.log"


def open_study(recipe_path: Path | str, tier: str, out: Path | None, base_model: Path | None, say: Say | None,
               study: str = "", precision: str | None = None) -> tuple[Experiment, Recipe, Path, Say]:
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
    log = out / PROGRESS_LOG

    def tell(message: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"{datetime.now().isoformat(timespec='seconds')} {message}\n")
        if say is not None:
            say(message)

    return experiment, recipe, out, tell


#: the experiment settings that shape the run's data and events; a run folder serves one set of them
DATA_SETTINGS = ("dataset", "task", "edit", "fraction", "injected", "max_users", "seed")
EXPERIMENT_FILE = "experiment.json"


def _prepare(run: Path, experiment: Experiment, recipe: Recipe, say: Say) -> None:
    fingerprint = {k: experiment.to_dict()[k] for k in DATA_SETTINGS}
    stamp = run.parent / EXPERIMENT_FILE
    if (run / "manifest.json").is_file():
        kept = json.loads(stamp.read_text()) if stamp.is_file() else None
        if kept != fingerprint:
            differs = sorted(k for k in DATA_SETTINGS if (kept or {}).get(k) != fingerprint[k])
            raise ExperimentError(f"{run.parent} holds a run of another experiment (it differs in {', '.join(differs)}); "
                                  "use another --out or remove that folder")
    else:
        say(f"preparing {experiment.dataset} ({experiment.task}, {experiment.edit}) into {run}")
        run.parent.mkdir(parents=True, exist_ok=True)
        prepare(experiment.dataset, experiment.task, run, seed=experiment.seed, max_users=experiment.max_users,
                transform=corruption(experiment))
        stamp.write_text(json.dumps(fingerprint, indent=2) + "\n")
    ensure_trained(run, recipe, say)


def ensure_trained(run: Path, recipe: Recipe, say: Say) -> Registry:
    """Train the run's v0000 with ``recipe``, or check that the one already there was trained with it."""
    registry = Registry(run)
    if not registry.versions():
        say(f"training v0000 ({recipe.max_train or 'all'} instances) and measuring its memorisation gap")
        train_run(run, recipe, measure=training_memorisation(run, recipe))
    elif Recipe.from_dict(registry.manifest("v0000")["recipe"]) != recipe:
        raise ExperimentError(f"{run}/v0000 was trained with another recipe (another base model?); "
                              f"use another --out or remove {run}")
    return registry


def _context(run: Path, experiment: Experiment, recipe: Recipe, events: list[Event], version: str) -> BenchContext:
    registry = Registry(run)
    before, after = registry.training_set("v0000"), registry.training_set(version)
    after_by_id = {z.id: z for z in after}
    changed = [z for z in before if after_by_id.get(z.id) != z]
    corrected = [after_by_id[z.id] for z in changed if z.id in after_by_id]
    manifest = load_manifest(run)
    return BenchContext(run=run, experiment=experiment, recipe=recipe, task=manifest["task"], before=before, after=after,
                        forget=changed, corrected=corrected, test=load_instances(run, "test")[: experiment.eval_prompts],
                        titles=load_titles(run) if manifest["task"] == "llara" else {}, events=events)


def _test_scores_and_losses(ctx: BenchContext, loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The test prompts' scores and losses; TALLRec reads both from one forward pass."""
    if ctx.task == "llara":
        return candidate_scores(loaded, ctx.test, ctx.titles), instance_losses(loaded, ctx.test)
    return yes_no_scores_and_losses(loaded, ctx.test)


def _observe(ctx: BenchContext, loaded: LoadedModel, seconds: float, **cost: Any) -> Outcome:
    answers = generate_answers(loaded, ctx.test) if ctx.task == "llara" and ctx.experiment.generate else None
    test_scores, test_losses = _test_scores_and_losses(ctx, loaded)
    return Outcome(test_scores=test_scores,
                   forget_losses=instance_losses(loaded, ctx.forget) if ctx.forget else None,
                   unseen_losses=test_losses,
                   corrected_losses=instance_losses(loaded, ctx.corrected) if ctx.corrected else None,
                   answers=answers, seconds=seconds, **cost)


def _cached_adapter(ctx: BenchContext, folder: str, recipe: Recipe, instances: list[Instance], say: Say, label: str) -> tuple[LoadedModel, dict[str, Any]]:
    """Train (or reuse) an adapter on ``instances`` saved as ``RUN/folder``; the loaded model and its record."""
    target = ctx.run / folder
    if (target / "manifest.json").is_file():
        cached = json.loads((target / "manifest.json").read_text())
        # compared as recipes, not dicts, so that a setting added later with its default keeps the cache
        if cached.get("train_ids_sha256") != instance_ids_hash(instances) or Recipe.from_dict(cached.get("recipe") or {}) != recipe:
            logger.info("%s was trained on other instances or with another recipe: training it again", target)
            shutil.rmtree(target)
    if not (target / "manifest.json").is_file():
        say(f"training {label} on {len(instances)} instances")
        memory = PeakMemory()
        with memory.watch():
            model, record = fit_adapter(ctx.run, recipe, instances)
        record["bench_cost"] = {"peak_mb": memory.peak_mb}
        save_version(model, target, {"version": folder, "parent": None, "kind": "bench", "label": label, **record, "events": []})
        del model
    record = json.loads((target / "manifest.json").read_text())
    return load_version(ctx.run, folder), record


def _run_retrain(ctx: BenchContext, seed: int, say: Say) -> Outcome:
    loaded, record = _cached_adapter(ctx, f"bench-retrain-seed{seed}", replace(ctx.recipe, seed=seed), ctx.after, say, f"Retrain (seed {seed})")
    return _observe(ctx, loaded, record["training"]["seconds"], gradient_passes=record["training"]["steps"], hvps=0,
                    peak_mb=record.get("bench_cost", {}).get("peak_mb"))


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
        loaded, record = _cached_adapter(ctx, folder, ctx.recipe, instances, say, f"SISA shard {shard}/{k}" + (" (edited)" if edited else ""))
        if edited:  # forgetting costs only the retraining of the touched shards
            seconds += record["training"]["seconds"]
            steps += record["training"]["steps"]
            mb = record.get("bench_cost", {}).get("peak_mb")
            peak = mb if peak is None or (mb is not None and mb > peak) else peak
        shard_scores, shard_losses = _test_scores_and_losses(ctx, loaded)
        scores.append(shard_scores)
        unseen_losses.append(shard_losses)
        if ctx.forget:
            forget_losses.append(instance_losses(loaded, ctx.forget))
        if ctx.corrected:
            corrected_losses.append(instance_losses(loaded, ctx.corrected))
        del loaded
    return Outcome(test_scores=np.mean(scores, axis=0), forget_losses=np.mean(forget_losses, axis=0) if forget_losses else None,
                   unseen_losses=np.mean(unseen_losses, axis=0),
                   corrected_losses=np.mean(corrected_losses, axis=0) if corrected_losses else None, answers=None,
                   seconds=seconds, gradient_passes=steps, hvps=0, peak_mb=peak,
                   notes=f"{k} shards, {len(touched)} retrained (shards {touched}); scores and losses are the shards' means")


def _built(report: SolverReport) -> str:
    """Where CG's preconditioner came from, for the notes."""
    if report.preconditioner == "auto":
        at = report.preconditioner_built_at
        return " (low-rank preconditioner not needed)" if at is None else f" (low-rank preconditioner built after {at} plain ones)"
    return f" ({report.preconditioner} preconditioner)" if report.preconditioner else ""


def _solve_from_original(ctx: BenchContext, solver: SolverConfig) -> Outcome:
    """An influence update of v0000 with ``solver``, in memory (the same edits as the workflow's),
    with the automatic damping rule (its Hutchinson probes are HVPs and are counted)."""
    loaded = load_version(ctx.run, "v0000")
    tok, items, max_length = loaded.tokenizer, loaded.item_index, loaded.recipe.max_length
    encoded = {z.id: encode_instance(z, tok, items, max_length) for z in ctx.before}
    after_by_id = {z.id: z for z in ctx.after}
    edits = [Removal(encoded[z.id]) if z.id not in after_by_id else Replacement(encoded[z.id], encode_instance(after_by_id[z.id], tok, items, max_length))
             for z in ctx.forget]
    memory = PeakMemory()
    with memory.watch():
        update = InfluenceEngine(loaded.model, rec_loss(), list(encoded.values()), collate, curvature="ggn", solver=solver).compute(edits)
    update.apply(loaded.model)
    r = update.report
    return _observe(ctx, loaded, r.seconds, gradient_passes=r.gradient_passes, hvps=r.hvps, peak_mb=memory.peak_mb,
                    notes=f"{r.curvature_samples} curvature instances, {r.iterations} iterations{_built(r)}, relative residual {r.relative_residual:.3g}, damping {r.damping:.3g} ({r.damping_rule})")


COST_FILE = "rec_eraser-cost.json"  # the peak memory of the workflow's apply (the registry's files stay untouched)


def _run_rec_eraser(ctx: BenchContext, version: str) -> Outcome:
    record = Registry(ctx.run).manifest(version)
    cost_file = ctx.run.parent / COST_FILE
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    s = record["solver"]
    return _observe(ctx, load_version(ctx.run, version), update_seconds(record), gradient_passes=s["gradient_passes"],
                    hvps=s["hvps"], peak_mb=cost.get("peak_mb") if cost.get("version") == version else None,
                    notes=f"{version}; {s['method']}, relative residual {s['relative_residual']:.3g}, damping {s['damping']:.3g}; "
                          f"{_calibration_note(record)}")


def update_seconds(record: dict[str, Any]) -> float:
    """The request's own work: the solve (its calibration trials included) plus measuring the
    memorisation gap when this request did (once per lineage; a reused gap costs nothing)."""
    cal = (record.get("metrics") or {}).get("calibration") or {}
    return float(record["solver"]["seconds"]) + float(cal.get("reference_seconds", 0.0))


def _calibration_note(record: dict[str, Any]) -> str:
    """What the calibration measured and chose, for the notes."""
    cal = (record.get("metrics") or {}).get("calibration")
    if not cal:
        return "no calibration"
    gap = cal.get("memorisation_gap") or {}
    search = (record.get("solver") or {}).get("calibration")
    text = f"calibration: memorisation gap {gap.get('gap', float('nan')):.3g} ± {gap.get('standard_error', float('nan')):.2g}"
    if gap.get("measured_on") and not cal.get("reference_seconds") and gap.get("seconds") is not None:
        text += (f" (measured on {gap['measured_on']} once, {gap['seconds']:.3g} s of {gap['trained_instances']} + "
                 f"{gap['untrained_instances']} forwards, reused by every request on the lineage: not in this row's seconds)")
    if search:
        text += f", damping x {search['factor']:.3g} of the rule, progress {search['progress']:.3g} in {len(search['trials'])} trials"
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
    retain = [kept[i] for i in np.sort(rng.choice(len(kept), min(exp.retain_sample, len(kept)), replace=False))] if kept else []
    memory = PeakMemory()
    with memory.watch():
        report = run_baseline(method, loaded, forget=ctx.forget, retain=retain, corrected=ctx.corrected, steps=exp.baseline_steps,
                              lr=exp.baseline_lr, seed=exp.seed)
    return _observe(ctx, loaded, report.seconds, gradient_passes=report.gradient_passes, hvps=0, peak_mb=memory.peak_mb,
                    notes=f"{report.steps} steps at lr {exp.baseline_lr:g}")


# -- can the run judge? -------------------------------------------------------------------------
def _baseline(ctx: BenchContext) -> dict[str, Any]:
    """The task's simple baseline on the test prompts, on the main metric (as ``rec-eraser evaluate`` computes it)."""
    train = load_instances(ctx.run, "train")
    if ctx.task == "tallrec":
        likes = like_counts([z.target_item for z in train], [z.label for z in train])
        value = like_rate_baseline(likes, [z.target_item for z in ctx.test], np.array([z.label for z in ctx.test]))["auc"]
        return {"name": "like_rate", "value": value}
    targets_ = np.array([z.candidates.index(z.target_item) for z in ctx.test])
    popularity = Counter(z.target_item for z in train)
    return {"name": "popularity", "value": popularity_baseline(popularity, [list(z.candidates) for z in ctx.test], targets_)["hit@1"]}


def original_memorisation(run: Path, say: Say, version: str | None = None) -> MemorisationGap | None:
    """``v0000``'s memorisation gap, measured as the default update's calibration measures it
    (same sample and settings), so the benchmark's ``can_judge`` and the update read one figure
    and the request reuses it (it is a property of the adapter, measured once per lineage): the
    one recorded on ``version``'s lineage (at training, or by the request that wrote ``version``),
    else measured now (a v0000 trained before training recorded it)."""
    registry = Registry(run)
    recorded = recorded_memorisation(registry.lineage(version or "v0000"), DEFAULT_CALIBRATION.reference_size, DEFAULT_CALIBRATION.seed)
    if recorded is not None:
        return recorded
    say("measuring v0000's memorisation gap")
    return version_memorisation(registry, "v0000", load_version(run, "v0000"), load_instances(run, "train"), DEFAULT_CALIBRATION)


def _memorisation_dict(gap: MemorisationGap | None) -> dict[str, Any]:
    if gap is None:
        return {"gap": None, "standard_error": None, "untrained_source": "too few reference instances"}
    return gap.to_dict()


# -- metrics ----------------------------------------------------------------------------------
def _utility(ctx: BenchContext, outcome: Outcome) -> dict[str, float | None]:
    if ctx.task == "tallrec":
        labels = np.array([z.label for z in ctx.test])
        return {"auc": classification_metrics(outcome.test_scores, labels)["auc"]}
    from rec_eraser.evaluation.metrics import generation_metrics

    targets = np.array([z.candidates.index(z.target_item) for z in ctx.test])
    ranking = ranking_metrics(outcome.test_scores, targets)
    utility: dict[str, float | None] = {"hit@1": ranking["hit@1"], "ndcg@10": ranking["ndcg@10"], "gen_hit@1": None, "valid_ratio": None}
    if outcome.answers is not None:
        gen = generation_metrics(outcome.answers, [[ctx.titles[c] for c in z.candidates] for z in ctx.test], targets.tolist())
        utility.update({"gen_hit@1": gen["hit@1"], "valid_ratio": gen["valid_ratio"]})
    return utility


def _agreement(ctx: BenchContext, a: Outcome, b: Outcome) -> float:
    if ctx.task == "llara":
        return top1_agreement(a.test_scores, b.test_scores)
    return score_correlation(a.test_scores, b.test_scores)


def _number(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _difference(a: float | None, b: float | None) -> float | None:
    a, b = _number(a), _number(b)
    return None if a is None or b is None else a - b


def _mean(x: np.ndarray | None) -> float | None:
    return None if x is None or len(x) == 0 else float(np.mean(x))


def metrics_of(ctx: BenchContext, outcome: Outcome, retrain: Outcome, original: Outcome) -> dict[str, Any]:
    """Every figure of one method (see the module docstring)."""
    main = "auc" if ctx.task == "tallrec" else "hit@1"
    utility, retrain_utility, original_utility = _utility(ctx, outcome), _utility(ctx, retrain), _utility(ctx, original)
    m: dict[str, Any] = dict(utility)
    m["utility_gap"] = _difference(utility[main], retrain_utility[main])
    m["agreement_with_retrain"] = _agreement(ctx, outcome, retrain)
    m["agreement_kind"] = "top1_agreement" if ctx.task == "llara" else "score_correlation"
    m["forget_loss"] = _mean(outcome.forget_losses)
    m["corrected_loss"] = _mean(outcome.corrected_losses)
    m["unseen_loss"] = float(np.mean(outcome.unseen_losses))
    m["membership_auc"] = membership_inference_auc(outcome.forget_losses, outcome.unseen_losses) if outcome.forget_losses is not None else None
    if ctx.experiment.edit in ("qm", "rc"):
        m["recovery"] = recovery(utility[main], original_utility[main], retrain_utility[main])
        m["recovery_corrected_loss"] = (None if outcome.corrected_losses is None else
                                        recovery(_mean(outcome.corrected_losses), _mean(original.corrected_losses), _mean(retrain.corrected_losses)))
    return m


# -- the command ------------------------------------------------------------------------------
def chosen_methods(experiment: Experiment, methods: Sequence[str] | None = None) -> list[str]:
    """The methods a run measures: ``methods`` if given, else the tier's ``methods`` setting, else
    every method; correction-only methods are left out of an IR experiment."""
    chosen = [m.strip() for m in (methods or experiment.methods or METHODS) if m.strip()]
    unknown = [m for m in chosen if m not in METHODS + OPTIONAL_METHODS]
    if unknown:
        raise ExperimentError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS + OPTIONAL_METHODS)}")
    if experiment.edit == "ir":
        chosen = [m for m in chosen if m not in CORRECTION_ONLY]
        if not chosen:
            raise ExperimentError(f"{', '.join(CORRECTION_ONLY)} corrects data, and an ir experiment has nothing to correct; choose other methods")
    return chosen


def run_benchmark(recipe_path: Path | str, tier: str = "full", out: Path | None = None, methods: Sequence[str] | None = None,
                  base_model: Path | None = None, say: Say | None = None, precision: str | None = None) -> dict[str, Any]:
    """Run the benchmark of ``recipe_path``; returns the JSON-ready result and writes the report folder.

    A method that fails (a diverging solver, a training that blows up) gets ``{"error": ...}``
    in place of its figures; the others are still measured.
    """
    experiment, recipe, out, say = open_study(recipe_path, tier, out, base_model, say, precision=precision)
    chosen = chosen_methods(experiment, methods)
    run = out / "run"
    t_start = time.perf_counter()
    _prepare(run, experiment, recipe, say)
    registry = Registry(run)
    events = experiment_events(experiment, load_manifest(run).get("transform"), sorted({z.user for z in registry.training_set("v0000")}))
    if not events:
        raise ExperimentError("the experiment yields no events (raise fraction or max_users)")
    version = _unlearned_version(registry, events)
    # v0000's gap: the one the cached update used or training recorded, else measured now (and handed to the update)
    memorisation = original_memorisation(run, say, version)
    if version is None:
        problems = validate_events(run, events)  # all or nothing: a refused event must not leave a partial version
        if problems:
            raise ExperimentError(f"the experiment's events do not fit its run: {problems[0].message} ({problems[0].event_id})")
        (out / "events.jsonl").write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
        say(f"rec_eraser: applying {len(events)} events")
        memory = PeakMemory()
        with memory.watch():
            applied = apply_events(run, [(None, e) for e in events], solver=_default_solver(experiment), say=say, memorisation=memorisation)
        version = applied.version
        (out / COST_FILE).write_text(json.dumps({"version": version, "peak_mb": memory.peak_mb}))
    ctx = _context(run, experiment, recipe, events, version)
    if not ctx.forget:
        raise ExperimentError("the experiment's events change no training instance of v0000 (raise fraction or max_train)")

    say("measuring the original adapter")
    original_model = load_version(run, "v0000")
    original = _observe(ctx, original_model, float(registry.manifest("v0000")["training"]["seconds"]))
    del original_model
    retrains = {seed: _run_retrain(ctx, seed, say) for seed in experiment.retrain_seeds}
    reference = retrains[experiment.retrain_seeds[0]]
    gauss_newton = replace(_default_solver(experiment), sample_size=experiment.hvp_sample_size)

    outcomes: dict[str, Outcome | str] = {}
    for name in chosen:
        say(f"method {name}")
        try:
            if name == "retrain":
                outcomes[name] = reference
            elif name == "sisa":
                outcomes[name] = _run_sisa(ctx, say)
            elif name == "rec_eraser":
                outcomes[name] = _run_rec_eraser(ctx, version)
            elif name == "rec_eraser_rule":
                outcomes[name] = _solve_from_original(ctx, _default_solver(experiment))
            elif name in CG_PRECONDITIONERS:
                outcomes[name] = _solve_from_original(ctx, replace(gauss_newton, method="cg", preconditioner=CG_PRECONDITIONERS[name], tol=1e-2,
                                                                 hvp_budget=experiment.sqp_hvp_budget, max_residual=float("inf")))
            elif name == "rec_eraser_sqp":
                outcomes[name] = _solve_from_original(ctx, replace(gauss_newton, method="sqp", tol=1e-2, max_iters=100_000, power_iters=5,
                                                                 hvp_budget=experiment.sqp_hvp_budget, max_residual=float("inf")))
            elif name == "reference_recipe":
                outcomes[name] = _solve_from_original(ctx, replace(gauss_newton, method="adam", max_iters=20, lr=1e-5, max_residual=float("inf")))
            else:
                outcomes[name] = _run_baseline(ctx, name)
        except (SolverError, FloatingPointError, ValueError) as exc:
            logger.warning("%s failed: %s", name, exc)
            outcomes[name] = f"{type(exc).__name__}: {exc}"

    retrain_seconds = reference.seconds
    result: dict[str, Any] = {
        "recipe": str(recipe_path), "tier": tier, "quick": tier == "quick", "experiment": experiment.to_dict(), "training_recipe": recipe.to_dict(),
        "run": str(run), "unlearned_version": version, "train_instances": len(ctx.before), "edited_train_instances": len(ctx.after),
        "events": len(events), "forget_instances": len(ctx.forget), "corrected_instances": len(ctx.corrected),
        "test_prompts": len(ctx.test), "original": {"metrics": metrics_of(ctx, original, reference, original), "seconds": original.seconds,
                                                    "memorisation_seconds": memorisation.seconds if memorisation else None},
        "methods": {},
    }
    for name, outcome in outcomes.items():
        if isinstance(outcome, str):
            result["methods"][name] = {"error": outcome}
            continue
        result["methods"][name] = {
            "metrics": metrics_of(ctx, outcome, reference, original),
            "seconds": outcome.seconds, "ratio_to_retrain": outcome.seconds / retrain_seconds if retrain_seconds else None,
            "gradient_passes": outcome.gradient_passes, "hvps": outcome.hvps, "peak_mb": outcome.peak_mb, "notes": outcome.notes,
        }
    seeds = experiment.retrain_seeds
    result["retrain_spread"] = {
        f"seed{seed}_vs_seed{seeds[0]}": metrics_of(ctx, retrains[seed], reference, original) | {"seconds": retrains[seed].seconds}
        for seed in seeds[1:]
    }
    if "retrain" in result["methods"] and "metrics" in result["methods"]["retrain"]:
        result["can_judge"] = can_judge(result, _baseline(ctx), _memorisation_dict(memorisation))
        for row in result["methods"].values():
            if "metrics" in row:
                row["targets"] = targets(result, row)
    result["seconds"] = time.perf_counter() - t_start
    result["report"] = str(out / "report")
    write_report(result, out / "report")
    return result


CHECK_FILE = "check.json"


def check_adapter(recipe_path: Path | str, tier: str = "full", out: Path | None = None, base_model: Path | None = None,
                  say: Say | None = None, precision: str | None = None) -> dict[str, Any]:
    """Train (or reuse) a benchmark's ``v0000`` and judge the adapter alone, before any Retrain.

    The two ``can_judge`` conditions that need no retraining (``beats_baselines``,
    ``memorised``), measured exactly as the benchmark measures them and in the same run
    folder, so the benchmark reuses the adapter: sizing a tier costs one training and an
    evaluation instead of the whole benchmark. Writes ``OUT/report/check.json``.
    """
    experiment, recipe, out, say = open_study(recipe_path, tier, out, base_model, say, precision=precision)
    run = out / "run"
    _prepare(run, experiment, recipe, say)
    ctx = _context(run, experiment, recipe, [], "v0000")
    say("measuring the original adapter")
    loaded = load_version(run, "v0000")
    scores, losses = _test_scores_and_losses(ctx, loaded)
    del loaded  # the gap loads its own copy
    main = main_metric(ctx.task)
    utility = _utility(ctx, Outcome(test_scores=scores, forget_losses=None, unseen_losses=losses, corrected_losses=None, answers=None, seconds=0.0))
    conditions = adapter_conditions(main, utility[main], _baseline(ctx), _memorisation_dict(original_memorisation(run, say)))
    training = Registry(run).manifest("v0000")["training"]
    result = {"recipe": str(recipe_path), "tier": tier, "run": str(run), "train_instances": len(ctx.before), "test_prompts": len(ctx.test),
              "training_recipe": recipe.to_dict(),
              "training": training, **conditions, "verdict": all(c["verdict"] for c in conditions.values())}
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / CHECK_FILE).write_text(json.dumps(finite(result), indent=2, allow_nan=False, default=str) + "\n")
    result["report"] = str(out / "report" / CHECK_FILE)
    return result


def _default_solver(experiment: Experiment) -> SolverConfig:
    return SolverConfig(method="fisher", sample_size=experiment.sample_size, batch_size=experiment.solver_batch_size)


def _unlearned_version(registry: Registry, events: list[Event]) -> str | None:
    """The version that applied exactly ``events`` to v0000, if one exists; refuses a run edited otherwise."""
    current = registry.current()
    if current == "v0000":
        return None
    chain = registry.lineage(current)
    applied = {e["id"] for record in chain for e in record.get("events", [])}
    if len(chain) != 2 or applied != {e.id for e in events}:
        raise ExperimentError(f"{registry.run_dir} holds edits other than this experiment's events ({current}); "
                              "use another --out or remove that folder")
    made_with = (chain[0].get("metrics") or {}).get("calibration", {}).get("settings")
    if made_with != DEFAULT_CALIBRATION.to_dict():
        raise ExperimentError(f"{registry.run_dir}/{current} was made by another version of the default update (its calibration "
                              "settings differ); use another --out, or remove that version folder to apply the events again")
    return current
