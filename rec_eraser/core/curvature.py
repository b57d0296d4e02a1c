"""Curvature operators: Hessian- and Gauss–Newton-vector products over a set of instances.

The operator is C = (1/m) Σ_i C_i over the m instances it is built on, where C_i is
either the Hessian ∇²ℓ(z_i; θ) (``"hessian"``, exact Pearlmutter products by double
backward) or the generalised Gauss–Newton J_iᵀ ∇²_out ℓ J_i (``"ggn"``, positive
semi-definite for convex losses of the outputs such as cross-entropy). Products are
computed in micro-batches, so memory is bounded by one micro-batch whatever m is, and
every product is counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from rec_eraser.core import distributed
from rec_eraser.core.params import ParameterSpace

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
CURVATURES = ("hessian", "ggn")


OutputGradientSampler = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]


class OutputLoss:
    """A loss split as ``loss(outputs(model, batch), batch)``; needed for ``curvature="ggn"``.

    ``outputs`` returns the model's outputs (e.g. logits) and ``loss`` maps them to the
    mean of the per-instance losses of the batch. Calling the object gives the loss, so it
    is a valid ``loss_fn`` for training and for the engine alike.

    ``sample_output_gradient(outputs, batch, generator)``, optional, draws a random ε shaped
    like the outputs whose per-instance covariance is the Hessian of that instance's loss
    w.r.t. its outputs (for cross-entropy: softmax − one-hot of a label sampled from the
    model). Back-propagated, ε gives gradients whose second moment is the Gauss–Newton
    matrix (the true Fisher), which EK-FAC then approximates; without it EK-FAC falls back
    to the empirical Fisher of the training labels.
    """

    def __init__(
        self,
        outputs: Callable[[nn.Module, Any], torch.Tensor],
        loss: Callable[[torch.Tensor, Any], torch.Tensor],
        sample_output_gradient: OutputGradientSampler | None = None,
    ) -> None:
        self.outputs = outputs
        self.loss = loss
        self.sample_output_gradient = sample_output_gradient

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.loss(self.outputs(model, batch), batch)


@contextlib.contextmanager
def deterministic_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off (LoRA dropout included) and attention on the math kernel, then restore.

    PyTorch's fused CPU attention kernels have no double backward; the math kernel has.
    """
    was_training = model.training
    model.eval()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernel = sdpa_kernel([SDPBackend.MATH])
    except ImportError:  # pragma: no cover - older torch
        kernel = contextlib.nullcontext()
    try:
        with kernel:
            yield
    finally:
        model.train(was_training)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _zeros_for_unused(
    grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor], lead: tuple[int, ...] = ()
) -> list[torch.Tensor]:
    return [
        torch.zeros(*lead, *p.shape, device=p.device, dtype=p.dtype) if g is None else g for g, p in zip(grads, like)
    ]


def summed_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    space: ParameterSpace,
    samples: Sequence[Any],
    collate_fn: Callable[[list[Any]], Any],
    batch_size: int,
) -> torch.Tensor:
    """Σ_i ∇θ ℓ(z_i) over ``samples``, by one backward pass per micro-batch (never per instance).

    ``loss_fn`` returns the mean over its batch, so each micro-batch's loss is scaled by its
    size to make a sum.
    """
    total = space.zeros()
    # under torch.distributed each rank sums its own block and the ranks' sums are added
    for chunk in _chunks(distributed.my_block(list(samples)), batch_size):
        loss = loss_fn(model, collate_fn(list(chunk))) * len(chunk)
        grads = torch.autograd.grad(loss, space.params, allow_unused=True)
        total += space.flatten(list(grads))
    return distributed.all_reduce_sum(total)


class CurvatureOperator:
    """v ↦ C v with C the mean curvature of ``samples`` at the model's current parameters."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        space: ParameterSpace,
        samples: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        kind: str = "hessian",
        batch_size: int = 8,
    ) -> None:
        if kind not in CURVATURES:
            raise ValueError(f"unknown curvature {kind!r}; choose one of {', '.join(CURVATURES)}")
        if kind == "ggn" and not isinstance(loss_fn, OutputLoss):
            raise TypeError(
                "curvature='ggn' needs the loss split into outputs and a loss of the outputs: "
                "pass loss_fn=rec_eraser.core.OutputLoss(outputs_fn, loss_of_outputs)"
            )
        if not samples:
            raise ValueError("the curvature needs at least one instance")
        self.model = model
        self.loss_fn = loss_fn
        self.space = space
        self.samples = list(samples)
        self.collate_fn = collate_fn
        self.kind = kind
        self.batch_size = max(1, int(batch_size))
        self.hvps = 0  # products on one micro-batch with one vector
        self.hvp_samples = 0  # the same, counted in instances
        self._full_batches: list[tuple[float, Any]] | None = None

    @property
    def size(self) -> int:
        return len(self.samples)

    # -- products on one collated batch -------------------------------------------------
    def batch_product(self, batch: Any, vectors: torch.Tensor) -> torch.Tensor:
        """C_B V for a batch and a stack of flat vectors ``[k, p]`` (or one vector ``[p]``)."""
        single = vectors.dim() == 1
        stack = vectors[None] if single else vectors
        k = stack.shape[0]
        tangents = [t for t in zip(*(self.space.unflatten(v) for v in stack))]
        per_param = [torch.stack(ts) for ts in tangents]  # one [k, *shape] tensor per parameter
        if self.kind == "hessian":
            out = self._hessian_product(batch, per_param)
        else:
            out = self._ggn_product(batch, per_param)
        result = torch.stack([self.space.flatten([o[i] for o in out]) for i in range(k)])
        return result[0] if single else result

    def _hessian_product(self, batch: Any, tangents: list[torch.Tensor]) -> list[torch.Tensor]:
        params = self.space.params
        loss = self.loss_fn(self.model, batch)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        used = [(g, p, t) for g, p, t in zip(grads, params, tangents) if g is not None and g.requires_grad]
        k = tangents[0].shape[0]
        if not used:
            return [torch.zeros_like(t) for t in tangents]
        if k == 1:
            dot = sum((g * t[0]).sum() for g, _, t in used)
            hv = torch.autograd.grad(dot, params, allow_unused=True)
            return [h[None] for h in _zeros_for_unused(hv, params)]
        hv = torch.autograd.grad(
            [g for g, _, _ in used],
            params,
            grad_outputs=[t for _, _, t in used],
            is_grads_batched=True,
            allow_unused=True,
        )
        return _zeros_for_unused(hv, params, (k,))

    def _ggn_product(self, batch: Any, tangents: list[torch.Tensor]) -> list[torch.Tensor]:
        # G v = Jᵀ H_out J v. J v comes from the double-vjp trick (reverse mode only, so it
        # works with any module): with u a dummy cotangent, Jᵀu is linear in u and
        # ∂(⟨Jᵀu, v⟩)/∂u = J v.
        assert isinstance(self.loss_fn, OutputLoss)
        params = self.space.params
        k = tangents[0].shape[0]
        batched = k > 1
        outputs = self.loss_fn.outputs(self.model, batch)
        dummy = torch.zeros_like(outputs, requires_grad=True)
        jt_u = torch.autograd.grad(outputs, params, grad_outputs=dummy, create_graph=True, allow_unused=True)
        used = [(j, t) for j, t in zip(jt_u, tangents) if j is not None]
        if not used:
            return [torch.zeros_like(t) for t in tangents]
        jv = torch.autograd.grad(
            [j for j, _ in used],
            dummy,
            grad_outputs=[t if batched else t[0] for _, t in used],
            is_grads_batched=batched,
            retain_graph=True,
        )[0]
        detached = outputs.detach().requires_grad_(True)
        out_loss = self.loss_fn.loss(detached, batch)
        (out_grad,) = torch.autograd.grad(out_loss, detached, create_graph=True)
        (h_jv,) = torch.autograd.grad(out_grad, detached, grad_outputs=jv, is_grads_batched=batched)
        gv = torch.autograd.grad(outputs, params, grad_outputs=h_jv, is_grads_batched=batched, allow_unused=True)
        if batched:
            return _zeros_for_unused(gv, params, (k,))
        return [g[None] for g in _zeros_for_unused(gv, params)]

    # -- products averaged over instances -----------------------------------------------
    def _weighted_batches(self, indices: Sequence[int] | None) -> list[tuple[float, Any]]:
        if indices is None:
            if self._full_batches is None:  # collated once: CG and LiSSA pass over it many times
                self._full_batches = self._collate(range(self.size))
            return self._full_batches
        return self._collate(indices)

    def _collate(self, indices: Sequence[int]) -> list[tuple[float, Any]]:
        idx = list(indices)
        return [
            (len(c) / len(idx), (len(c), self.collate_fn([self.samples[i] for i in c])))
            for c in _chunks(idx, self.batch_size)
        ]

    def matvec(self, vectors: torch.Tensor, indices: Sequence[int] | None = None) -> torch.Tensor:
        """(1/|S|) Σ_{i∈S} C_i v over ``indices`` S (all instances when ``None``).

        Accepts one vector ``[p]`` or a stack ``[k, p]`` (products vectorised over k).
        """
        k = 1 if vectors.dim() == 1 else vectors.shape[0]
        total = torch.zeros_like(vectors)
        for weight, (count, batch) in self._weighted_batches(indices):
            total += weight * self.batch_product(batch, vectors)
            self.hvps += k
            self.hvp_samples += k * count
        return total
