"""Baselines on the same test prompts and candidates: random choice, item popularity, item like-rate.

* :func:`random_baseline`: the **exact expectation** of the ranking metrics when the
  candidates are put in a uniformly random order (equivalently, a uniformly random choice for
  ``hit@1``) — no draw, so no seed and no sampling noise.
* :func:`popularity_scores` / :func:`popularity_baseline`: each candidate scored by how often
  it occurs among the training interactions, fed to :func:`~rec_eraser.evaluation.metrics.ranking_metrics`.
* :func:`encoder_scores` / :func:`encoder_baseline` (LLaRA runs with item tokens): the run's
  collaborative item encoder (SASRec) alone ranks the candidates by its next-item score after
  the prompt's history: the signal the item-embedding tokens put into the prompt, and
  LLaRA's own sequential-recommender baseline.
* :func:`item_like_rate_scores` / :func:`like_rate_baseline` (TALLRec): the target item's share
  of "liked" labels among the training instances, a non-trivial AUC baseline;
  :func:`random_auc` = 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from rec_eraser.evaluation.metrics import HIT_KS, NDCG_KS, classification_metrics, ranking_metrics


def random_baseline(candidate_counts: Sequence[int]) -> dict[str, Any]:
    """Expected ranking metrics of a uniformly random order of each prompt's candidates.

    The target's rank r is uniform on 1..c for a prompt with c candidates, so (exactly):
    ``hit@k`` = mean over prompts of min(k, c) / c (``hit@1`` = mean of 1/c, the expected
    HitRatio@1 of a random valid choice); ``ndcg@k`` = mean over prompts of
    (Σ_{r=1}^{min(k, c)} 1/log2(r + 1)) / c; ``mrr`` = mean of (Σ_{r=1}^{c} 1/r) / c.
    The keys are those of :func:`~rec_eraser.evaluation.metrics.ranking_metrics`.

    Args:
        candidate_counts: the number of candidates c ≥ 1 of each prompt.
    """
    counts = np.asarray(candidate_counts, dtype=int)
    if counts.ndim != 1 or not counts.size or counts.min() < 1:
        raise ValueError("candidate_counts must be a non-empty list of counts ≥ 1")
    out: dict[str, Any] = {}
    for k in HIT_KS:
        out[f"hit@{k}"] = float(np.mean(np.minimum(k, counts) / counts))
    for k in NDCG_KS:
        dcg = np.array([np.sum(1.0 / np.log2(np.arange(1, min(k, c) + 1) + 1.0)) for c in counts])
        out[f"ndcg@{k}"] = float(np.mean(dcg / counts))
    out["mrr"] = float(np.mean([np.sum(1.0 / np.arange(1, c + 1)) / c for c in counts]))
    out["n"] = int(counts.size)
    return out


def popularity_scores(train_item_counts: Mapping[str, int], candidates: Sequence[Sequence[str]]) -> np.ndarray:
    """``[n, c]`` scores: how often each candidate item occurs among the training interactions.

    Args:
        train_item_counts: item id -> number of training interactions with it (e.g. a
            ``collections.Counter``); items absent from it score 0.
        candidates: the candidate item ids of each prompt, in prompt order (one count c for all).
    """
    if not candidates or len({len(c) for c in candidates}) != 1:
        raise ValueError("candidates must be a non-empty list of equally long candidate lists")
    return np.array([[float(train_item_counts.get(item, 0)) for item in row] for row in candidates])


def popularity_baseline(
    train_item_counts: Mapping[str, int], candidates: Sequence[Sequence[str]], targets: Sequence[int]
) -> dict[str, Any]:
    """:func:`~rec_eraser.evaluation.metrics.ranking_metrics` of :func:`popularity_scores`.

    Popularity counts tie often (every unseen item scores 0, rare items share small counts);
    the project's one tie rule (the expectation over a random order of the tied candidates)
    neither rewards nor understates them.
    """
    return ranking_metrics(popularity_scores(train_item_counts, candidates), np.asarray(targets))


class NextItemScorer(Protocol):
    """What :func:`encoder_scores` needs of an item encoder (``rec_eraser.encoders.sasrec.ItemEncoder``)."""

    def indices(self, item_ids: Sequence[str]) -> list[int]: ...

    def next_item_scores(self, histories: Sequence[Sequence[str]]) -> Any: ...


def encoder_scores(
    encoder: NextItemScorer,
    histories: Sequence[Sequence[str]],
    candidates: Sequence[Sequence[str]],
    batch_size: int = 256,
) -> np.ndarray:
    """``[n, c]`` scores: the encoder's next-item score of each candidate after the prompt's history.

    Args:
        encoder: an item encoder with a sequence model (SASRec).
        histories: each prompt's history item ids, oldest first (non-empty).
        candidates: each prompt's candidate item ids, in prompt order (one count c for all).
    """
    if not candidates or len({len(c) for c in candidates}) != 1 or len(histories) != len(candidates):
        raise ValueError("need one history per prompt and equally long candidate lists")
    rows = []
    for start in range(0, len(histories), batch_size):
        scores = np.asarray(encoder.next_item_scores(histories[start : start + batch_size]), dtype=np.float64)
        columns = np.array([encoder.indices(list(c)) for c in candidates[start : start + batch_size]])
        rows.append(np.take_along_axis(scores, columns, axis=1))
    return np.concatenate(rows)


def encoder_baseline(
    encoder: NextItemScorer,
    histories: Sequence[Sequence[str]],
    candidates: Sequence[Sequence[str]],
    targets: Sequence[int],
) -> dict[str, Any]:
    """:func:`~rec_eraser.evaluation.metrics.ranking_metrics` of :func:`encoder_scores` (the same tie rule)."""
    return ranking_metrics(encoder_scores(encoder, histories, candidates), np.asarray(targets))


def like_counts(items: Sequence[str], labels: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Item id -> (liked, total) over training instances, from each instance's target item and 0/1 label."""
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} items but {len(labels)} labels")
    out: dict[str, tuple[int, int]] = {}
    for item, label in zip(items, labels):
        if label not in (0, 1):
            raise ValueError(f"label {label!r} of item {item!r} is not 0 or 1")
        liked, total = out.get(item, (0, 0))
        out[item] = (liked + int(label), total + 1)
    return out


def item_like_rate_scores(train_likes: Mapping[str, tuple[int, int]], items: Sequence[str]) -> np.ndarray:
    """``[n]`` scores: each target item's share of "liked" labels among the training instances.

    Args:
        train_likes: item id -> (liked, total) over the training instances whose target is
            that item (see :func:`like_counts`).
        items: the target item of each test instance.

    Returns:
        liked / total per item; 0.5 for an item never seen as a training target (or total 0).
    """
    out = np.empty(len(items))
    for k, item in enumerate(items):
        liked, total = train_likes.get(item, (0, 0))
        out[k] = liked / total if total else 0.5
    return out


def like_rate_baseline(
    train_likes: Mapping[str, tuple[int, int]], items: Sequence[str], labels: Sequence[int]
) -> dict[str, Any]:
    """:func:`~rec_eraser.evaluation.metrics.classification_metrics` of :func:`item_like_rate_scores`."""
    return classification_metrics(item_like_rate_scores(train_likes, items), np.asarray(labels))


def random_auc() -> float:
    """The AUC of scores independent of the labels: 0.5 in expectation (exactly, for constant scores)."""
    return 0.5
