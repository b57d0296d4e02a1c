"""The low-rank Gauss–Newton preconditioner against its definition, computed densely."""

from __future__ import annotations

import pytest
import torch

from rec_eraser.bench.toy import ToyTask, make_toy_task
from rec_eraser.core import LowRankGaussNewton, ParameterSpace, UnsupportedCurvatureError
from rec_eraser.core.curvature import CurvatureOperator, deterministic_mode
from rec_eraser.core.solvers import dense_curvature


@pytest.fixture(scope="module")
def task() -> ToyTask:
    return make_toy_task(n_train=12, rank=2, train_steps=20)  # p = 512


def per_instance_gradients(task: ToyTask, space: ParameterSpace, loss) -> torch.Tensor:
    rows = []
    for z in task.train:  # one at a time: the ground truth the hooks must reproduce
        g = torch.autograd.grad(loss(task.model, ToyTask.collate([z])), space.params, allow_unused=True)
        rows.append(space.flatten(list(g)).double())
    return torch.stack(rows)


def test_the_preconditioner_is_the_damped_gradient_second_moment_on_its_span_and_a_constant_off_it(task):
    model, space = task.model, ParameterSpace(task.model)
    plain_loss = lambda m, b: task.loss_fn(m, b)  # noqa: E731 - no label sampler: the training labels' gradients
    lowrank = LowRankGaussNewton(model, plain_loss, space, ToyTask.collate, batch_size=5, samples_per_instance=4)
    with deterministic_mode(model):
        lowrank.fit(task.train)
        grads = per_instance_gradients(task, space, plain_loss)
    assert lowrank.samples_per_instance == 1 and lowrank.gradient_passes == 3  # 12 instances in micro-batches of 5
    second_moment = grads.T @ grads / len(task.train)
    basis, mu = lowrank.basis().double(), lowrank.eigenvalues
    assert lowrank.rank == len(task.train)  # 12 independent gradients in p = 512
    assert torch.allclose(basis.T @ basis, torch.eye(lowrank.rank, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(basis @ torch.diag(mu) @ basis.T, second_moment, atol=1e-5 * float(second_moment.abs().max()))
    lam = 0.1 * float(mu.mean())
    projector = basis @ basis.T
    expected_p = projector @ (second_moment + lam * torch.eye(space.dim, dtype=torch.float64)) @ projector + (
        float(mu.min()) + lam
    ) * (torch.eye(space.dim, dtype=torch.float64) - projector)
    v = torch.randn(space.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = lowrank.inverse_product(v.float(), lam).double()
    assert torch.allclose(got, torch.linalg.solve(expected_p, v), rtol=1e-3, atol=1e-4 * float(got.abs().max()))


def test_sampled_label_gradients_estimate_the_gauss_newton_matrix(task):
    model, space = task.model, ParameterSpace(task.model)
    lowrank = LowRankGaussNewton(model, task.loss_fn, space, ToyTask.collate, batch_size=12, samples_per_instance=200)
    with deterministic_mode(model):
        lowrank.fit(task.train)
        ggn = dense_curvature(CurvatureOperator(model, task.loss_fn, space, task.train, ToyTask.collate, "ggn", 12))
    basis = lowrank.basis().double()
    estimate = basis @ torch.diag(lowrank.eigenvalues) @ basis.T
    # unbiased, with Monte-Carlo error ~ 1/sqrt(samples): measured 0.073 at 200 label samples per instance
    assert float((estimate - ggn).norm() / ggn.norm()) <= 0.15
    assert lowrank.gradient_passes == 200


def test_lowrank_refuses_parameters_outside_linear_layers():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3))
    with pytest.raises(UnsupportedCurvatureError, match="nn.Linear"):
        LowRankGaussNewton(model, lambda m, b: m(b).sum(), ParameterSpace(model), list)
    linear = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="samples_per_instance"):
        LowRankGaussNewton(linear, lambda m, b: m(b).sum(), ParameterSpace(linear), list, samples_per_instance=0)
