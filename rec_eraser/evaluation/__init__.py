"""Evaluation: LLaRA generation and ranking metrics, TALLRec AUC, and the baselines they are compared with."""

from rec_eraser.evaluation.baselines import (
    encoder_baseline,
    encoder_scores,
    item_like_rate_scores,
    like_counts,
    like_rate_baseline,
    popularity_baseline,
    popularity_scores,
    random_auc,
    random_baseline,
)
from rec_eraser.evaluation.metrics import (
    auc,
    classification_metrics,
    expected_hit_rate,
    generation_metrics,
    match_answer,
    match_answers,
    normalize,
    rank_bounds,
    ranking_metrics,
)

__all__ = [
    "auc",
    "classification_metrics",
    "expected_hit_rate",
    "encoder_baseline",
    "encoder_scores",
    "generation_metrics",
    "item_like_rate_scores",
    "like_counts",
    "like_rate_baseline",
    "match_answer",
    "match_answers",
    "normalize",
    "popularity_baseline",
    "popularity_scores",
    "random_auc",
    "random_baseline",
    "rank_bounds",
    "ranking_metrics",
]
