"""EK-FAC: an eigenvalue-corrected Kronecker-factored curvature for linear layers.

For a linear layer with weight W (out × in), per-instance gradient DW_n = Σ_t g_{n,t} a_{n,t}ᵀ
(a: layer inputs, g: gradients of the instance's loss w.r.t. the layer outputs, summed
over tokens t). K-FAC approximates the layer's curvature block by A ⊗ G with
A = E[a aᵀ], G = E[g gᵀ]; EK-FAC keeps their eigenvectors Q_A, Q_G and replaces the
Kronecker eigenvalues by the exact second moments of the gradients in that basis,
Λ_ij = (1/m) Σ_n (Q_Gᵀ DW_n Q_A)_ij² (George et al., 2018).

The second moments are those of gradients with labels sampled from the model (the true
Fisher, equal in expectation to the Gauss–Newton matrix for cross-entropy) when the loss is
an :class:`OutputLoss` with a ``sample_output_gradient``; otherwise those of the training
loss's own gradients (the empirical Fisher, which at a trained adapter can be far from the
curvature: measured on the tiny Llama, a 6x residual). One pass builds A and G and one
pass Λ, over the curvature sub-sample. After that an
inverse-curvature product costs no model pass: x = Q_G [(Q_Gᵀ R Q_A) / (Λ + λ)] Q_Aᵀ per
layer. Blocks between layers are dropped (block-diagonal).

LoRA's A and B matrices are ``nn.Linear`` modules in peft, as are LLaRA-style projectors,
so every trainable parameter of those adapters is covered. A bias is handled by
appending 1 to the layer input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rec_eraser.core.curvature import LossFn
from rec_eraser.core.linear_capture import CapturedLinear, capture_passes, linear_layers, uses_sampled_labels
from rec_eraser.core.params import ParameterSpace

logger = logging.getLogger(__name__)


class _LayerFactors(CapturedLinear):
    def __init__(self, module: nn.Linear) -> None:
        super().__init__(module)
        d_in = module.in_features + (1 if self.has_bias else 0)
        d_out = module.out_features
        dev = module.weight.device
        self.a_cov = torch.zeros(d_in, d_in, dtype=torch.float64, device=dev)
        self.g_cov = torch.zeros(d_out, d_out, dtype=torch.float64, device=dev)
        self.tokens = 0
        self.q_a: torch.Tensor | None = None
        self.q_g: torch.Tensor | None = None
        self.eigen = torch.zeros(d_out, d_in, dtype=torch.float64, device=dev)
        self.instances = 0


class EKFAC:
    """Fit once on a sub-sample; then :meth:`inverse_product` applies (F_EKFAC + λI)⁻¹."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        space: ParameterSpace,
        collate_fn: Callable[[list[Any]], Any],
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.sampled = uses_sampled_labels(loss_fn)
        self.model = model
        self.loss_fn = loss_fn
        self.space = space
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.layers: list[_LayerFactors] = linear_layers(model, space, _LayerFactors)  # type: ignore[assignment]
        self.gradient_passes = 0
        self.fitted = False

    def _run(self, samples: Sequence[Any], on_batch: Callable[[int], None]) -> None:
        self.gradient_passes += capture_passes(
            self.model,
            self.loss_fn,
            self.space,
            self.layers,
            samples,
            self.collate_fn,
            self.batch_size,
            self.generator,
            on_batch,
        )

    def fit(self, samples: Sequence[Any]) -> None:
        """Two passes over ``samples``: Kronecker factors, then corrected eigenvalues."""

        def accumulate_factors(count: int) -> None:
            for layer in self.layers:
                a = layer.inputs.reshape(-1, layer.inputs.shape[-1])
                g = layer.out_grads.reshape(-1, layer.out_grads.shape[-1])
                layer.a_cov += a.T @ a
                layer.g_cov += g.T @ g
                layer.tokens += a.shape[0]

        self._run(samples, accumulate_factors)
        for layer in self.layers:
            _, layer.q_a = torch.linalg.eigh(layer.a_cov / max(layer.tokens, 1))
            _, layer.q_g = torch.linalg.eigh(layer.g_cov / max(layer.tokens, 1))

        def accumulate_eigen(count: int) -> None:
            for layer in self.layers:
                rotated = layer.q_g.T @ layer.instance_gradients(count) @ layer.q_a
                layer.eigen += (rotated * rotated).sum(dim=0)
                layer.instances += count

        self._run(samples, accumulate_eigen)
        for layer in self.layers:
            layer.eigen /= max(layer.instances, 1)
        self.fitted = True
        logger.info(
            "ekfac fitted on %d instances, %d layers, %d passes", len(samples), len(self.layers), self.gradient_passes
        )

    # -- inverse product -----------------------------------------------------------------
    def inverse_product(self, vector: torch.Tensor, damping: float) -> torch.Tensor:
        """(F_EKFAC + λI)⁻¹ v for a flat vector v."""
        if not self.fitted:
            raise RuntimeError("EKFAC.fit must run before inverse_product")
        parts = dict(zip((id(p) for p in self.space.params), self.space.unflatten(vector)))
        out: dict[int, torch.Tensor] = {}
        for layer in self.layers:
            w = layer.module.weight
            r = parts[id(w)].to(torch.float64)
            if layer.has_bias:
                r = torch.cat([r, parts[id(layer.module.bias)].to(torch.float64)[:, None]], dim=1)
            rotated = layer.q_g.T @ r @ layer.q_a
            solved = layer.q_g @ (rotated / (layer.eigen + damping)) @ layer.q_a.T
            if layer.has_bias:
                out[id(layer.module.bias)] = solved[:, -1]
                solved = solved[:, :-1]
            out[id(w)] = solved
        return self.space.flatten([out[id(p)] for p in self.space.params])
