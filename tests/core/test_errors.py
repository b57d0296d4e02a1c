"""Bad input and failing solves end in one clear exception, and nothing is applied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rec_eraser.core import InfluenceEngine, Removal, SolverConfig, SolverConfigError, SolverError, Update
from rec_eraser.core.curvature import OutputLoss

from .conftest import collate, logistic_loss


def make_engine(problem, **cfg) -> InfluenceEngine:
    return InfluenceEngine(
        problem.model(), logistic_loss, problem.samples, collate, damping=0.0, solver=SolverConfig(**cfg)
    )


@pytest.mark.parametrize(
    "bad",
    [
        dict(method="newton"),
        dict(tol=0),
        dict(batch_size=0),
        dict(preconditioner="jacobi"),
        dict(sample_size=0),
        dict(lissa_scale=0.4),
    ],
)
def test_invalid_solver_settings_are_refused(bad):
    from rec_eraser.errors import RecEraserError

    with pytest.raises(SolverConfigError) as refused:
        SolverConfig(**bad)
    assert isinstance(refused.value, RecEraserError) and isinstance(
        refused.value, ValueError
    )  # callers' except clauses still work


def test_empty_or_mistyped_edits_are_refused(logistic):
    engine = make_engine(logistic)
    with pytest.raises(ValueError, match="no edits"):
        engine.compute([])
    with pytest.raises(TypeError, match="Removal or Replacement"):
        engine.compute([logistic.samples[0]])


def test_unsolved_system_raises_instead_of_returning(logistic):
    engine = make_engine(logistic, method="cg", max_iters=1, max_residual=1e-3)
    with pytest.raises(SolverError, match="relative residual"):
        engine.compute([Removal(logistic.samples[0])])


def test_dense_solver_refuses_large_models(logistic):
    with pytest.raises(SolverError, match="exact_max_dim"):
        make_engine(logistic, method="exact", exact_max_dim=10).compute([Removal(logistic.samples[0])])


def test_non_finite_values_raise(logistic):
    def broken_loss(model, batch):
        return logistic_loss(model, batch) * torch.tensor(float("nan"))

    engine = InfluenceEngine(
        logistic.model(), broken_loss, logistic.samples, collate, damping=1.0, solver=SolverConfig(method="cg")
    )
    with pytest.raises(SolverError):
        engine.compute([Removal(logistic.samples[0])])


def test_ggn_needs_an_output_loss(logistic):
    with pytest.raises(TypeError, match="OutputLoss"):
        InfluenceEngine(logistic.model(), logistic_loss, logistic.samples, collate, curvature="ggn")
    with pytest.raises(ValueError, match="unknown curvature"):
        InfluenceEngine(logistic.model(), logistic_loss, logistic.samples, collate, curvature="fisher")


def test_model_without_trainable_parameters_is_refused(logistic):
    model = logistic.model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        InfluenceEngine(model, logistic_loss, logistic.samples, collate)


def test_update_for_another_model_is_refused_and_changes_nothing(logistic):
    update = make_engine(logistic, method="exact").compute([Removal(logistic.samples[0])])
    other = nn.Linear(3, 1, bias=False, dtype=torch.float64)
    before = other.weight.detach().clone()
    with pytest.raises(ValueError, match="shape mismatch"):
        update.apply(other)
    with pytest.raises(KeyError, match="no parameter named"):
        Update(delta={"nope": torch.zeros(1)}, report=update.report).apply(other)
    assert torch.equal(other.weight, before)


def test_ggn_equals_hessian_for_a_linear_model_with_a_convex_output_loss(logistic):
    """For f linear in θ, ∇²ℓ = Jᵀ∇²_out ℓ J exactly: the two curvature kinds must agree."""

    def outputs(model, batch):
        return model(batch[0]).squeeze(-1)

    def bce(logits, batch):
        return nn.functional.binary_cross_entropy_with_logits(logits, batch[1])

    loss = OutputLoss(outputs, bce)
    edits = [Removal(z) for z in logistic.samples[:5]]
    results = [
        InfluenceEngine(
            logistic.model(),
            loss,
            logistic.samples,
            collate,
            curvature=kind,
            damping=1e-2,
            solver=SolverConfig(method="exact"),
        ).compute(edits)
        for kind in ("hessian", "ggn")
    ]
    assert torch.allclose(results[0].delta["weight"], results[1].delta["weight"], rtol=1e-10, atol=1e-14)


def test_curvature_subsample_always_contains_the_edited_instances(logistic):
    engine = make_engine(logistic, sample_size=50, seed=3)
    edited = [logistic.samples[i] for i in (7, 700, 999)]
    sample = engine.curvature_samples([Removal(z) for z in edited])
    assert len(sample) == 50 and len({id(z) for z in sample}) == 50
    assert all(any(z is s for s in sample) for z in edited)
