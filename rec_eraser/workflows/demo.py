"""``rec-eraser demo``: the whole story on the embedded defaults (ml-100k, SmolLM2-135M, LLaRA).

Prepare the data, train a small adapter (or reuse the run's ``v0000``), forget a handful of
users and drop some noisy interactions in one solve, retrain from scratch on the edited
data as the oracle, and compare the three adapters on the same test prompts: HitRatio@1
(greedy generation matched to the candidates, over all prompts), ValidRatio, the mean loss on the forgotten instances beside that of never-seen (test)
instances and a loss-based membership-inference AUC (forgotten vs never-seen test
instances; 0.5 = indistinguishable), and the seconds each adapter cost (training, the update, retraining).

Every step is cached in the run folder (the prepared data, ``v0000``, the unlearned
version — the demo's events are idempotent — and the ``retrained-vNNNN`` oracle), so a
second run only evaluates. The run folder is an ordinary one: every other command works on it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.errors import RecEraserError
from rec_eraser.evaluation.evaluate import evaluate_version
from rec_eraser.evaluation.unlearning import membership_inference_auc
from rec_eraser.shipped import shipped_dir
from rec_eraser.tasks.prepare import load_instances, prepare
from rec_eraser.training.recipe import Recipe, load_recipe
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import fit_adapter, load_version, train_run
from rec_eraser.training.versions import save_version
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.progress import Say
from rec_eraser.workflows.registry import DEFAULT_ROOT, Registry
from rec_eraser.workflows.unlearn import DEFAULT_SOLVER, apply_events, training_memorisation

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: users kept, recipe, events, evaluation prompts, solver sub-sample."""

    recipe: str
    max_users: int | None
    forget_users: int
    noisy_interactions: int
    eval_prompts: int
    sample_size: int

    @property
    def recipe_path(self) -> Path:
        return shipped_dir("recipes") / self.recipe  # the demo's own, never a file of that name in the working folder


FULL = DemoSize(recipe="demo-unlearn-llara.toml", max_users=None, forget_users=5, noisy_interactions=5, eval_prompts=100, sample_size=64)
QUICK = DemoSize(recipe="demo-unlearn-llara-quick.toml", max_users=60, forget_users=3, noisy_interactions=3, eval_prompts=16, sample_size=24)


def default_out(quick: bool) -> Path:
    return DEFAULT_ROOT / ("demo-llara-quick" if quick else "demo-llara")


def choose_events(training_set: list, size: DemoSize, seed: int = 0) -> list[Event]:
    """Seeded demo events: delete ``forget_users`` users; for as many other users, one history item is noise."""
    rng = np.random.default_rng(seed)
    users = sorted({z.user for z in training_set}, key=lambda u: (len(u), u))
    chosen = [users[i] for i in rng.permutation(len(users))]
    forget, noisy_users = chosen[: size.forget_users], chosen[size.forget_users :]
    events = [Event(f"demo:delete_user:{u}", "delete_user", u) for u in forget]
    for user in noisy_users:
        if len(events) == size.forget_users + size.noisy_interactions:
            break
        with_history = [z for z in training_set if z.user == user and z.history_items]
        if not with_history:
            continue
        z = with_history[int(rng.integers(len(with_history)))]
        item = z.history_items[int(rng.integers(len(z.history_items)))]
        events.append(Event(f"demo:remove_interactions:{user}:{item}", "remove_interactions", user, items=(item,)))
    return events


def _measure(run: Path, version: str, loaded: Any, forgotten: list, unseen: list, size: DemoSize, say: Say) -> dict[str, Any]:
    say(f"evaluating {version} on {size.eval_prompts} test prompts")
    # generation only: it is what LLaRA reports, and ranking 21 candidates would double the demo's evaluation time
    result = evaluate_version(run, version, "test", size.eval_prompts, generate=True, loaded=loaded, rank=False)
    forgotten_losses, unseen_losses = instance_losses(loaded, forgotten), instance_losses(loaded, unseen)
    return {"hit@1": result["gen_hit@1"], "valid_ratio": result["valid_ratio"], "hit@1_over_valid": result["gen_hit@1_over_valid"],
            "forgotten_loss": float(np.mean(forgotten_losses)), "unseen_loss": float(np.mean(unseen_losses)),
            "membership_auc": membership_inference_auc(forgotten_losses, unseen_losses),
            "baselines": result["baselines"], "eval_prompts": result["n"]}


def run_demo(out: Path | None = None, quick: bool = False, base_model: Path | None = None, say: Say | None = None) -> dict[str, Any]:
    """Run (or resume) the demo in ``out``; returns the JSON-ready comparison.

    ``base_model`` replaces the embedded SmolLM2 (any local Hugging Face causal LM folder).
    """
    say = say or (lambda _m: None)
    size = QUICK if quick else FULL
    run = Path(out) if out is not None else default_out(quick)
    recipe = load_recipe(size.recipe_path)
    if base_model is not None:
        recipe = replace(recipe, base_model=str(base_model))
    t_start = time.perf_counter()
    if not (run / "manifest.json").is_file():
        say(f"preparing ml-100k (LLaRA task) into {run}")
        run.parent.mkdir(parents=True, exist_ok=True)
        prepare("ml-100k", "llara", run, max_users=size.max_users)
    registry = Registry(run)
    if not registry.versions():
        say(f"training v0000 ({recipe.max_train} instances; SASRec item encoder first) and measuring its memorisation gap")
        train_run(run, recipe, measure=training_memorisation(run, recipe))
    else:
        trained = Recipe.from_dict(registry.manifest("v0000")["recipe"])
        if trained != recipe:
            logger.warning("%s/v0000 was trained with another recipe than %s; reusing it as it is", run, size.recipe_path)
        recipe = trained
    original_seconds = registry.manifest("v0000")["training"]["seconds"]

    base_set = registry.training_set("v0000")
    events = choose_events(base_set, size)
    say(f"forgetting {size.forget_users} users and {len(events) - size.forget_users} noisy interactions in one solve")
    result = apply_events(run, [(None, e) for e in events], solver=replace(DEFAULT_SOLVER, sample_size=size.sample_size), say=say)
    if result.problems:
        raise RecEraserError(f"demo events were refused: {result.problems[0]}")
    applied = registry.applied_events(registry.current())
    unlearned_version = applied[events[0].id]
    record = registry.manifest(unlearned_version)
    update_seconds = record["solver"]["seconds"] if record.get("solver") else 0.0

    forgotten_users = [e.user for e in events if e.type == "delete_user"]
    forgotten = [z for z in base_set if z.user in forgotten_users]
    unseen = load_instances(run, "test")[: size.eval_prompts]

    oracle = f"retrained-{unlearned_version}"
    if not (run / oracle / "manifest.json").is_file():
        edited_set = registry.training_set(unlearned_version)
        say(f"retraining from scratch on the {len(edited_set)} edited instances (the oracle)")
        model, oracle_record = fit_adapter(run, recipe, edited_set)
        save_version(model, run / oracle, {"version": oracle, "parent": None, "kind": "retrained", "oracle_for": unlearned_version,
                                          **oracle_record, "events": []})
    retrain_seconds = json.loads((run / oracle / "manifest.json").read_text())["training"]["seconds"]

    rows: dict[str, Any] = {}
    for name, version, seconds in (("original", "v0000", original_seconds), ("unlearned", unlearned_version, update_seconds),
                                   ("retrained", oracle, retrain_seconds)):
        loaded = load_version(run, version)
        rows[name] = {"version": version, "metrics": _measure(run, version, loaded, forgotten, unseen, size, say), "seconds": seconds}
    return {
        "run": str(run), "quick": quick, "recipe": str(size.recipe_path), "train_instances": len(base_set),
        **rows,
        "forgotten_users": forgotten_users, "forgotten_instances": len(forgotten),
        "noisy_interactions": [{"user": e.user, "item": e.items[0]} for e in events if e.type == "remove_interactions"],
        "edits": record.get("edits"), "solver": record.get("solver"),
        "update_to_retrain_seconds": update_seconds / retrain_seconds if retrain_seconds else None,
        "seconds": time.perf_counter() - t_start,
    }
