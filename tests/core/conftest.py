"""Shared small problems with known ground truth for the engine's tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from rec_eraser.core import InfluenceEngine, SolverConfig

MU = 0.05  # L2 regularisation strength of the logistic problem


def logistic_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean per-instance loss: BCE + (MU/2)‖w‖² (the regulariser is part of each instance's loss)."""
    x, y = batch
    logits = model(x).squeeze(-1)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, y)
    return bce + 0.5 * MU * model.weight.pow(2).sum()


def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])


def fisher_engine(model: nn.Module, samples, damping: float | None = None, **settings) -> InfluenceEngine:
    """The ``fisher`` engine on logistic regression; ``settings``: more of its SolverConfig."""
    return InfluenceEngine(
        model, logistic_loss, samples, collate, damping=damping, solver=SolverConfig(method="fisher", **settings)
    )


def fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact minimiser of (1/n)Σ BCE + (MU/2)‖w‖² (L-BFGS, then Newton to a gradient below 1e-12)."""

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * MU * w @ w
        grad = x.T @ (1.0 / (1.0 + np.exp(-z)) - y) / len(y) + MU * w
        return loss, grad

    res = minimize(
        objective,
        np.zeros(x.shape[1]),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 10_000},
    )
    w = res.x
    for _ in range(5):  # Newton polish: L-BFGS alone stalls near 1e-8 in float64
        s = 1.0 / (1.0 + np.exp(-(x @ w)))
        hessian = (x * (s * (1 - s))[:, None]).T @ x / len(y) + MU * np.eye(x.shape[1])
        w = w - np.linalg.solve(hessian, objective(w)[1])
    assert np.linalg.norm(objective(w)[1]) < 1e-12
    return w


@dataclass
class LogisticProblem:
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    samples: list[tuple[torch.Tensor, torch.Tensor]]

    def model(self, w: np.ndarray | None = None) -> nn.Module:
        m = nn.Linear(self.x.shape[1], 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(self.w if w is None else w)[None])
        return m


@pytest.fixture(scope="session")
def logistic() -> LogisticProblem:
    rng = np.random.default_rng(0)
    n, p = 1000, 50
    x = rng.normal(size=(n, p))
    w_true = rng.normal(size=p) / np.sqrt(p) * 2
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ w_true))).astype(np.float64)
    w = fit_logistic(x, y)
    samples = [(torch.from_numpy(x[i]), torch.tensor(y[i])) for i in range(n)]
    return LogisticProblem(x=x, y=y, w=w, samples=samples)
