"""The item encoder's membership test: per-user losses by hand, and the study's bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec_eraser.data import load_dataset
from rec_eraser.encoders.sasrec_train import train_sasrec, training_sequences
from rec_eraser.tasks.prepare import first_users
from rec_eraser.workflows.encoder_membership import encoder_membership, user_losses


@pytest.fixture(scope="module")
def small():
    return first_users(load_dataset("ml-100k"), 40)


def test_a_users_loss_is_the_mean_next_item_cross_entropy_over_their_sequence(small):
    encoder = train_sasrec(small, epochs=1, seed=0)
    sequences = training_sequences(small)
    user = next(u for u, s in sequences.items() if 3 <= len(s) <= encoder.model.max_len)
    seq = sequences[user]
    by_hand = []
    for t in range(1, len(seq)):  # the scores after each prefix, as ItemEncoder.next_item_scores gives them
        logits = encoder.next_item_scores([seq[:t]])[0]
        by_hand.append(float(-torch.log_softmax(logits, dim=0)[encoder.indices([seq[t]])[0]]))
    losses = user_losses(encoder, {user: seq}, set(encoder.item_ids))
    assert losses[user] == pytest.approx(np.mean(by_hand), rel=1e-5)
    # an item the encoder is told it does not know drops the transitions into and out of it
    dropped = user_losses(encoder, {user: seq}, set(encoder.item_ids) - {seq[1]})
    assert dropped[user] != pytest.approx(losses[user])


def test_the_study_trains_with_and_without_the_forget_users_and_reports_both(small):
    result = encoder_membership(small, forget_fraction=0.25, holdout_fraction=0.25, epochs=1, permutations=50)
    assert result["users"] == 40 and result["forget_users"] == 10 and result["holdout_users"] == 10
    for name in ("with", "without"):
        assert 0.0 <= result[name]["membership_auc"] <= 1.0
        assert result[name]["forget_loss"] > 0 and result[name]["holdout_loss"] > 0
    assert 0.0 < result["with"]["p_value"] <= 1.0
    assert result["auc_drop"] == pytest.approx(result["with"]["membership_auc"] - result["without"]["membership_auc"])
    assert result["items_only_forget_users_had"] >= 0 and set(result["train_seconds"]) == {"with", "without"}
    from rec_eraser.workflows.encoder_membership import markdown

    table = markdown(result)
    assert f"{result['with']['membership_auc']:.3f}" in table and "trained without the forget users" in table
