"""Baselines: random (exact expectation), popularity, the item encoder alone, item like-rate."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from rec_eraser.evaluation import (
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


def test_random_baseline_over_mixed_candidate_counts() -> None:
    out = random_baseline([2, 21])
    assert out["hit@1"] == pytest.approx((1 / 2 + 1 / 21) / 2)
    assert out["hit@5"] == pytest.approx((1 + 5 / 21) / 2)
    assert out["hit@10"] == pytest.approx((1 + 10 / 21) / 2)
    dcg5 = sum(1 / math.log2(r + 1) for r in range(1, 6))
    dcg10 = sum(1 / math.log2(r + 1) for r in range(1, 11))
    two = (1 + 1 / math.log2(3)) / 2
    assert out["ndcg@5"] == pytest.approx((two + dcg5 / 21) / 2)
    assert out["ndcg@10"] == pytest.approx((two + dcg10 / 21) / 2)
    assert out["n"] == 2
    assert random_baseline([21] * 5)["hit@1"] == pytest.approx(1 / 21)
    with pytest.raises(ValueError):
        random_baseline([])
    with pytest.raises(ValueError):
        random_baseline([3, 0])


def test_popularity_scores_with_an_unseen_item() -> None:
    counts = Counter({"a": 5, "b": 2, "c": 2})
    candidates = [["a", "b", "z"], ["b", "c", "a"], ["z", "c", "b"]]
    assert popularity_scores(counts, candidates).tolist() == [[5, 2, 0], [2, 2, 5], [0, 2, 2]]
    assert popularity_scores({"a": 1}, [("a", "q")]).tolist() == [[1, 0]]  # plain dict, unseen -> 0
    with pytest.raises(ValueError, match="equally long"):
        popularity_scores(counts, [["a"], ["a", "b"]])


def test_popularity_baseline_ties() -> None:
    counts = Counter({"a": 5, "b": 2, "c": 2})
    candidates = [["a", "b", "z"], ["b", "c", "a"], ["z", "c", "b"]]
    targets = [0, 0, 0]  # a: rank 1; b: one higher (a) and a tie (c) -> rank 2 or 3; z (unseen): rank 3
    exp = popularity_baseline(counts, candidates, targets)  # the expectation over tie orders
    assert exp["hit@1"] == pytest.approx(1 / 3)
    assert exp["mrr"] == pytest.approx((1 + (1 / 2 + 1 / 3) / 2 + 1 / 3) / 3)
    assert exp["ndcg@5"] == pytest.approx((1 + (1 / math.log2(3) + 1 / 2) / 2 + 1 / 2) / 3)
    assert exp["n"] == 3


class ScoresByLastItem:
    """A next-item scorer over items a, b, c whose scores depend only on the history's last item."""

    items = ["a", "b", "c"]
    table = {"a": [0.0, 3.0, 1.0], "b": [2.0, 0.0, 5.0], "c": [4.0, 1.0, 0.0]}

    def indices(self, item_ids):
        return [self.items.index(i) for i in item_ids]

    def next_item_scores(self, histories):
        return np.array([self.table[h[-1]] for h in histories])


def test_encoder_scores_pick_each_candidate_column_after_its_history() -> None:
    histories = [["c", "a"], ["b"], ["a", "c"]]
    candidates = [["c", "b"], ["a", "c"], ["b", "a"]]
    scores = encoder_scores(ScoresByLastItem(), histories, candidates, batch_size=2)  # two batches
    assert scores.tolist() == [[1.0, 3.0], [2.0, 5.0], [1.0, 4.0]]
    out = encoder_baseline(ScoresByLastItem(), histories, candidates, targets=[1, 0, 1])
    assert out["hit@1"] == pytest.approx(2 / 3) and out["mrr"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    with pytest.raises(ValueError, match="one history per prompt"):
        encoder_scores(ScoresByLastItem(), histories[:2], candidates)


def test_item_like_rate_scores_and_baseline() -> None:
    train = like_counts(["a", "a", "b", "a"], [1, 0, 1, 1])
    assert train == {"a": (2, 3), "b": (1, 1)}
    scores = item_like_rate_scores(train, ["a", "b", "c"])
    assert scores.tolist() == pytest.approx([2 / 3, 1.0, 0.5])  # c unseen -> 0.5
    assert item_like_rate_scores({"a": (0, 0)}, ["a"]).tolist() == [0.5]
    # positives score 2/3 and 1, the negative 0.5: every pair ordered
    assert like_rate_baseline(train, ["a", "b", "c"], [1, 1, 0]) == {"auc": 1.0, "n": 3, "positives": 2}
    # positives 1 and 0.5, negative 2/3: one pair of two -> 0.5
    assert like_rate_baseline(train, ["a", "b", "c"], [0, 1, 1])["auc"] == 0.5
    with pytest.raises(ValueError, match="not 0 or 1"):
        like_counts(["a"], [2])
    with pytest.raises(ValueError, match="labels"):
        like_counts(["a"], [])


def test_random_auc() -> None:
    assert random_auc() == 0.5
    assert like_rate_baseline({}, ["x", "y", "z"], [1, 0, 1])["auc"] == random_auc()  # all unseen: constant 0.5
    assert np.isclose(random_auc(), 0.5)
