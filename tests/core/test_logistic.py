"""The engine on L2-regularised logistic regression, against exact retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec_eraser.core import InfluenceEngine, Removal, Replacement, SolverConfig, qp_gradient
from rec_eraser.core.curvature import CurvatureOperator
from rec_eraser.core.operators import DampedOperator
from rec_eraser.core.params import ParameterSpace
from rec_eraser.core.solver_registry import method_settings

from .conftest import collate, fit_logistic, logistic_loss

REMOVED = [3, 41, 97, 250, 433]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def delta_of(update) -> np.ndarray:
    (d,) = update.delta.values()
    return d.numpy().ravel()


def engine(problem, method: str, **cfg) -> InfluenceEngine:
    settings = dict(method=method, tol=1e-8, batch_size=50)
    if "max_iters" in method_settings(method):  # the iterative ones; the others refuse a setting they would ignore
        settings["max_iters"] = 5000
    settings.update(cfg)
    return InfluenceEngine(
        problem.model(), logistic_loss, problem.samples, collate, damping=0.0, solver=SolverConfig(**settings)
    )


def test_exact_removal_matches_leave_k_out_retraining(logistic):
    # The first-order influence function errs by about the leverage p/n of the removed
    # points (measured: ~10% at n=500, p=50, whatever the regularisation), hence n=1000.
    keep = np.setdiff1d(np.arange(len(logistic.y)), REMOVED)
    retrained = fit_logistic(logistic.x[keep], logistic.y[keep])
    update = engine(logistic, "exact").compute([Removal(logistic.samples[i]) for i in REMOVED])
    error = rel(delta_of(update), retrained - logistic.w)
    assert error < 0.05, error
    assert update.report.relative_residual < 1e-10


def test_exact_label_flip_and_feature_change_match_retraining(logistic):
    x, y = logistic.x.copy(), logistic.y.copy()
    edits = []
    for i in REMOVED[:3]:  # response correction: flip the label
        y[i] = 1.0 - y[i]
        edits.append(Replacement(logistic.samples[i], (logistic.samples[i][0], torch.tensor(y[i]))))
    rng = np.random.default_rng(1)
    for i in REMOVED[3:]:  # query modification: change the features
        x[i] = x[i] + rng.normal(scale=0.5, size=x.shape[1])
        edits.append(Replacement(logistic.samples[i], (torch.from_numpy(x[i]), logistic.samples[i][1])))
    retrained = fit_logistic(x, y)
    update = engine(logistic, "exact").compute(edits)
    assert rel(delta_of(update), retrained - logistic.w) < 0.05


@pytest.mark.parametrize("method", ["cg", "sqp", "lissa"])
@pytest.mark.parametrize("kind", ["removal", "replacement"])
def test_iterative_solvers_match_exact(logistic, method, kind):
    s = logistic.samples
    if kind == "removal":
        edits = [Removal(s[i]) for i in REMOVED]
    else:
        edits = [Replacement(s[i], (s[i][0], 1.0 - s[i][1])) for i in REMOVED]
    exact = delta_of(engine(logistic, "exact").compute(edits))
    # LiSSA on mini-batches stalls at a noise floor far above 1e-3; on full batches it is
    # the deterministic Neumann (Richardson) iteration, which must reach the solution.
    update = engine(logistic, method, **({"batch_size": 1000} if method == "lissa" else {})).compute(edits)
    assert rel(delta_of(update), exact) <= 1e-3
    assert update.report.relative_residual <= 1e-3
    assert update.report.hvps > 0 and update.report.converged


def test_removal_raises_the_removed_loss_as_first_order_predicted(logistic):
    z = logistic.samples[REMOVED[0]]
    model = logistic.model()
    update = InfluenceEngine(
        model, logistic_loss, logistic.samples, collate, damping=0.0, solver=SolverConfig(method="exact")
    ).compute([Removal(z)])
    batch = collate([z])
    before = logistic_loss(model, batch)
    (grad,) = torch.autograd.grad(before, [model.weight])
    predicted = float((grad * update.delta["weight"]).sum())
    update.apply(model)
    after = float(logistic_loss(model, batch).detach())
    actual = after - float(before.detach())
    assert predicted > 0 and actual > 0
    assert abs(actual - predicted) <= 0.1 * predicted


def test_qp_gradient_is_full_hvp_minus_b_not_half(logistic):
    """Regression test for the reference implementation's defect (detached HVP: ½Cx − b)."""
    model = logistic.model()
    space = ParameterSpace(model)
    op = DampedOperator(CurvatureOperator(model, logistic_loss, space, logistic.samples[:64], collate), damping=0.1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(space.dim, generator=gen, dtype=torch.float64)
    b = torch.randn(space.dim, generator=gen, dtype=torch.float64)
    # Autograd of F(x) = ½xᵀ(C + λI)x − bᵀx with the product kept attached to x gives the true gradient.
    x_var = x.clone().requires_grad_(True)
    w = model.weight
    loss = logistic_loss(model, collate(logistic.samples[:64]))
    (g,) = torch.autograd.grad(loss, [w], create_graph=True)
    cx = torch.autograd.grad((g.reshape(-1) * x_var).sum(), [w], create_graph=True)[0].reshape(-1) + 0.1 * x_var
    objective = 0.5 * (x_var * cx).sum() - (b * x_var).sum()
    (true_grad,) = torch.autograd.grad(objective, [x_var])
    assert torch.allclose(qp_gradient(op, x, b), true_grad, rtol=1e-10, atol=1e-12)
    # and the reference's gradient is visibly different: the test above would catch it
    assert not torch.allclose(0.5 * (cx.detach()) - b, true_grad, rtol=1e-3)


def test_adam_reference_recipe_moves_at_most_its_step_budget_and_converges_with_more_steps(logistic):
    edits = [Removal(logistic.samples[i]) for i in REMOVED]
    exact = delta_of(engine(logistic, "exact").compute(edits))
    # the reference's recipe: 20 steps at lr 1e-5 move each coordinate by at most ~20·lr
    reference = engine(logistic, "adam", max_iters=20, lr=1e-5, max_residual=float("inf")).compute(edits)
    assert np.abs(delta_of(reference)).max() <= 20 * 1e-5 * 1.01
    assert reference.report.relative_residual > 0.9 and not reference.report.converged
    assert reference.report.hvps == 20 + len(logistic.samples) // 50  # its steps, then the residual's full product
    # the same optimiser with a step matched to the solution's scale and enough full-batch steps finds it
    tuned = engine(
        logistic, "adam", max_iters=3000, lr=1e-3, batch_size=len(logistic.samples), max_residual=float("inf")
    ).compute(edits)
    assert rel(delta_of(tuned), exact) < 0.05
