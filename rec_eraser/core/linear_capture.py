"""Per-instance gradients of the ``nn.Linear`` layers that hold a model's trainable parameters.

A linear layer's weight gradient for instance n is DW_n = Σ_t g_{n,t} a_{n,t}ᵀ (a: the
layer's inputs, g: the gradients w.r.t. its outputs, t: tokens). Forward and tensor hooks
capture a and g during one batched backward pass, so the per-instance gradients of a whole
micro-batch cost one pass, where asking autograd for them would cost one pass per instance.
LoRA's A and B matrices and LLaRA-style projectors are ``nn.Linear`` modules, so this covers
every trainable parameter of those adapters; a bias is handled by appending 1 to the input.

Used by EK-FAC (:mod:`rec_eraser.core.ekfac`), the low-rank Gauss–Newton preconditioner
(:mod:`rec_eraser.core.lowrank`) and the empirical Fisher (:mod:`rec_eraser.core.fisher`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rec_eraser.core.curvature import LossFn, OutputLoss, _chunks
from rec_eraser.core.params import ParameterSpace


class UnsupportedCurvatureError(TypeError):
    """Some trainable parameter is not the weight or bias of an nn.Linear, so per-layer capture cannot cover it."""


class CapturedLinear:
    """One linear layer and what the hooks captured of its last batch (float64)."""

    def __init__(self, module: nn.Linear) -> None:
        self.module = module
        self.has_bias = module.bias is not None and module.bias.requires_grad
        self.inputs: torch.Tensor | None = None
        self.out_grads: torch.Tensor | None = None

    def augmented_inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to(torch.float64)
        if self.has_bias:
            x = torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)], dim=-1)
        return x

    def instance_gradients(self, count: int) -> torch.Tensor:
        """``[count, out, in(+1)]``: the captured batch's per-instance gradients (bias as last column)."""
        assert self.inputs is not None and self.out_grads is not None
        return torch.einsum("nto,nti->noi", per_instance(self.out_grads, count), per_instance(self.inputs, count))


def per_instance(t: torch.Tensor, count: int) -> torch.Tensor:
    """``[count, tokens, d]`` view of captured activations (a batch without a token axis gets one)."""
    if t.dim() == 2:
        return t[:, None, :]
    return t.reshape(count, -1, t.shape[-1])


def linear_layers(
    model: nn.Module, space: ParameterSpace, factory: Callable[[nn.Linear], CapturedLinear] = CapturedLinear
) -> list[CapturedLinear]:
    """One captured layer per ``nn.Linear`` whose weight is trainable; raises if some trainable parameter is left out."""
    layers: list[CapturedLinear] = []
    covered: set[int] = set()
    trainable = {id(p) for p in space.params}
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad and id(module.weight) in trainable:
            layer = factory(module)
            layers.append(layer)
            covered.add(id(module.weight))
            if layer.has_bias:
                covered.add(id(module.bias))
    missing = [n for n, p in zip(space.names, space.params) if id(p) not in covered]
    if missing:
        raise UnsupportedCurvatureError(
            f"per-layer capture covers weights and biases of nn.Linear layers only; not covered: {', '.join(missing[:3])}"
            + (" ..." if len(missing) > 3 else "")
        )
    return layers


def flat_instance_rows(layers: Sequence[CapturedLinear], space: ParameterSpace, count: int) -> torch.Tensor:
    """The captured micro-batch's per-instance gradients as flat rows ``[count, p]``, in ``space``'s order."""
    parts: dict[int, torch.Tensor] = {}
    for layer in layers:
        grads = layer.instance_gradients(count)
        if layer.has_bias:
            parts[id(layer.module.bias)] = grads[:, :, -1]
            grads = grads[:, :, :-1]
        parts[id(layer.module.weight)] = grads
    return torch.cat([parts[id(p)].reshape(count, -1) for p in space.params], dim=1).to(space.dtype)


def uses_sampled_labels(loss_fn: LossFn) -> bool:
    """Whether backward passes can use labels sampled from the model (true Fisher = Gauss–Newton for cross-entropy)."""
    return isinstance(loss_fn, OutputLoss) and loss_fn.sample_output_gradient is not None


def capture_passes(
    model: nn.Module,
    loss_fn: LossFn,
    space: ParameterSpace,
    layers: Sequence[CapturedLinear],
    samples: Sequence[Any],
    collate_fn: Callable[[list[Any]], Any],
    batch_size: int,
    generator: torch.Generator,
    on_batch: Callable[[int], None],
    empirical: bool = False,
    on_sum: Callable[[list[torch.Tensor | None]], None] | None = None,
) -> int:
    """One backward pass per micro-batch of ``samples`` with the layers' hooks on; returns the passes made.

    The backward pass starts from output gradients sampled from the model when the loss
    allows it (:func:`uses_sampled_labels`), else from the training loss itself (the
    empirical Fisher's gradients; ``empirical=True`` asks for these whatever the loss).
    ``on_batch(count)`` runs after each pass, while the layers hold that micro-batch's captures;
    ``on_sum(grads)``, before it, receives the pass's own parameter gradients (for the training
    loss: the sum of the micro-batch's per-instance gradients, a check on the captures).
    """
    handles = []
    for layer in layers:

        def forward_hook(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, layer: CapturedLinear = layer
        ) -> None:
            layer.inputs = layer.augmented_inputs(inputs[0])

            def grad_hook(grad: torch.Tensor, layer: CapturedLinear = layer) -> None:
                layer.out_grads = grad.detach().to(torch.float64)

            output.register_hook(grad_hook)

        handles.append(layer.module.register_forward_hook(forward_hook))
    passes = 0
    try:
        for chunk in _chunks(list(samples), batch_size):
            batch = collate_fn(list(chunk))
            if not empirical and uses_sampled_labels(loss_fn):
                assert isinstance(loss_fn, OutputLoss) and loss_fn.sample_output_gradient is not None
                outputs = loss_fn.outputs(model, batch)
                eps = loss_fn.sample_output_gradient(outputs.detach(), batch, generator)
                torch.autograd.grad(outputs, space.params, grad_outputs=eps, allow_unused=True)
            else:
                loss = loss_fn(model, batch)
                # loss is the batch mean: scale so the captured gradients are per-instance ones
                grads = torch.autograd.grad(loss * len(chunk), space.params, allow_unused=True)
                if on_sum:
                    on_sum(list(grads))
            passes += 1
            on_batch(len(chunk))
    finally:
        for h in handles:
            h.remove()
        for layer in layers:
            layer.inputs = layer.out_grads = None
    return passes
