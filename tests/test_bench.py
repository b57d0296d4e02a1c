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
