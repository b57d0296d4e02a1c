"""The parameter space of an adapter: the model's trainable parameters, flattened.

Only parameters with ``requires_grad`` take part (LoRA A/B, a projector); the frozen base
model is never copied. Vectors in this space are flat 1-D tensors on the parameters'
device, in the order of ``model.named_parameters()``.
"""

from __future__ import annotations

import torch
from torch import nn


class ParameterSpace:
    """The trainable parameters of ``model`` and the map between flat vectors and them."""

    def __init__(self, model: nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters (requires_grad=True): nothing to edit")
        self.names: list[str] = [n for n, _ in named]
        self.params: list[nn.Parameter] = [p for _, p in named]
        self.shapes: list[torch.Size] = [p.shape for p in self.params]
        self.numels: list[int] = [p.numel() for p in self.params]
        self.dim: int = sum(self.numels)
        self.device: torch.device = self.params[0].device
        dtype = self.params[0].dtype
        for p in self.params[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        # Solver arithmetic in at least float32, even for half-precision adapters.
        self.dtype: torch.dtype = torch.promote_types(dtype, torch.float32)

    def flatten(self, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        """Concatenate one tensor per parameter (``None`` = zeros) into a flat vector."""
        parts = [
            torch.zeros(n, device=self.device, dtype=self.dtype) if t is None else t.reshape(-1).to(self.dtype)
            for t, n in zip(tensors, self.numels)
        ]
        return torch.cat(parts)

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into tensors shaped like the parameters (same dtype as the parameters)."""
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of {self.dim} entries, got shape {tuple(vector.shape)}")
        chunks = torch.split(vector, self.numels)
        return [c.view(s).to(p.dtype) for c, s, p in zip(chunks, self.shapes, self.params)]

    def to_dict(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat vector as ``{parameter name: tensor}``, keyed like ``named_parameters()``."""
        return dict(zip(self.names, (t.detach().clone() for t in self.unflatten(vector))))

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.dim, device=self.device, dtype=self.dtype)

    def values(self) -> torch.Tensor:
        """The current parameter values as a flat vector."""
        return self.flatten([p.detach() for p in self.params])
