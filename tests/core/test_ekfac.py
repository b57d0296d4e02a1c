"""EK-FAC against its definition, computed densely from per-instance gradients."""

from __future__ import annotations

import pytest
import torch

from rec_eraser.bench.toy import ToyTask, make_toy_task
from rec_eraser.core import EKFAC, ParameterSpace, UnsupportedCurvatureError
from rec_eraser.core.curvature import deterministic_mode


@pytest.fixture(scope="module")
def task() -> ToyTask:
    return make_toy_task(n_train=16, rank=4, train_steps=20)


def test_corrected_eigenvalues_are_the_gradients_second_moments_in_the_kronecker_basis(task):
    model, space = task.model, ParameterSpace(task.model)
    plain_loss = lambda m, b: task.loss_fn(m, b)  # noqa: E731 - a plain callable: empirical Fisher
    ekfac = EKFAC(model, plain_loss, space, ToyTask.collate, batch_size=4)
    with deterministic_mode(model):
        ekfac.fit(task.train)
        grads = []
        for z in task.train:  # per-instance gradients, one at a time: fine for a test's ground truth
            g = torch.autograd.grad(plain_loss(model, ToyTask.collate([z])), space.params, allow_unused=True)
            grads.append(space.flatten(list(g)).double())
    per_instance = torch.stack(grads)
    offsets = dict(zip((id(p) for p in space.params), torch.cumsum(torch.tensor([0] + space.numels[:-1]), 0).tolist()))
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(space.dim, generator=gen, dtype=torch.float64)
    inverse = ekfac.inverse_product(v.float(), damping=1e-3).double()
    for layer in ekfac.layers:
        w = layer.module.weight
        start = offsets[id(w)]
        block = per_instance[:, start : start + w.numel()]
        basis = torch.kron(layer.q_g, layer.q_a)  # columns: vec_row(q_g[:, i] q_a[:, j]ᵀ)
        second_moments = ((block @ basis) ** 2).mean(0)
        assert torch.allclose(second_moments, layer.eigen.reshape(-1), rtol=1e-4, atol=1e-12)
        expected = basis @ ((basis.T @ v[start : start + w.numel()]) / (layer.eigen.reshape(-1) + 1e-3))
        assert torch.allclose(inverse[start : start + w.numel()], expected, rtol=1e-3, atol=1e-6 * expected.abs().max())


def test_ekfac_refuses_parameters_outside_linear_layers(task):
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3))
    with pytest.raises(UnsupportedCurvatureError, match="nn.Linear"):
        EKFAC(model, lambda m, b: m(b).sum(), ParameterSpace(model), list)
