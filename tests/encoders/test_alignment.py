"""Carrying the projector over to a retrained encoder: the least-squares affine map against
SciPy's dense solve and an exact map, folding it into a linear layer, and a retrained encoder's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import lstsq

from rec_eraser.encoders import train_sasrec
from rec_eraser.encoders.alignment import Alignment, align_first_layer, fit_alignment
from rec_eraser.encoders.projector import ItemProjector
from tests.encoders.test_sasrec import SMALL, cycle_dataset, make_dataset


def test_an_exact_affine_image_is_recovered_with_no_residual() -> None:
    g = torch.Generator().manual_seed(0)
    new = torch.randn(40, 6, generator=g)
    matrix, offset = torch.randn(6, 6, generator=g), torch.randn(6, generator=g)
    fit = fit_alignment(new, new @ matrix.T + offset)
    assert torch.allclose(fit.matrix, matrix, atol=1e-4) and torch.allclose(fit.offset, offset, atol=1e-4)
    assert fit.relative_residual < 1e-6 and fit.rows == 40


def test_the_fit_is_the_dense_least_squares_solution_with_its_residual() -> None:
    rng = np.random.default_rng(1)
    new, old = rng.normal(size=(50, 5)), rng.normal(size=(50, 5))
    fit = fit_alignment(torch.tensor(new), torch.tensor(old))
    design = np.hstack([new, np.ones((50, 1))])  # the offset as a column of ones, uncentred
    solution = lstsq(design, old)[0]
    np.testing.assert_allclose(fit.matrix.numpy(), solution[:5].T, atol=1e-5)
    np.testing.assert_allclose(fit.offset.numpy(), solution[5], atol=1e-5)
    left = old - design @ solution
    expected = np.linalg.norm(left) / np.linalg.norm(old - old.mean(0))
    assert fit.relative_residual == pytest.approx(expected, rel=1e-6)
    assert 0.5 < fit.relative_residual < 1.0  # unrelated tables: the map explains little


def test_folding_the_map_into_the_first_layer_composes_the_two() -> None:
    torch.manual_seed(2)
    projector = ItemProjector(8, 12)
    before = ItemProjector(8, 12)
    before.load_state_dict(projector.state_dict())
    alignment = Alignment(torch.randn(8, 8), torch.randn(8), relative_residual=0.0, rows=0)
    align_first_layer(projector.fc1, alignment)
    x = torch.randn(5, 8)
    assert torch.allclose(projector(x), before(alignment(x)), atol=1e-5)


def test_too_few_rows_or_mismatched_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot fix an affine map"):
        fit_alignment(torch.randn(4, 4), torch.randn(4, 4))
    with pytest.raises(ValueError, match="one row per item"):
        fit_alignment(torch.randn(10, 4), torch.randn(9, 4))


def test_a_retrained_encoder_keeps_every_item_row_even_one_no_longer_interacted() -> None:
    full = cycle_dataset(n_users=8, n_items=7, length=10)
    # every interaction with i0 gone: the dataset's own vocabulary (items in order of first
    # appearance) would lose i0 and shift every other item's row
    without = make_dataset(
        {u: [x.item for x in full.interactions if x.user == u and x.item != "i0"] for u in full.users}
    )
    assert "i0" not in without.items
    kept = train_sasrec(without, epochs=1, seed=0, items=full.items, **SMALL)
    assert kept.item_ids == full.items and kept.embeddings.shape[0] == len(full.items)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        train_sasrec(full, epochs=1, seed=0, items=["i1", "i2"], **SMALL)
