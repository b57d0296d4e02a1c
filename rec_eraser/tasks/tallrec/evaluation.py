"""How a TALLRec adapter is measured: the Yes − No logit as a score, AUC as utility."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.evaluation.baselines import like_counts, like_rate_baseline, random_auc
from rec_eraser.evaluation.metrics import classification_metrics
from rec_eraser.evaluation.unlearning import score_correlation
from rec_eraser.tasks.base import Task, Tick
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.tallrec.prompts import TASK
from rec_eraser.training.scoring import yes_no_scores, yes_no_scores_and_losses


def _labels(instances: Sequence[Instance]) -> np.ndarray:
    return np.array([z.label for z in instances])


def _like_rate(train: Sequence[Instance], test: Sequence[Instance]) -> dict[str, float]:
    likes = like_counts([z.target_item for z in train], [z.label for z in train])
    return like_rate_baseline(likes, [z.target_item for z in test], _labels(test))


class TallRec(Task):
    name = TASK
    main_metric = "auc"
    agreement_kind = "score_correlation"
    agreement_words = "score correlation"

    def scores_and_losses(
        self, loaded: Any, instances: Sequence[Instance], titles: dict[str, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        return yes_no_scores_and_losses(loaded, list(instances))  # both from one forward pass

    def utility(
        self,
        scores: np.ndarray,
        instances: Sequence[Instance],
        titles: dict[str, str],
        answers: list[str] | None = None,
    ) -> dict[str, float | None]:
        return {"auc": classification_metrics(scores, _labels(instances))["auc"]}

    def agreement(self, a: np.ndarray, b: np.ndarray) -> float:
        return score_correlation(a, b)

    def simple_baseline(self, train: Sequence[Instance], test: Sequence[Instance]) -> dict[str, Any]:
        return {"name": "like_rate", "value": _like_rate(train, test)["auc"]}

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
        scores = yes_no_scores(loaded, list(instances), tick=tick)
        result: dict[str, Any] = {
            k: v for k, v in classification_metrics(scores, _labels(instances)).items() if k != "n"
        }
        result["baselines"] = {"random": {"auc": random_auc()}, "like_rate": _like_rate(train, instances)}
        return result
