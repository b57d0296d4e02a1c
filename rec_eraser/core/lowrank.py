"""A low-rank Gauss–Newton preconditioner for CG, built from gradient passes only.

Why not EK-FAC: every block-diagonal approximation of a LoRA adapter's curvature leaves CG's
iteration count about where it was, because most of that curvature couples LoRA's A and B
matrices and the layers. Measured by ``rec-eraser bench solvers`` on the tiny Llama (docs/engine.md,
"Solver benchmark"): the *exact* per-tensor blocks, the best EK-FAC could be, save nothing,
and EK-FAC itself makes CG slower. A preconditioner must keep the coupling; this one does.

For cross-entropy, the Gauss–Newton matrix of an instance is the covariance of the gradients
obtained by back-propagating labels sampled from the model (the true Fisher). With ``s``
such gradients for each of the m instances of the curvature sample, stacked as the rows of
G ``[ms, p]`` scaled by 1/√(ms), GᵀG is an unbiased estimate of the curvature C, of rank at
most ms. Its eigen-decomposition GᵀG = V diag(μ) Vᵀ comes from the ms × ms Gram matrix GGᵀ,
and the preconditioner is

    P = V diag(μ + λ) Vᵀ + (μ_min + λ) (I − V Vᵀ),

that is GᵀG + λI on the span of the sampled gradients, and the smallest kept eigenvalue
plus λ on its complement. The complement rule is the randomized Nyström preconditioner's
(Frangella, Tropp & Udell, 2023): the curvature the sample did not see is not zero, and
damping it by λ alone made CG up to 2.3 times slower with few samples (measured by dense
PCG on the tiny Llama's GGN: 92 iterations against 40 with one sample per instance, plain CG 36). Building P costs
``s`` gradient passes over the sample and no HVP; applying P⁻¹ costs two products with V.

Per-instance gradients come from one batched backward pass per micro-batch through the
linear layers' hooks (:mod:`rec_eraser.core.linear_capture`), as EK-FAC's do. A loss without
a label sampler gives the training labels' gradients (the empirical Fisher), once.
Memory: G, p × ms floats, is all that is kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rec_eraser.core.config import SolverConfig
from rec_eraser.core.curvature import LossFn
from rec_eraser.core.linear_capture import capture_passes, flat_instance_rows, linear_layers, uses_sampled_labels
from rec_eraser.core.params import ParameterSpace

logger = logging.getLogger(__name__)

# eigenvalues of GGᵀ below this fraction of the largest are float32 round-off, not curvature
_RELATIVE_CUTOFF = 1e-6


class LowRankGaussNewton:
    """Fit once on the curvature sample; then :meth:`inverse_product` applies P⁻¹ (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        space: ParameterSpace,
        collate_fn: Callable[[list[Any]], Any],
        batch_size: int = 8,
        samples_per_instance: int = SolverConfig.preconditioner_samples,
        seed: int = 0,
    ) -> None:
        if samples_per_instance < 1:
            raise ValueError(f"samples_per_instance must be >= 1, got {samples_per_instance}")
        self.model = model
        self.loss_fn = loss_fn
        self.space = space
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.sampled = uses_sampled_labels(loss_fn)
        # the training labels' gradients are the same at every pass: one pass is all they give
        self.samples_per_instance = samples_per_instance if self.sampled else 1
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.layers = linear_layers(model, space)
        self.gradient_passes = 0
        self.gradients: torch.Tensor | None = None  # G, [ms, p]
        self.coefficients: torch.Tensor | None = None  # M, [ms, rank]
        self.eigenvalues: torch.Tensor | None = None  # μ, [rank], float64

    @property
    def rank(self) -> int:
        return 0 if self.eigenvalues is None else int(self.eigenvalues.numel())

    def fit(self, samples: Sequence[Any]) -> None:
        """``samples_per_instance`` gradient passes over ``samples``, then the eigen-decomposition."""
        if not samples:
            raise ValueError("the low-rank preconditioner needs at least one instance")
        rows: list[torch.Tensor] = []
        for _ in range(self.samples_per_instance):
            self.gradient_passes += capture_passes(
                self.model,
                self.loss_fn,
                self.space,
                self.layers,
                samples,
                self.collate_fn,
                self.batch_size,
                self.generator,
                lambda count: rows.append(flat_instance_rows(self.layers, self.space, count)),
            )
        gradients = torch.cat(rows)
        gradients /= math.sqrt(gradients.shape[0])  # GᵀG = (1/ms) Σ g gᵀ, the mean like C's
        gram = (gradients @ gradients.T).to(torch.float64)
        values, vectors = torch.linalg.eigh(0.5 * (gram + gram.T))
        keep = values > _RELATIVE_CUTOFF * max(float(values[-1]), 0.0)
        if not bool(keep.any()):
            raise ValueError("every sampled gradient is zero: the low-rank curvature is 0")
        values, vectors = values[keep], vectors[:, keep]
        # V = Gᵀ M with M = W diag(μ)^-1/2 (W: eigenvectors of GGᵀ) has orthonormal columns, the
        # eigenvectors of GᵀG; V is applied through G and M, so only G is held (p × ms floats)
        self.gradients = gradients
        self.coefficients = (vectors / values.sqrt()).to(gradients.dtype)
        self.eigenvalues = values
        logger.info(
            "low-rank Gauss-Newton: rank %d from %d gradients (%d passes); eigenvalues %.3g..%.3g",
            self.rank,
            gradients.shape[0],
            self.gradient_passes,
            float(values[0]),
            float(values[-1]),
        )

    def inverse_product(self, vector: torch.Tensor, damping: float) -> torch.Tensor:
        """P⁻¹ v = V diag(1/(μ + λ)) Vᵀv + (v − V Vᵀv) / (μ_min + λ), in v's dtype."""
        if self.gradients is None or self.coefficients is None or self.eigenvalues is None:
            raise RuntimeError("LowRankGaussNewton.fit must run before inverse_product")
        v = vector.to(self.gradients.dtype)
        coords = self.coefficients.T @ (self.gradients @ v)  # Vᵀv
        complement = 1.0 / (float(self.eigenvalues[0]) + damping)
        # V diag(1/(μ+λ)) Vᵀv + (v − VVᵀv)·c = V [Vᵀv ⊙ (1/(μ+λ) − c)] + v·c: two products with G
        weights = (1.0 / (self.eigenvalues + damping) - complement).to(v.dtype)
        return (self.gradients.T @ (self.coefficients @ (coords * weights)) + v * complement).to(vector.dtype)

    def basis(self) -> torch.Tensor:
        """V ``[p, rank]``, the orthonormal eigenvectors of GᵀG (built on demand: p × rank floats)."""
        if self.gradients is None or self.coefficients is None:
            raise RuntimeError("LowRankGaussNewton.fit must run before basis")
        return self.gradients.T @ self.coefficients
