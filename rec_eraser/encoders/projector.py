"""LLaRA's item projector: collaborative item embeddings -> the LLM's token-embedding space.

LLaRA (Liao et al., SIGIR 2024) builds a hybrid prompt: after each item title in the prompt
comes an item-embedding token (``[HistoryEmb]`` / ``[CansEmb]``), whose input embedding is
not a vocabulary row but the item's SASRec embedding mapped by a small MLP,
``Linear(in_dim -> d) - GELU - Linear(d -> d)`` with ``d`` the LLM's hidden size (LLaRA's
``MlpProjector``; ``in_dim`` is SASRec's hidden size, 64).

The projector's parameters are trainable parameters like LoRA's: they are trained together
with the adapter, and the influence engine (rec_eraser.core) edits them with it, since it
works on every parameter with ``requires_grad``. Both layers are ``nn.Linear`` modules
(named ``fc1`` and ``fc2``), so curvature approximations that handle linear layers (EK-FAC)
apply to them as they do to LoRA's A and B.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class ItemProjector(nn.Module):
    """``Linear(in_dim -> out_dim) - GELU - Linear(out_dim -> out_dim)``, applied to the last dimension.

    Args:
        in_dim: width of the item embeddings (SASRec hidden size, 64 by default).
        out_dim: the LLM's hidden size ``d`` (``model.config.hidden_size``; 576 for SmolLM2-135M).

    ``forward(x)`` maps ``[..., in_dim]`` to ``[..., out_dim]``. Parameters are created with
    ``requires_grad=True`` in PyTorch's default ``nn.Linear`` initialisation (seed the global
    RNG first for a reproducible start); move/cast the module like any other
    (``.to(dtype=model.dtype)``).
    """

    def __init__(self, in_dim: int = 64, out_dim: int = 576) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"projector sizes must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"item embeddings have width {x.shape[-1]}, the projector expects {self.in_dim}")
        x = x.to(self.fc1.weight.dtype)
        return self.fc2(self.act(self.fc1(x)))

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready (``ItemProjector(**p.config())`` rebuilds the shape)."""
        return {"in_dim": self.in_dim, "out_dim": self.out_dim}

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}"
