"""The damped operator A = C + λI that every solver inverts."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rec_eraser.core.curvature import CurvatureOperator


class DampedOperator:
    """v ↦ (C + λI) v, with C a :class:`CurvatureOperator` (optionally on a subset of its instances)."""

    def __init__(self, curvature: CurvatureOperator, damping: float) -> None:
        if not damping >= 0.0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        self.curvature = curvature
        self.damping = float(damping)

    @property
    def size(self) -> int:
        return self.curvature.size

    @property
    def dim(self) -> int:
        return self.curvature.space.dim

    def __call__(self, v: torch.Tensor, indices: Sequence[int] | None = None) -> torch.Tensor:
        return self.curvature.matvec(v, indices) + self.damping * v

    def relative_residual(self, x: torch.Tensor, b: torch.Tensor) -> float:
        """‖(C + λI)x − b‖ / ‖b‖, measured with one full product."""
        return float(torch.linalg.vector_norm(self(x) - b) / torch.linalg.vector_norm(b))


def top_eigenvalue(curvature: CurvatureOperator, iters: int = 20, tol: float = 1e-3, seed: int = 0) -> float:
    """Largest-magnitude eigenvalue of C by power iteration (full products, at most ``iters``)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(curvature.space.dim, generator=gen, dtype=curvature.space.dtype).to(curvature.space.device)
    v /= torch.linalg.vector_norm(v)
    estimate = 0.0
    for _ in range(max(1, iters)):
        w = curvature.matvec(v)
        new = float(torch.dot(v, w))
        norm = torch.linalg.vector_norm(w)
        if not torch.isfinite(norm) or norm == 0:
            return abs(new)
        v = w / norm
        if estimate and abs(new - estimate) <= tol * abs(estimate):
            estimate = new
            break
        estimate = new
    return abs(estimate)
