"""Pieces of the benchmarks that produce figures: checked on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rec_eraser.evaluation.metrics import auc
from rec_eraser.models.lm_loss import (
    IGNORE,
    first_response_logits,
    pad_collate,
    per_instance_response_loss,
    response_token_loss,
    sampled_response_gradient,
)


def test_auc_on_hand_computed_examples():
    labels = np.array([1, 0, 1, 0])
    assert auc(np.array([0.9, 0.1, 0.8, 0.2]), labels) == 1.0
    assert auc(np.array([0.1, 0.9, 0.2, 0.8]), labels) == 0.0
    # pairs (pos, neg): (0.9>0.5) (0.9>0.7) (0.6>0.5) (0.6<0.7) -> 3/4
    assert auc(np.array([0.9, 0.5, 0.6, 0.7]), labels) == 0.75
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5  # ties count half
    assert math.isnan(auc(np.array([0.3, 0.4]), np.array([1, 1])))


def test_response_loss_is_the_mean_of_per_instance_means_over_response_tokens():
    a = {"input_ids": torch.tensor([5, 6, 7, 8]), "labels": torch.tensor([IGNORE, IGNORE, 7, 8])}
    b = {"input_ids": torch.tensor([5, 6, 9]), "labels": torch.tensor([IGNORE, IGNORE, 9])}
    batch = pad_collate([a, b])
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    logits = torch.zeros(2, 4, 10)  # uniform predictions: every token costs log(10)
    logits[0, 2, 8] = 5.0  # instance 0 predicts its last token (8) confidently at position 2
    per = per_instance_response_loss(logits, batch)
    p8 = torch.softmax(logits[0, 2], -1)[8]
    assert torch.allclose(per[0], (math.log(10) - torch.log(p8)) / 2)
    assert torch.allclose(per[1], torch.tensor(math.log(10)))
    assert torch.allclose(response_token_loss(logits, batch), per.mean())
    # logits kept from the first position that predicts a response token (position 1) on give
    # the same losses, Yes/No readout position and sampled output gradients as every position's
    kept = logits[:, 1:]
    assert torch.allclose(per_instance_response_loss(kept, batch), per)
    assert torch.equal(first_response_logits(kept, batch), first_response_logits(logits, batch))
    full = sampled_response_gradient(logits, batch, torch.Generator().manual_seed(0))
    assert torch.allclose(sampled_response_gradient(kept, batch, torch.Generator().manual_seed(0)), full[:, 1:])
    assert full[:, 0].abs().sum() == 0  # nothing was lost: position 0 predicts a prompt token
    with pytest.raises(ValueError, match="cover 5 positions"):
        per_instance_response_loss(torch.zeros(2, 5, 10), batch)


def test_pcg_iterations_and_the_block_jacobi_ceiling_on_known_spectra():
    from rec_eraser.bench.solvers import block_jacobi_ceiling, pcg_iterations

    class Space:  # the two fields block_jacobi_ceiling reads
        names = ["m.q.lora_A.w", "m.q.lora_B.w", "m.v.lora_A.w"]
        numels = [2, 3, 4]

    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=gen, dtype=torch.float64))
    three_values = q @ torch.diag(torch.tensor([1.0, 1, 1, 5, 5, 5, 9, 9, 9], dtype=torch.float64)) @ q.T
    b = torch.randn(9, generator=gen, dtype=torch.float64)
    # CG ends in at most as many iterations as there are distinct eigenvalues
    assert pcg_iterations(three_values, b, lambda r: r, tol=1e-10) == 3
    # a block-diagonal matrix: exact blocks per module (q: 5, v: 4) invert it in one step,
    # exact blocks per tensor (2, 3, 4) do not, since q's A and B are coupled
    blocks = torch.zeros(9, 9, dtype=torch.float64)
    for lo, hi in ((0, 5), (5, 9)):
        m = torch.randn(hi - lo, hi - lo, generator=gen, dtype=torch.float64)
        blocks[lo:hi, lo:hi] = m @ m.T
    ceiling = block_jacobi_ceiling(blocks, b, Space(), damping=0.5, tol=1e-10, others={"identity": lambda r, lam: r})
    assert ceiling["exact_blocks_per_module"] == 1
    assert 1 < ceiling["exact_blocks_per_tensor"] <= 9
    assert ceiling["identity"] == ceiling["none"] > 1


def _study_row(retrain: float, moves: dict[str, float], correlations: dict[str, float]) -> dict:
    row = {
        "instances": 4,
        "noisy_instances": 1,
        "original_loss": 0.2,
        "retrain": {"move": retrain},
        "original_score_correlation_with_retrain": correlations.pop("original"),
    }
    row.update(
        {name: {"move": move, "score_correlation_with_retrain": correlations[name]} for name, move in moves.items()}
    )
    return row


def _study_result(sets: list[dict], summary: dict) -> dict:
    return {
        "settings": {"epochs": 5, "lr": 2e-3, "sets": 2, "forget_users": 2, "sample_size": 32},
        "n_train": 48,
        "noisy_train_instances": 12,
        "original_auc": 0.8,
        "memorisation_gap": {"gap": 0.2, "standard_error": 0.05, "untrained_source": "held-out users"},
        "sets": sets,
        "summary": summary,
    }


def test_the_calibration_study_summary_scores_each_update_against_each_sets_retrain():
    from rec_eraser.bench.targets import markdown, summarise

    sets = [
        _study_row(
            0.10,
            {"rule": 0.30, "edited": 0.05, "reference": 0.12},
            {"original": 0.9, "rule": 0.8, "edited": 0.95, "reference": 0.97},
        ),
        _study_row(
            0.50,
            {"rule": 0.45, "edited": 0.05, "reference": 0.40},
            {"original": 0.7, "rule": 0.9, "edited": 0.85, "reference": 0.93},
        ),
    ]
    sets[0]["retrain_seed1"] = {"move": 0.13}
    summary = summarise(sets)
    assert summary["retrain_mean_abs_move"] == pytest.approx(0.30) and summary["retrain_move_range"] == pytest.approx(
        [0.10, 0.50]
    )
    assert summary["retrain_seed_move_difference"] == pytest.approx(0.03)
    # |moves - Retrain's|: rule 0.20, 0.05; edited 0.05, 0.45; reference 0.02, 0.10; doing nothing 0.10, 0.50
    assert summary["rule"]["mean_abs_error"] == pytest.approx(0.125) and summary["edited"][
        "mean_abs_error"
    ] == pytest.approx(0.25)
    assert summary["reference"]["mean_abs_error"] == pytest.approx(0.06)
    assert summary["reference"]["relative_error"] == pytest.approx(0.06 / 0.30)
    assert (
        summary["original"]["mean_abs_error"] == pytest.approx(0.30)
        and summary["original"]["move_correlation_with_retrain"] is None
    )
    assert [summary[n]["sets_nearest"] for n in ("original", "rule", "edited", "reference")] == [0, 1, 0, 1]
    assert (
        summary["edited"]["move_correlation_with_retrain"] is None
    )  # the same move on both sets: no correlation to speak of
    assert summary["reference"]["move_correlation_with_retrain"] == pytest.approx(1.0)
    assert summary["reference"]["mean_score_correlation_with_retrain"] == pytest.approx(0.95)
    result = _study_result(sets, summary)
    text = markdown(result)
    assert "| 2 | 4 | 1 | 0.200 | 0.500 | 0.450 | 0.050 | 0.400 | 0.850 / 0.930 |" in text
    assert "| reference | 0.060 | 0.20 | 1 of 2 | 1.000 | 0.950 |" in text


def test_the_calibration_study_tables_hold_the_updates_its_result_has():
    """A result written before the quantile update was added renders without it; one with it gets its column."""
    from rec_eraser.bench.targets import markdown, summarise

    moves = {"rule": 0.30, "edited": 0.05, "reference": 0.12, "quantile": 0.09}
    correlations = {"original": 0.9, "rule": 0.8, "edited": 0.95, "reference": 0.97, "quantile": 0.96}
    sets = [_study_row(0.10, dict(moves), dict(correlations)), _study_row(0.50, dict(moves), dict(correlations))]
    summary = summarise(sets)
    assert summary["quantile"]["mean_abs_error"] == pytest.approx((0.01 + 0.41) / 2)
    result = _study_result(sets, summary)
    text = markdown(result)
    assert "| rule | edited | reference | quantile | corr. with Retrain: edited / reference / quantile |" in text
    assert "| 1 | 4 | 1 | 0.200 | 0.100 | 0.300 | 0.050 | 0.120 | 0.090 | 0.950 / 0.970 / 0.960 |" in text
    assert "| quantile | 0.210 |" in text
    for row in sets:
        del row["quantile"]
    old = markdown({**result, "summary": summarise(sets)})
    assert "quantile" not in old and "corr. with Retrain: edited / reference |" in old


@pytest.mark.slow
def test_the_calibration_study_runs_every_update_on_a_tiny_model(learnable_model_dir):
    """The whole study end to end on a tiny Llama (two forget sets): every update is measured on
    every set, and the quantile update's first-order move is its target wherever it was reached."""
    from rec_eraser.bench.targets import UPDATES, markdown, run_target_study

    result = run_target_study(
        learnable_model_dir,
        users=8,
        per_user=2,
        held_out_users=8,
        forget_users=2,
        sets=2,
        sample_size=12,
        epochs=8,
        lr=5e-2,
    )
    assert len(result["sets"]) == 2 and result["memorisation_gap"]["gap"] > 0
    reached = 0
    for row in result["sets"]:
        assert all(name in row for name in UPDATES)
        quantile = row["quantile"]
        if quantile["reached"]:
            reached += 1
            assert quantile["predicted_move"] == pytest.approx(quantile["target_move"], rel=1e-2)
        else:  # targets that ask for no move, or one out of reach: an end of the search range
            assert quantile["factor"] in (pytest.approx(1e-3), pytest.approx(1e3))
    assert reached >= 1
    assert all(row["reference"]["row_weights"] in ("uniform", "inclusion") for row in result["sets"])
    assert "| quantile |" in markdown(result)
