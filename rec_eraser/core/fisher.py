"""The damped empirical Fisher of a sub-sample, inverted exactly through the Woodbury identity.

With G the ``[m, p]`` matrix of per-instance gradients g_i of m instances, the empirical
Fisher is F = (1/m) Gᵀ G, of rank at most m, and

    (F + λI)⁻¹ b = (1/λ) [ b − Gᵀ (mλ I + G Gᵀ)⁻¹ G b ].

Building G costs m gradient evaluations and no curvature products; each solve afterwards
costs two products with G and an m×m solve. This is what makes an update on a real LLM far
cheaper than retraining when HVPs are expensive (one HVP of SmolLM2 on a LLaRA prompt costs
about 2.6 gradients, and CG needs tens of them per instance): it is the method of the
first measurement in DESIGN.md §7, which moved the adapter toward Retrain in function space.
Its curvature is the empirical Fisher, not the Hessian or Gauss–Newton matrix; the report
says so.

Per-instance gradients are computed one instance at a time, each from a batch of one:
vectorising them (``torch.func.vmap`` over a peft-wrapped transformers model) would need a
functional copy of the model and more memory, and on CPU a batch of one is already a
matrix-matrix product over the prompt's tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rec_eraser.core.curvature import LossFn
from rec_eraser.core.params import ParameterSpace

logger = logging.getLogger(__name__)


class EmpiricalFisher:
    """F = (1/m) Σ g_i g_iᵀ over m instances, held as its gradient matrix G (float64)."""

    def __init__(self, gradients: torch.Tensor) -> None:
        if gradients.dim() != 2 or gradients.shape[0] == 0:
            raise ValueError(f"expected a non-empty [m, p] gradient matrix, got shape {tuple(gradients.shape)}")
        self.gradients = gradients.to(torch.float64)
        self.gram = self.gradients @ self.gradients.T  # G Gᵀ, [m, m]

    @classmethod
    def from_samples(cls, model: nn.Module, loss_fn: LossFn, space: ParameterSpace, samples: Sequence[Any],
                     collate_fn: Callable[[list[Any]], Any], on_gradient: Callable[[int], None] | None = None) -> EmpiricalFisher:
        """Per-instance gradients of ``loss_fn`` at the model's current parameters."""
        rows = []
        for i, sample in enumerate(samples):
            loss = loss_fn(model, collate_fn([sample]))
            grads = torch.autograd.grad(loss, space.params, allow_unused=True)
            rows.append(space.flatten(list(grads)).to(torch.float64).cpu())
            if on_gradient:
                on_gradient(i + 1)
        return cls(torch.stack(rows))

    @property
    def size(self) -> int:
        return self.gradients.shape[0]

    def trace(self) -> float:
        """tr(F) = (1/m) Σ ‖g_i‖²."""
        return float(torch.diagonal(self.gram).sum()) / self.size

    def trace_of_square(self) -> float:
        """tr(F²) = (1/m²) ‖G Gᵀ‖²_F."""
        return float((self.gram**2).sum()) / self.size**2

    def block_traces(self, columns: torch.Tensor) -> tuple[float, float]:
        """tr(F_BB) and tr(F_BB²) of the diagonal block of F on the parameters ``columns`` (a [p] mask)."""
        block = self.gradients[:, columns.cpu()]
        gram = block @ block.T
        return float(torch.diagonal(gram).sum()) / self.size, float((gram**2).sum()) / self.size**2

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """F v."""
        return self.gradients.T @ (self.gradients @ v.to(torch.float64)) / self.size

    def solve(self, b: torch.Tensor, damping: float | torch.Tensor) -> torch.Tensor:
        """(F + D)⁻¹ b by the Woodbury identity, in b's dtype; D = λI for a float λ, diag(d) for a [p] tensor d.

        (F + D)⁻¹ b = D⁻¹b − D⁻¹Gᵀ (mI + G D⁻¹ Gᵀ)⁻¹ G D⁻¹b; for D = λI this is the module
        docstring's formula.
        """
        inverse = self._inverse_damping(damping)
        b64 = b.to(torch.float64).cpu()
        scaled = self.gradients * inverse  # G D⁻¹
        # G D⁻¹ Gᵀ: for D = λI the precomputed G Gᵀ / λ, no second m × m × p product
        reduced = self.gram * inverse if inverse.dim() == 0 else scaled @ self.gradients.T
        system = reduced + self.size * torch.eye(self.size, dtype=torch.float64)
        coeffs = torch.linalg.solve(system, scaled @ b64)
        x = inverse * b64 - scaled.T @ coeffs
        return x.to(dtype=b.dtype, device=b.device)

    def _inverse_damping(self, damping: float | torch.Tensor) -> torch.Tensor:
        """D⁻¹: a 0-d tensor 1/λ for a float λ, else the [p] vector 1/d."""
        d = torch.as_tensor(damping, dtype=torch.float64).cpu()
        if not bool((d > 0).all()):
            raise ValueError(f"the empirical Fisher is singular (rank <= {self.size}); damping must be > 0, got {float(d.min())}")
        p = self.gradients.shape[1]
        if d.dim() != 0 and d.shape != (p,):
            raise ValueError(f"a damping vector needs {p} entries, got shape {tuple(d.shape)}")
        return 1.0 / d

    def relative_residual(self, x: torch.Tensor, b: torch.Tensor, damping: float | torch.Tensor) -> float:
        """‖(F + D)x − b‖ / ‖b‖ (a check of the arithmetic: the solve is exact)."""
        x64, b64 = x.to(torch.float64).cpu(), b.to(torch.float64).cpu()
        d = torch.as_tensor(damping, dtype=torch.float64).cpu()
        return float(torch.linalg.vector_norm(self.matvec(x64) + d * x64 - b64) / torch.linalg.vector_norm(b64))
