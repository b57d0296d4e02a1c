"""The unlearning metrics on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from rec_eraser.evaluation.unlearning import membership_inference_auc, recovery, score_correlation, top1_agreement


def test_membership_auc_by_hand():
    # members' losses 0.1, 0.5; never-seen 0.3, 0.9: pairs (member lower loss wins):
    # (0.1 vs 0.3) win, (0.1 vs 0.9) win, (0.5 vs 0.3) loss, (0.5 vs 0.9) win -> 3/4
    assert membership_inference_auc([0.1, 0.5], [0.3, 0.9]) == pytest.approx(0.75)
    assert membership_inference_auc([1.0, 1.0], [1.0]) == pytest.approx(0.5)  # ties count half
    assert membership_inference_auc([0.1], [2.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        membership_inference_auc([], [1.0])


def test_recovery_by_hand():
    assert recovery(0.44, corrupted=0.40, retrain=0.45) == pytest.approx(0.8)
    assert recovery(0.38, corrupted=0.40, retrain=0.45) == pytest.approx(-0.4)
    assert recovery(0.5, corrupted=0.4, retrain=0.4) is None


def test_agreements_by_hand():
    a = np.array([[0.0, 1.0, 0.5], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    b = np.array([[0.0, 2.0, 0.1], [0.0, 1.0, 0.5], [1.0, 0.0, 3.5]])
    assert top1_agreement(a, b) == pytest.approx(2 / 3)
    assert score_correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert score_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        top1_agreement(a, b[:2])


def test_missing_figures_give_no_recovery_and_nan_scores_never_rank_first():
    assert (
        recovery(None, 0.5, 0.7) is None
        and recovery(0.6, float("nan"), 0.7) is None
        and recovery(0.6, 0.5, None) is None
    )
    assert recovery(0.6, 0.5, 0.7) == pytest.approx(0.5)
    diverged = np.array([[np.nan, 0.1, 0.2], [np.nan, np.nan, np.nan]])
    healthy = np.array([[0.0, 0.1, 0.9], [0.5, 0.1, 0.2]])
    # row 0: the NaN is not the top; row 1: all NaN ranks the first candidate, as the healthy model does
    assert top1_agreement(diverged, healthy) == pytest.approx(1.0)
