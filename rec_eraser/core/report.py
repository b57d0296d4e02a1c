"""What a solve returns: the change of the parameters (:class:`Update`) and what it did and cost
(:class:`SolverReport`), the record every version's manifest keeps of its solve."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class SolverReport:
    """What a solve did and cost. ``hvps`` counts curvature products on one micro-batch of
    ``batch_size`` instances with one vector; ``hvp_samples`` the same in instances."""

    method: str
    curvature: str
    damping: float
    damping_rule: str
    iterations: int
    hvps: int
    hvp_samples: int
    gradient_passes: int
    relative_residual: float
    converged: bool
    seconds: float
    n_train: int
    curvature_samples: int
    edits: int
    preconditioner: str | None = None
    preconditioner_built_at: int | None = None  # "auto": plain CG iterations before the build (None: never built)
    # with damping_groups: λ per name prefix, "other" for the rest; ``damping`` is then "other"'s
    damping_by_group: dict[str, float] | None = None
    top_eigenvalue: float | None = None
    # fisher with an objective: how the damping's scale was chosen (CalibrationConfig, trials)
    calibration: dict[str, Any] | None = None
    # n·bᵀΔθ: the first-order change of Σ_j [ℓ(z_j) − ℓ(z'_j)] over the edits (a trust check
    # beside the measured change)
    predicted_change: float | None = None
    rhs_norm: float = 0.0
    delta_norm: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    # fisher: the physical floor of any update, the gradients of the edited instances (old and
    # new forms): how many, and what they cost at this solve's own seconds per gradient row
    floor_rows: int | None = None
    floor_seconds: float | None = None
    # fisher: rows of the curvature sample taken from a cache instead of computed (in curvature_samples)
    reused_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Update:
    """The result of :meth:`InfluenceEngine.compute`: Δθ per parameter and its report."""

    delta: dict[str, torch.Tensor]
    report: SolverReport

    def apply(self, model: nn.Module, scale: float = 1.0) -> None:
        """θ ← θ + scale·Δθ in place, matching parameters by name (``named_parameters``)."""
        params = dict(model.named_parameters())
        missing = [n for n in self.delta if n not in params]
        if missing:
            raise KeyError(f"the model has no parameter named {missing[0]!r} (update computed for another model?)")
        for name, d in self.delta.items():
            p = params[name]
            if p.shape != d.shape:
                raise ValueError(f"shape mismatch for {name}: model {tuple(p.shape)}, update {tuple(d.shape)}")
        with torch.no_grad():
            for name, d in self.delta.items():
                params[name].add_(d.to(device=params[name].device, dtype=params[name].dtype), alpha=scale)
