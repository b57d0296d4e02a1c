"""Carrying an item projector over to a retrained item encoder.

A SASRec encoder retrained on other interactions (a deleted user's left out) lands in another
embedding space: even with the same seed, a changed training set turns and stretches it. The
projector was trained on the old space, so fed the new embeddings it would give the LLM other
item tokens than the ones its adapter learnt to read. Retraining the projector and the adapter
costs a training; instead the new space is mapped back onto the old one by the affine map that
fits the two tables best in least squares, ``old ≈ new @ M.T + c`` over every item, and that map
is folded into the projector's first linear layer (``fc1(M x + c)`` is a linear layer again):
the projector then reads the new embeddings as it read the old ones, wherever an affine map can
say so.

What a deleted user leaves in the new projector through this map is at most what ``M`` and
``c`` (``dim² + dim`` numbers fitted on the whole catalogue) can carry, against the user's
direct trace in every row of the old table that the retraining removes. The fit's relative
residual says how much of the old table no affine map of the new one explains: the part of the
item tokens that does change.

Written by hand because it is one least-squares solve (``torch.linalg.lstsq``) and one matrix
product; tests check it against scikit-learn's ``LinearRegression`` and against composing the
two maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Alignment:
    """The affine map ``x -> x @ matrix.T + offset`` from a new embedding space to an old one.

    ``relative_residual``: ``‖old − mapped new‖ / ‖old − mean(old)‖`` over the fitted rows (0:
    the new table is an affine image of the old; 1: the map explains nothing beyond the mean).
    """

    matrix: Tensor  # [dim_old, dim_new]
    offset: Tensor  # [dim_old]
    relative_residual: float
    rows: int

    def __call__(self, x: Tensor) -> Tensor:
        return x.to(self.matrix.dtype) @ self.matrix.T + self.offset


def fit_alignment(new: Tensor, old: Tensor) -> Alignment:
    """The least-squares affine map from ``new`` ``[n, d_new]`` to ``old`` ``[n, d_old]`` (row i of
    each is the same item). Needs more rows than ``d_new`` (a unique fit): a ValueError otherwise."""
    if new.ndim != 2 or old.ndim != 2 or new.shape[0] != old.shape[0]:
        raise ValueError(f"tables of one row per item needed, got {tuple(new.shape)} and {tuple(old.shape)}")
    n, dim = new.shape
    if n <= dim:
        raise ValueError(f"{n} items cannot fix an affine map of a {dim}-wide embedding (more than {dim} needed)")
    new64, old64 = new.detach().double(), old.detach().double()
    new_mean, old_mean = new64.mean(0), old64.mean(0)
    # centred, the offset drops out: old - mean(old) ≈ (new - mean(new)) @ M.T
    solution = torch.linalg.lstsq(new64 - new_mean, old64 - old_mean).solution  # [d_new, d_old]
    matrix = solution.T
    offset = old_mean - new_mean @ solution
    fitted = Alignment(matrix=matrix, offset=offset, relative_residual=0.0, rows=n)
    return Alignment(
        matrix=matrix.float(), offset=offset.float(), relative_residual=residual_of(fitted, new64, old64), rows=n
    )


def residual_of(alignment: Alignment, new: Tensor, old: Tensor) -> float:
    """``‖old − alignment(new)‖ / ‖old − mean(old)‖`` over the rows given (0 when ``old`` has no spread)."""
    old64 = old.detach().double()
    mapped = new.detach().double() @ alignment.matrix.double().T + alignment.offset.double()
    spread = torch.linalg.norm(old64 - old64.mean(0))
    return float(torch.linalg.norm(old64 - mapped) / spread) if spread > 0 else 0.0


@torch.no_grad()
def align_first_layer(layer: nn.Linear, alignment: Alignment) -> None:
    """Fold ``alignment`` into ``layer`` in place: afterwards ``layer(x)`` is what ``layer(alignment(x))`` was."""
    weight = layer.weight.double()
    matrix, offset = alignment.matrix.double().to(weight.device), alignment.offset.double().to(weight.device)
    if weight.shape[1] != matrix.shape[0]:
        raise ValueError(f"the layer reads {weight.shape[1]} features, the alignment maps onto {matrix.shape[0]}")
    shifted = weight @ offset
    layer.weight.copy_((weight @ matrix).to(layer.weight.dtype))
    if layer.bias is not None:
        layer.bias.copy_((layer.bias.double() + shifted).to(layer.bias.dtype))
    elif torch.any(shifted != 0):
        raise ValueError("the layer has no bias to take the alignment's offset")
