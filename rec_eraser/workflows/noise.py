"""``rec-eraser suggest-noise``: rank a version's training interactions by how noisy the adapter finds them.

QM and RC requests need someone to know which interactions are noise. This ranks every
interaction a version's training instances were built from (a (user, item) pair, as a history
item or a target) by one of two scores the adapter gives its instances, averaged over the
instances the interaction appears in:

- ``loss``: the instance's training loss; noise the adapter could not fit scores high;
- ``self_influence``: gᵀ(F + λI)⁻¹g, the instance's gradient through the damped empirical
  Fisher of the default update (its 64-instance sample and damping rule); an instance that
  pulls the parameters against the rest scores high (Koh & Liang's self-influence, with the
  curvature the update itself uses);
- ``leave_out``: how much an instance's loss falls when the interaction is left out of its
  prompt's history (one forward pass per instance and history item), averaged over the
  instances whose history holds it: an injected item the adapter finds misleading scores high.
  Interactions that are only targets get no such score and rank last (it is a score for
  query modification, not for a wrong label or target).

The top K become a ready events file: one ``remove_interactions`` event per user, or with
``correct=True`` on TALLRec one ``correct_label`` per interaction, ranked among the instances'
targets only (its label flipped; LLaRA's right target cannot be guessed, so it has no corrections). Given the
events that introduced known noise (``truth``: the benchmark's corruption writes them), the
result also holds precision@K and recall@K of each score and of a seeded random ranking.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec_eraser.core import EmpiricalFisher, InfluenceEngine
from rec_eraser.core.curvature import deterministic_mode
from rec_eraser.errors import RecEraserError
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.rewrite import PromptContext, without_items
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.model import rec_loss
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import load_version
from rec_eraser.workflows.curvature_cache import instance_key
from rec_eraser.workflows.events import Event, read_events
from rec_eraser.workflows.progress import Say
from rec_eraser.workflows.registry import Registry
from rec_eraser.workflows.unlearn import DEFAULT_SOLVER

SCORES = ("self_influence", "loss", "leave_out")
#: instances whose gradients are computed together (memory: this many rows of the adapter's size)
_CHUNK = 16


class NoiseError(RecEraserError):
    """A request suggest-noise cannot answer (an unknown score, a correction the task cannot guess)."""


Pair = tuple[str, str]  # (user, item)


def interactions_of(training_set: Sequence[Instance]) -> dict[Pair, list[int]]:
    """Each (user, item) pair the instances were built from -> the indices of the instances holding it."""
    held: dict[Pair, list[int]] = defaultdict(list)
    for i, z in enumerate(training_set):
        for item in {s.item for s in z.interactions}:
            held[(z.user, item)].append(i)
    return dict(held)


def self_influence(loaded: Any, training_set: Sequence[Instance], say: Say) -> np.ndarray:
    """gᵀ(F + λI)⁻¹g per instance, F the default update's damped empirical Fisher at the rule's λ
    (its sample drawn as the update draws it). An instance of the sample is scored against the
    Fisher without its own row (Sherman–Morrison: s/(1 − s/m)), else it would damp itself."""
    encoded = [encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length) for z in training_set]
    engine = InfluenceEngine(loaded.model, rec_loss(), encoded, collate, curvature="ggn", solver=DEFAULT_SOLVER)
    key_of = {id(e): instance_key(z) for e, z in zip(encoded, training_set)}
    engine.sample_key = lambda e: key_of[id(e)]
    with deterministic_mode(loaded.model):
        sample = engine.curvature_samples([])
        fisher = EmpiricalFisher.from_samples(loaded.model, engine.loss_fn, engine.space, sample, collate)
        damping, _, _ = engine.fisher_damping(fisher)
        in_sample = {id(e) for e in sample}
        out = np.empty(len(encoded))
        for start in range(0, len(encoded), _CHUNK):
            chunk = encoded[start : start + _CHUNK]
            rows = EmpiricalFisher.from_samples(loaded.model, engine.loss_fn, engine.space, chunk, collate).gradients
            for j, g in enumerate(rows):
                value = float(torch.dot(g, fisher.solve(g, damping)))
                out[start + j] = value / (1.0 - value / fisher.size) if id(chunk[j]) in in_sample else value
            say(f"self-influence: {min(start + _CHUNK, len(encoded))}/{len(encoded)} instances")
    return out


def leave_out(loaded: Any, training_set: Sequence[Instance], ctx: PromptContext, say: Say) -> dict[Pair, float]:
    """(user, item) -> the mean fall of the loss of the instances whose history holds it when it is
    left out of that history (the instance's loss minus the rewritten instance's)."""
    variants, owners = [], []
    for i, z in enumerate(training_set):
        for item in sorted({s.item for s in z.interactions[:-1]} - {z.target_item}):
            rewritten = without_items(z, {item}, ctx)
            if rewritten is not None and rewritten != z:
                variants.append(rewritten)
                owners.append((i, (z.user, item)))
    say(f"leave-out: {len(variants)} instances with one history item left out")
    base = instance_losses(loaded, training_set)
    altered = instance_losses(loaded, variants)
    falls: dict[Pair, list[float]] = defaultdict(list)
    for (i, pair), loss in zip(owners, altered):
        falls[pair].append(float(base[i] - loss))
    return {pair: float(np.mean(v)) for pair, v in falls.items()}


def _truth_pairs(path: Path | str) -> set[Pair]:
    events, problems = read_events(path)
    if problems:
        raise NoiseError(f"{path}: {problems[0]}")
    pairs: set[Pair] = set()
    for _, e in events:
        pairs.update((e.user, item) for item in (e.items or ((e.item,) if e.item else ())))
    return pairs


def precision_recall(ranking: Sequence[Pair], truth: set[Pair], ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """precision@K and recall@K of ``ranking`` against ``truth`` (restricted to the ranked pairs)."""
    reachable = truth & set(ranking)
    out = {}
    for k in ks:
        hits = len(set(ranking[:k]) & reachable)
        out[str(k)] = {"precision": hits / k, "recall": hits / len(reachable) if reachable else float("nan")}
    return out


def suggest_noise(
    run_dir: Path | str,
    top: int = 50,
    score: str = "self_influence",
    version: str | None = None,
    correct: bool = False,
    truth: Path | str | None = None,
    ks: Sequence[int] = (10, 50, 100),
    seed: int = 0,
    say: Say | None = None,
) -> dict[str, Any]:
    """The ``top`` interactions by ``score`` and their events (see the module docstring), JSON-ready."""
    say = say or (lambda _m: None)
    if score not in SCORES:
        raise NoiseError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    if top < 1:
        raise NoiseError(f"--top must be at least 1, got {top}")
    registry = Registry(run_dir)
    version = registry.check(version) if version else registry.current()
    task = registry.lineage(version)[-1]["task"]
    if correct and task != "tallrec":
        raise NoiseError(
            f"a {task} run's right target cannot be guessed from the adapter: suggest removals (drop --correct)"
        )
    truth_pairs = _truth_pairs(truth) if truth is not None else None
    training_set = registry.training_set(version)
    loaded = load_version(run_dir, version)
    held = interactions_of(training_set)
    say(f"scoring the {len(training_set)} training instances of {version}")
    per_instance = {"loss": instance_losses(loaded, training_set)}
    if score == "self_influence" or truth_pairs is not None:
        per_instance["self_influence"] = self_influence(loaded, training_set, say)
    targets = {(z.user, z.target_item): z for z in training_set}
    # a correction is of an instance's target: rank those alone then, so that --top of them come out
    pairs = sorted(p for p in held if not correct or p in targets)
    rankings: dict[str, list[Pair]] = {}
    values: dict[str, dict[Pair, float]] = {}
    for name, scores in per_instance.items():
        values[name] = {p: float(np.mean(scores[held[p]])) for p in pairs}
    if score == "leave_out" or truth_pairs is not None:
        falls = leave_out(loaded, training_set, PromptContext.of_run(run_dir), say)
        values["leave_out"] = {p: falls.get(p, -np.inf) for p in pairs}  # targets only: last
    for name, by_pair in values.items():
        rankings[name] = sorted(pairs, key=lambda p, v=by_pair: (-v[p], p))
    chosen = rankings[score][:top]
    events = _events(chosen, targets, version, correct)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "version": version,
        "score": score,
        "interactions": len(pairs),
        "suggested": [
            {"user": u, "item": i, "score": values[score][(u, i)] if np.isfinite(values[score][(u, i)]) else None}
            for u, i in chosen
        ],
        "events": [e.to_dict() for e in events],
    }
    if truth_pairs is not None:
        rng = np.random.default_rng(seed)
        rankings["random"] = [pairs[i] for i in rng.permutation(len(pairs))]
        result["truth"] = {
            "noisy_interactions": len(truth_pairs & set(pairs)),
            "base_rate": len(truth_pairs & set(pairs)) / len(pairs) if pairs else float("nan"),
            **{name: precision_recall(ranking, truth_pairs, ks) for name, ranking in rankings.items()},
        }
    return result


def _events(chosen: list[Pair], targets: dict[Pair, Instance], version: str, correct: bool) -> list[Event]:
    if correct:
        return [
            Event(
                f"suggest:{version}:correct_label:{user}:{item}",
                "correct_label",
                user,
                item=item,
                label="No" if targets[(user, item)].label else "Yes",
            )
            for user, item in chosen
        ]
    by_user: dict[str, list[str]] = defaultdict(list)
    for user, item in chosen:
        by_user[user].append(item)
    # the items in the id: a later suggestion with other items is another request, not a conflicting one
    return [
        Event(
            f"suggest:{version}:remove_interactions:{user}:{hashlib.sha256(' '.join(sorted(items)).encode()).hexdigest()[:12]}",
            "remove_interactions",
            user,
            items=tuple(items),
        )
        for user, items in by_user.items()
    ]


def events_jsonl(result: dict[str, Any]) -> str:
    """The suggested events as an events file (JSON Lines)."""
    return "".join(json.dumps(e, ensure_ascii=True) + "\n" for e in result["events"])
