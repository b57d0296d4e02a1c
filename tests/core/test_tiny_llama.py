"""Every solver on a tiny random Llama with a peft LoRA adapter, against the dense solve."""

from __future__ import annotations

import copy

import pytest
import torch

from rec_eraser.bench.toy import ToyTask, make_toy_task
from rec_eraser.core import InfluenceEngine, Removal, Replacement, SolverConfig, SolverError
from rec_eraser.core.curvature import CurvatureOperator, deterministic_mode
from rec_eraser.core.params import ParameterSpace

BUDGET = 2000  # micro-batch HVPs allowed to the stochastic solvers (48 make one exact product here)


@pytest.fixture(scope="module")
def task() -> ToyTask:
    return make_toy_task(n_train=32, rank=8)  # p = 2048


@pytest.fixture(scope="module")
def edits(task):
    tr = task.train
    corrected = dict(tr[12])
    corrected["labels"] = torch.where(tr[12]["labels"] >= 0, (tr[12]["labels"] + 1) % 48, tr[12]["labels"])
    return [Removal(tr[0]), Removal(tr[5]), Removal(tr[9]), Replacement(tr[12], corrected)]


def flat(update) -> torch.Tensor:
    return torch.cat([d.reshape(-1) for d in update.delta.values()])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def run(task, edits, curvature, damping, **cfg):
    return InfluenceEngine(
        task.model,
        task.loss_fn,
        task.train,
        ToyTask.collate,
        curvature=curvature,
        damping=damping,
        solver=SolverConfig(**cfg),
    ).compute(edits)


@pytest.fixture(scope="module")
def ggn_exact(task, edits):
    update = run(task, edits, "ggn", None, method="exact")
    assert update.report.damping > 0 and "tr(C^2)/tr(C)" in update.report.damping_rule
    return flat(update), update.report.damping


def test_parameter_space_is_the_lora_adapter_only(task):
    space = ParameterSpace(task.model)
    assert space.dim == 2048 and all("lora_" in n for n in space.names)


def test_cg_matches_exact(task, edits, ggn_exact):
    x, lam = ggn_exact
    update = run(task, edits, "ggn", lam, method="cg", tol=1e-6)
    assert rel(flat(update), x) <= 1e-4


@pytest.mark.parametrize("method,extra", [("sqp", {}), ("lissa", {"batch_size": 32})])
def test_stochastic_solvers_match_exact_within_budget(task, edits, ggn_exact, method, extra):
    # LiSSA runs on full batches here: on mini-batches of 8 it stalls at a noise floor
    # (measured: relative residual 0.28 after 28,000 HVPs); sqp's variance reduction does not.
    x, lam = ggn_exact
    update = run(task, edits, "ggn", lam, method=method, tol=1e-3, max_iters=20_000, hvp_budget=BUDGET, **extra)
    assert rel(flat(update), x) <= 1e-2
    assert update.report.hvps <= BUDGET + 100  # the budget, the last epoch's full products and the residual check


def test_ekfac_alone_and_as_cg_preconditioner(task, edits, ggn_exact):
    x, lam = ggn_exact
    alone = run(task, edits, "ggn", lam, method="ekfac", max_residual=10.0)
    # A coarse approximation on LoRA: 57% of this GGN's mass lies outside EK-FAC's
    # per-layer blocks (LoRA's A and B are strongly coupled). Measured 0.79 at the default
    # damping (bench solvers); the bound states that, it does not praise it.
    assert rel(flat(alone), x) <= 0.9
    preconditioned = run(task, edits, "ggn", lam, method="cg", preconditioner="ekfac", tol=1e-6)
    assert rel(flat(preconditioned), x) <= 1e-4
    assert preconditioned.report.gradient_passes > 0  # the factors' two passes are accounted


def test_lowrank_preconditioner_reaches_1e4_in_fewer_hvps_than_plain_cg(task, edits, ggn_exact):
    x, lam = ggn_exact
    plain = run(task, edits, "ggn", lam, method="cg", tol=1e-4)
    preconditioned = run(
        task, edits, "ggn", lam, method="cg", preconditioner="lowrank", tol=1e-4
    )  # 16 label samples by default
    assert rel(flat(preconditioned), x) <= 1e-3  # a residual of 1e-4 at this conditioning
    assert preconditioned.report.relative_residual <= 1e-4
    # measured: 68 HVPs against 156 (and 364 against 1284 at λ/100, see bench solvers)
    assert preconditioned.report.hvps < 0.6 * plain.report.hvps
    # its build is paid in gradient passes: 16 label samples x 4 micro-batches, plus b's 2
    assert preconditioned.report.gradient_passes == 16 * 4 + plain.report.gradient_passes


def test_auto_preconditioning_builds_only_when_cg_would_run_long(task, edits, ggn_exact):
    x, lam = ggn_exact
    plain = run(task, edits, "ggn", lam, method="cg", tol=1e-4)
    auto = run(task, edits, "ggn", lam, method="cg", preconditioner="auto", tol=1e-4)
    # 16 label samples cost about 8 iterations and plain CG needs 38 here: it built after 8 plain ones
    assert auto.report.preconditioner_built_at == 8
    assert auto.report.hvps < plain.report.hvps and auto.report.relative_residual <= 1e-4
    assert rel(flat(auto), x) <= 1e-3
    easy = 10 * lam  # plain CG needs 14 iterations here: too few left after 8 to pay for a build
    easy_plain = run(task, edits, "ggn", easy, method="cg", tol=1e-4)
    easy_auto = run(task, edits, "ggn", easy, method="cg", preconditioner="auto", tol=1e-4)
    assert easy_auto.report.preconditioner_built_at is None
    assert easy_auto.report.gradient_passes == easy_plain.report.gradient_passes  # nothing was built
    assert torch.equal(flat(easy_auto), flat(easy_plain))  # the very same CG iterates


def test_hessian_curvature_with_enough_damping(task, edits):
    space = ParameterSpace(task.model)
    engine = InfluenceEngine(task.model, task.loss_fn, task.train, ToyTask.collate, curvature="hessian", damping=0.0)
    with deterministic_mode(task.model):
        dense = (
            CurvatureOperator(task.model, task.loss_fn, space, task.train, ToyTask.collate, "hessian")
            .matvec(torch.eye(space.dim))
            .double()
        )
        b = engine.rhs(edits).double()
    dense = 0.5 * (dense + dense.T)
    lowest = float(torch.linalg.eigvalsh(dense)[0])
    assert lowest < 0  # the LM loss's Hessian is indefinite: damping must lift it
    lam = 2 * abs(lowest)
    x = torch.linalg.solve(dense + lam * torch.eye(space.dim, dtype=torch.float64), b).float()
    assert rel(flat(run(task, edits, "hessian", lam, method="cg", tol=1e-6)), x) <= 1e-4
    with pytest.raises(SolverError, match="not positive definite"):
        run(task, edits, "hessian", 0.0, method="cg", tol=1e-6)


def test_hessian_product_matches_finite_differences(task):
    # float64 (Llama's RMSNorm still computes in float32, which bounds the agreement)
    model = copy.deepcopy(task.model).double()
    space = ParameterSpace(model)
    batch = ToyTask.collate(task.train[:8])
    op = CurvatureOperator(model, task.loss_fn, space, task.train[:8], ToyTask.collate, "hessian", batch_size=8)
    v = torch.randn(space.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theta = space.values()

    def grad_at(vector: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for p, t in zip(space.params, space.unflatten(vector)):
                p.copy_(t)
        return space.flatten(list(torch.autograd.grad(task.loss_fn(model, batch), space.params)))

    with deterministic_mode(model):
        hv = op.matvec(v)
        eps = 1e-3
        fd = (grad_at(theta + eps * v) - grad_at(theta - eps * v)) / (2 * eps)
        grad_at(theta)  # restore
    assert rel(hv, fd) < 1e-4


def test_removal_raises_the_removed_instance_loss(task):
    z = task.train[3]
    model = task.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    update = run(task, [Removal(z)], "ggn", None, method="cg", tol=1e-6)
    batch = ToyTask.collate([z])
    with deterministic_mode(model):
        loss_before = task.loss_fn(model, batch)
        grads = torch.autograd.grad(loss_before, [p for p in model.parameters() if p.requires_grad])
        predicted = float(sum((g * d).sum() for g, d in zip(grads, update.delta.values())))
        update.apply(model)
        try:
            actual = float(task.loss_fn(model, batch).detach()) - float(loss_before.detach())
        finally:
            update.apply(model, scale=-1.0)
        # The whole step leaves the linear regime on a 32-instance set, so the first-order
        # prediction is checked along a short piece of the same direction.
        update.apply(model, scale=0.05)
        try:
            small = float(task.loss_fn(model, batch).detach()) - float(loss_before.detach())
        finally:
            update.apply(model, scale=-0.05)
    assert predicted > 0 and actual > 0
    assert abs(small - 0.05 * predicted) <= 0.1 * 0.05 * predicted
    assert all(torch.allclose(p, before[n], atol=1e-6) for n, p in model.named_parameters() if p.requires_grad)
