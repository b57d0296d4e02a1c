"""Generation, ranking and classification metrics on hand-computed examples."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from rec_eraser.evaluation import (
    auc,
    classification_metrics,
    expected_hit_rate,
    generation_metrics,
    random_baseline,
    rank_bounds,
    ranking_metrics,
)


def test_generation_metrics_three_prompts_one_invalid() -> None:
    candidates = [["Alien", "Aliens", "Heat"], ["Toy Story", "Heat", "Fargo"], ["Up", "Fargo", "Casino"]]
    answers = ["Aliens.", "I'd say Fargo or Heat", "Casino"]  # hit, invalid (two named), valid miss
    out = generation_metrics(answers, candidates, [1, 2, 0])
    assert out == {"hit@1": 1 / 3, "valid_ratio": 2 / 3, "hit@1_over_valid": 1 / 2, "n": 3}


def test_generation_metrics_no_valid_answer_and_errors() -> None:
    out = generation_metrics(["?", "none"], [["A", "B"], ["A", "B"]], [0, 1])
    assert out == {"hit@1": 0.0, "valid_ratio": 0.0, "hit@1_over_valid": None, "n": 2}
    with pytest.raises(ValueError, match="no prompts"):
        generation_metrics([], [], [])
    with pytest.raises(ValueError, match="targets"):
        generation_metrics(["A"], [["A", "B"]], [0, 1])
    with pytest.raises(ValueError, match="outside its 2 candidates"):
        generation_metrics(["A"], [["A", "B"]], [2])


def test_ranking_metrics_hand_computed() -> None:
    scores = np.array(
        [
            [0.1, 0.9, 0.5, 0.3, 0.2, 0.0, -1.0],  # target 2 (0.5): one higher -> rank 2
            [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # target 5 (2.0): rank 6, outside top 5, inside top 10
            [0.0, 0.0, 3.0, 0.0, 0.0, 0.0, -np.inf],  # target 2: rank 1
        ]
    )
    targets = np.array([2, 5, 2])
    assert rank_bounds(scores, targets)[1].tolist() == [2, 6, 1]
    out = ranking_metrics(scores, targets)
    assert out["n"] == 3
    assert out["hit@1"] == pytest.approx(1 / 3)
    assert out["hit@5"] == pytest.approx(2 / 3)
    assert out["hit@10"] == pytest.approx(1.0)
    # NDCG with one relevant item: 1/log2(rank+1) if rank <= k: ranks 2, 6, 1
    assert out["ndcg@5"] == pytest.approx((1 / math.log2(3) + 0 + 1) / 3)
    assert out["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(7) + 1) / 3)
    assert out["ndcg@5"] == pytest.approx((0.6309297535714575 + 1) / 3)
    assert out["mrr"] == pytest.approx((1 / 2 + 1 / 6 + 1) / 3)


def test_ties_count_as_the_expectation_over_a_random_order() -> None:
    constant = np.array([[1.0, 1.0, 1.0, 1.0]])
    assert [b.tolist() for b in rank_bounds(constant, np.array([0]))] == [[1], [4]]
    out = ranking_metrics(constant, np.array([0]))  # rank uniform on 1..4
    assert out["hit@1"] == 0.25 and out["hit@5"] == 1.0
    assert out["ndcg@5"] == pytest.approx(np.mean([1 / math.log2(r + 1) for r in range(1, 5)]))
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    partial = np.array([[2.0, 1.0, 2.0, 0.0]])  # target 0 ties with candidate 2
    assert ranking_metrics(partial, np.array([0]))["hit@1"] == 0.5  # rank 1 or 2
    assert ranking_metrics(partial, np.array([0]))["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert ranking_metrics(partial, np.array([1]))["hit@1"] == 0.0  # no tie: rank 3 either way


def test_expected_hit_rate_closed_form_equals_the_mean_over_tie_orders() -> None:
    rng = np.random.default_rng(0)
    best = rng.integers(1, 30, size=50)
    worst = best + rng.integers(0, 30, size=50)
    for k in (1, 5, 10, 40):
        by_enumeration = np.mean([np.mean(np.arange(b, w + 1) <= k) for b, w in zip(best, worst)])
        assert expected_hit_rate(best, worst, k) == pytest.approx(by_enumeration)


def test_ranking_metrics_nan_counts_as_worst_and_errors() -> None:
    scores = np.array([[np.nan, 0.0, -1.0]])
    assert [b.tolist() for b in rank_bounds(scores, np.array([0]))] == [[3], [3]]
    assert [b.tolist() for b in rank_bounds(np.full((1, 3), np.nan), np.array([1]))] == [[1], [3]]
    with pytest.raises(ValueError, match=r"\[n, c\]"):
        ranking_metrics(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match="integer indices"):
        ranking_metrics(np.zeros((1, 3)), np.array([3]))
    with pytest.raises(ValueError, match="no prompts"):
        ranking_metrics(np.zeros((0, 3)), np.array([], dtype=int))


def test_constant_scores_equal_the_random_baseline() -> None:
    counts = [1, 3, 12, 21]
    scores = np.full((len(counts), max(counts)), -np.inf)  # -inf pads the shorter candidate lists
    for row, c in enumerate(counts):
        scores[row, :c] = 0.0
    out = ranking_metrics(scores, np.zeros(len(counts), dtype=int))
    assert out == pytest.approx(random_baseline(counts))


def test_auc_rank_sum_hand_computed_and_ties() -> None:
    labels = np.array([1, 0, 1, 0])
    assert auc(np.array([0.9, 0.5, 0.6, 0.7]), labels) == 0.75  # pairs: 0.9>0.5, 0.9>0.7, 0.6>0.5, 0.6<0.7
    # ties count half: positives {1, 2}, negatives {1, 0}: (1=1 half) (1>0) (2>1) (2>0) -> 3.5/4
    assert auc(np.array([1.0, 1.0, 2.0, 0.0]), labels) == 0.875
    assert auc(np.array([3.0, 3.0, 3.0, 3.0]), labels) == 0.5
    assert auc([0.2, 0.1], [1, 0]) == 1.0  # plain lists work
    assert math.isnan(auc(np.array([0.3, 0.4]), np.array([0, 0])))
    assert math.isnan(auc(np.array([np.nan, 0.4]), np.array([1, 0])))  # a diverged model: undefined, no error
    with pytest.raises(ValueError, match="0 or 1"):
        auc(np.array([0.3, 0.4]), np.array([1, 2]))
    with pytest.raises(ValueError, match="one length"):
        auc(np.array([0.3, 0.4]), np.array([1]))


def test_auc_equals_pairwise_count_on_random_tied_scores() -> None:
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 200).astype(float), rng.integers(0, 2, 200)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg))
    assert auc(scores, labels) == pytest.approx(pairwise, abs=1e-12)


def test_classification_metrics() -> None:
    out = classification_metrics(np.array([0.9, 0.5, 0.6, 0.7]), np.array([1, 0, 1, 0]))
    assert out == {"auc": 0.75, "n": 4, "positives": 2}
    assert classification_metrics(np.array([0.1, 0.2]), np.array([1, 1])) == {"auc": None, "n": 2, "positives": 2}


def test_random_baseline_matches_brute_force_over_all_permutations() -> None:
    c = 4
    ranks = [perm.index(0) + 1 for perm in itertools.permutations(range(c))]  # candidate 0 is the target
    assert len(ranks) == 24

    def mean(f: Callable[[int], float]) -> float:
        return sum(f(r) for r in ranks) / len(ranks)

    out = random_baseline([c])
    assert out["hit@1"] == pytest.approx(mean(lambda r: r <= 1)) == pytest.approx(1 / 4)
    assert out["hit@5"] == pytest.approx(1.0)
    assert out["ndcg@5"] == pytest.approx(mean(lambda r: 1 / math.log2(r + 1) if r <= 5 else 0.0))
    assert out["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)) / 4)
    assert out["ndcg@10"] == pytest.approx(out["ndcg@5"])
    assert out["mrr"] == pytest.approx(mean(lambda r: 1 / r)) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert out["n"] == 1
