"""How an unlearned model compares with Retrain and with never-seen data (pure numpy).

- :func:`membership_inference_auc`: a loss-based membership attack, forgotten instances
  (members, label 1) against instances never trained on (label 0), scored by −loss: 0.5
  means the forgotten data looks like data the model never saw; near 1 it is still
  recognisably trained on.
- :func:`recovery`: (metric − corrupted) / (retrain − corrupted) for corrections (QM, RC):
  1 recovers all of what retraining on the corrected data recovers, 0 nothing.
- :func:`top1_agreement` (LLaRA) and :func:`score_correlation` (TALLRec): agreement of two
  models' predictions on the same prompts, read against Retrain's own seed-to-seed figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rec_eraser.evaluation.metrics import auc


def membership_inference_auc(forgotten_losses: Sequence[float], unseen_losses: Sequence[float]) -> float:
    """AUC of −loss separating forgotten (members) from never-seen instances (ties count half)."""
    forgotten, unseen = np.asarray(forgotten_losses, float), np.asarray(unseen_losses, float)
    if forgotten.size == 0 or unseen.size == 0:
        raise ValueError("membership inference needs at least one forgotten and one never-seen instance")
    scores = -np.concatenate([forgotten, unseen])
    labels = np.concatenate([np.ones(forgotten.size), np.zeros(unseen.size)])
    return auc(scores, labels)


def recovery(metric: float | None, corrupted: float | None, retrain: float | None) -> float | None:
    """(metric − corrupted) / (retrain − corrupted); None when retraining changed nothing or a figure is missing (None or NaN)."""
    if any(x is None or not np.isfinite(x) for x in (metric, corrupted, retrain)):
        return None
    gap = retrain - corrupted
    return None if gap == 0 else (metric - corrupted) / gap


def top1_agreement(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Share of prompts on which two ``[n, candidates]`` score matrices rank the same candidate first."""
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"expected two equal non-empty [n, candidates] matrices, got {a.shape} and {b.shape}")
    # a NaN score (a diverged model) never ranks first
    a, b = np.where(np.isnan(a), -np.inf, a), np.where(np.isnan(b), -np.inf, b)
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def score_correlation(scores_a: Sequence[float], scores_b: Sequence[float]) -> float:
    """Pearson correlation of two models' scores on the same prompts."""
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("score correlation needs two equal-length score vectors of at least 2 prompts")
    return float(np.corrcoef(a, b)[0, 1])
