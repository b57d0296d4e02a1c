"""The solver seam: a solver registered from outside the engine is accepted by the configuration,
used by the engine and reported like a built-in one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec_eraser.core import (
    InfluenceEngine,
    Removal,
    Solution,
    SolveProblem,
    SolverConfig,
    SolverConfigError,
    solver_names,
    solver_registry,
)

from .conftest import collate, logistic_loss

REMOVED = [3, 41, 97, 250, 433]


def steepest_descent(problem: SolveProblem) -> Solution:
    """Steepest descent with the exact line search: a solver the engine does not ship."""
    x = torch.zeros_like(problem.b)
    residual = problem.b.clone()
    for step in range(problem.config.max_iters):
        if torch.linalg.vector_norm(residual) <= problem.config.tol * torch.linalg.vector_norm(problem.b):
            return Solution(x=x, iterations=step)
        product = problem.op(residual)
        alpha = residual.dot(residual) / residual.dot(product)
        x, residual = x + alpha * residual, residual - alpha * product
    return Solution(x=x, iterations=problem.config.max_iters)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(solver_registry._SOLVERS, "steepest", steepest_descent)  # removed again after the test


def delta_of(update) -> np.ndarray:
    (d,) = update.delta.values()
    return d.numpy().ravel()


def engine(problem, method: str) -> InfluenceEngine:
    iterations = {"max_iters": 5000} if method == "steepest" else {}
    return InfluenceEngine(
        problem.model(),
        logistic_loss,
        problem.samples,
        collate,
        damping=0.0,
        solver=SolverConfig(method=method, tol=1e-9, batch_size=1000, **iterations),
    )


def test_a_registered_solver_is_used_and_reported(logistic, registered):
    assert "steepest" in solver_names()
    edits = [Removal(logistic.samples[i]) for i in REMOVED]
    exact = delta_of(engine(logistic, "exact").compute(edits))
    update = engine(logistic, "steepest").compute(edits)
    assert np.linalg.norm(delta_of(update) - exact) <= 1e-6 * np.linalg.norm(exact)
    report = update.report
    assert report.method == "steepest" and report.iterations > 1 and report.hvps >= report.iterations
    assert report.relative_residual <= 1e-9 and report.converged


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(SolverConfigError, match="unknown solver method 'steepest'.*exact"):
        SolverConfig(method="steepest")
    for taken in ("cg", "fisher"):
        with pytest.raises(ValueError, match="registered already"):
            solver_registry.register_solver(taken)(steepest_descent)


def test_the_built_in_names():
    assert set(solver_names()) == {"exact", "cg", "lissa", "sqp", "ekfac", "adam", "fisher"}


def test_for_method_applies_the_registered_recommendations(registered):
    assert SolverConfig.for_method("cg").preconditioner == "auto"
    assert SolverConfig.for_method("cg", preconditioner=None).preconditioner is None  # a setting given wins
    assert SolverConfig.for_method("cg", sample_size=8) == SolverConfig(
        method="cg", preconditioner="auto", sample_size=8
    )
    assert SolverConfig.for_method("fisher") == SolverConfig(method="fisher")
    assert SolverConfig.for_method("steepest") == SolverConfig(method="steepest")


def test_a_setting_the_method_would_ignore_is_refused(registered):
    with pytest.raises(SolverConfigError, match="preconditioner is not a setting of method 'fisher'.*damping_groups"):
        SolverConfig(method="fisher", preconditioner="lowrank")
    with pytest.raises(SolverConfigError, match="max_iters is not a setting of method 'exact'"):
        SolverConfig(method="exact", max_iters=10)
    with pytest.raises(SolverConfigError, match="lr is not a setting of method 'cg'"):
        SolverConfig.for_method("cg", lr=1e-3)
    # the common settings, a method's own ones, and a default value anywhere are accepted
    SolverConfig(method="ekfac", sample_size=8, tol=1e-2, damping_scale=0.1, max_iters=500)
    SolverConfig(method="lissa", lissa_scale=2.0, check_every=5, hvp_budget=100)
    # a solver registered without declaring its settings reads whatever it likes
    assert solver_registry.method_settings("steepest") is None and SolverConfig(method="steepest", lr=0.5).lr == 0.5
