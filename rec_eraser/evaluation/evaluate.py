"""Evaluate an adapter version of a run on its test (or validation) prompts, beside baselines
computed on the very same prompts and candidates.

LLaRA: ranking mode (every candidate scored by its mean log-likelihood as the response:
``hit@1``, ``hit@5``, ``ndcg@5``, ``ndcg@10``, ``mrr``) and, unless turned off, generation mode
(greedy answer matched to the candidate titles: ``gen_hit@1`` over all prompts,
``valid_ratio``, and LLaRA's own hits-over-valid figure labelled ``gen_hit@1_over_valid``).
TALLRec: ``auc`` of logit(Yes) − logit(No). Baselines: random choice (an exact expectation),
item popularity and, for runs with item tokens, the SASRec item encoder alone (LLaRA); random
(0.5) and the target item's training like-rate (TALLRec).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.evaluation.baselines import (encoder_baseline, like_counts, like_rate_baseline, popularity_baseline, random_auc,
                                             random_baseline)
from rec_eraser.evaluation.metrics import classification_metrics, generation_metrics, ranking_metrics
from rec_eraser.tasks.prepare import load_instances, load_manifest, load_titles
from rec_eraser.training.scoring import candidate_scores, generate_answers, yes_no_scores
from rec_eraser.training.train import ENCODER_DIR, LoadedModel, load_version, resolve_version

Tick = Callable[[int], None]


def evaluate_version(run_dir: Path | str, version: str | None = None, split: str = "test", limit: int | None = None,
                     generate: bool = True, loaded: LoadedModel | None = None, tick: Tick | None = None, rank: bool = True) -> dict[str, Any]:
    """Metrics of ``version`` (default: the newest) on ``split`` (the first ``limit`` prompts).

    LLaRA runs the ranking mode unless ``rank`` is False and the generation mode unless
    ``generate`` is False (at least one of them).
    """
    if not (rank or generate):
        raise ValueError("evaluate: turn on ranking, generation, or both")
    run_dir = Path(run_dir)
    task = load_manifest(run_dir)["task"]
    if loaded is None or version is None:  # a loaded model outside the registry (an oracle) keeps its label
        version = resolve_version(run_dir, version)
    instances = load_instances(run_dir, split)[:limit]
    train = load_instances(run_dir, "train")
    loaded = loaded or load_version(run_dir, version)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"version": version, "split": split, "task": task, "n": len(instances)}
    if task == "llara":
        titles = load_titles(run_dir)
        targets = np.array([z.candidates.index(z.target_item) for z in instances])
        if rank:
            scores = candidate_scores(loaded, instances, titles, tick)
            result.update({k: v for k, v in ranking_metrics(scores, targets).items() if k != "n"})
        if generate:
            answers = generate_answers(loaded, instances, tick=tick)
            gen = generation_metrics(answers, [[titles[c] for c in z.candidates] for z in instances], targets.tolist())
            result.update({"gen_hit@1": gen["hit@1"], "valid_ratio": gen["valid_ratio"], "gen_hit@1_over_valid": gen["hit@1_over_valid"]})
        popularity = Counter(z.target_item for z in train)
        candidates = [list(z.candidates) for z in instances]
        result["baselines"] = {
            "random": random_baseline([len(c) for c in candidates]),
            "popularity": popularity_baseline(popularity, candidates, targets),
        }
        if (run_dir / ENCODER_DIR).is_dir():
            from rec_eraser.encoders.sasrec import ItemEncoder

            encoder = ItemEncoder.load(run_dir / ENCODER_DIR)
            if encoder.model is not None:
                result["baselines"]["sasrec"] = encoder_baseline(encoder, [list(z.history_items) for z in instances], candidates, targets)
    else:
        labels = np.array([z.label for z in instances])
        result.update({k: v for k, v in classification_metrics(yes_no_scores(loaded, instances, tick=tick), labels).items() if k != "n"})
        likes = like_counts([z.target_item for z in train], [z.label for z in train])
        result["baselines"] = {
            "random": {"auc": random_auc()},
            "like_rate": like_rate_baseline(likes, [z.target_item for z in instances], labels),
        }
    result["seconds"] = time.perf_counter() - t0
    return result
