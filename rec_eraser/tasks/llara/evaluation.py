"""How a LLaRA adapter is measured: each candidate's likelihood as its score (ranking), and
optionally a greedy answer matched to the candidates' titles (generation)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.evaluation.baselines import encoder_baseline, popularity_baseline, random_baseline
from rec_eraser.evaluation.metrics import generation_metrics, ranking_metrics
from rec_eraser.evaluation.unlearning import top1_agreement
from rec_eraser.tasks.base import Task, Tick
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.llara.prompts import TASK
from rec_eraser.tasks.prepare import load_titles
from rec_eraser.training.scoring import candidate_scores, candidate_scores_and_losses, generate_answers
from rec_eraser.training.train import ENCODER_DIR


def _targets(instances: Sequence[Instance]) -> np.ndarray:
    return np.array([z.candidates.index(z.target_item) for z in instances])


def _popularity(train: Sequence[Instance], test: Sequence[Instance]) -> dict[str, float]:
    return popularity_baseline(
        Counter(z.target_item for z in train), [list(z.candidates) for z in test], _targets(test)
    )


def _generation(answers: list[str], instances: Sequence[Instance], titles: dict[str, str]) -> dict[str, float]:
    return generation_metrics(
        answers, [[titles[c] for c in z.candidates] for z in instances], _targets(instances).tolist()
    )


class LLaRA(Task):
    name = TASK
    main_metric = "hit@1"
    agreement_kind = "top1_agreement"
    agreement_words = "top-1 agreement"
    uses_titles = True

    def scores_and_losses(
        self, loaded: Any, instances: Sequence[Instance], titles: dict[str, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        return candidate_scores_and_losses(loaded, list(instances), titles)  # one pass per prompt

    def answers(self, loaded: Any, instances: Sequence[Instance]) -> list[str] | None:
        return generate_answers(loaded, list(instances))

    def utility(
        self,
        scores: np.ndarray,
        instances: Sequence[Instance],
        titles: dict[str, str],
        answers: list[str] | None = None,
    ) -> dict[str, float | None]:
        ranking = ranking_metrics(scores, _targets(instances))
        utility: dict[str, float | None] = {
            "hit@1": ranking["hit@1"],
            "ndcg@10": ranking["ndcg@10"],
            "gen_hit@1": None,
            "valid_ratio": None,
        }
        if answers is not None:
            gen = _generation(answers, instances, titles)
            utility.update({"gen_hit@1": gen["hit@1"], "valid_ratio": gen["valid_ratio"]})
        return utility

    def agreement(self, a: np.ndarray, b: np.ndarray) -> float:
        return top1_agreement(a, b)

    def simple_baseline(self, train: Sequence[Instance], test: Sequence[Instance]) -> dict[str, Any]:
        return {"name": "popularity", "value": _popularity(train, test)["hit@1"]}

    def evaluate(
        self,
        run_dir: Path,
        loaded: Any,
        instances: Sequence[Instance],
        train: Sequence[Instance],
        generate: bool = True,
        rank: bool = True,
        tick: Tick | None = None,
    ) -> dict[str, Any]:
        titles = load_titles(run_dir)
        targets = _targets(instances)
        result: dict[str, Any] = {}
        if rank:
            scores = candidate_scores(loaded, list(instances), titles, tick)
            result.update({k: v for k, v in ranking_metrics(scores, targets).items() if k != "n"})
        if generate:
            gen = _generation(generate_answers(loaded, list(instances), tick=tick), instances, titles)
            result.update(
                {
                    "gen_hit@1": gen["hit@1"],
                    "valid_ratio": gen["valid_ratio"],
                    "gen_hit@1_over_valid": gen["hit@1_over_valid"],
                }
            )
        candidates = [list(z.candidates) for z in instances]
        result["baselines"] = {
            "random": random_baseline([len(c) for c in candidates]),
            "popularity": _popularity(train, instances),
        }
        encoder = getattr(loaded, "item_encoder", None)  # a version's retrained encoder, else the run's
        if encoder is None and (run_dir / ENCODER_DIR).is_dir():
            from rec_eraser.encoders.sasrec import ItemEncoder  # torch-heavy, and only runs with item tokens have one

            encoder = ItemEncoder.load(run_dir / ENCODER_DIR)
        if encoder is not None and encoder.model is not None:
            result["baselines"]["sasrec"] = encoder_baseline(
                encoder, [list(z.history_items) for z in instances], candidates, targets
            )
        return result
