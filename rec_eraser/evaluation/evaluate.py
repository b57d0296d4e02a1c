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
from pathlib import Path
from typing import Any

from rec_eraser.tasks.base import Tick
from rec_eraser.tasks.prepare import load_instances, load_manifest
from rec_eraser.tasks.registry import task_of
from rec_eraser.training.train import LoadedModel, load_version
from rec_eraser.training.versions import resolve_version


def evaluate_version(
    run_dir: Path | str,
    version: str | None = None,
    split: str = "test",
    limit: int | None = None,
    generate: bool = True,
    loaded: LoadedModel | None = None,
    tick: Tick | None = None,
    rank: bool = True,
) -> dict[str, Any]:
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
    result.update(task_of(task).evaluate(run_dir, loaded, instances, train, generate=generate, rank=rank, tick=tick))
    result["seconds"] = time.perf_counter() - t0
    return result
