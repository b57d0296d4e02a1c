"""The built-in solvers, registered by name (see :mod:`rec_eraser.core.solver_registry`).

Each is a thin adapter from a :class:`SolveProblem` to a solver function of
:mod:`rec_eraser.core.solvers` (and, for the preconditioned ones, to the curvature approximation
it fits); what the methods are and when to use which is in :class:`SolverConfig`'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rec_eraser.core.ekfac import EKFAC
from rec_eraser.core.lowrank import LowRankGaussNewton
from rec_eraser.core.solver_registry import SolveProblem, register_solver
from rec_eraser.core.solvers import (
    GRADIENT_PER_PRODUCT,
    Solution,
    solve_adam,
    solve_cg,
    solve_cg_deferred,
    solve_exact,
    solve_lissa,
    solve_sqp,
)


def _on_the_system(solve: Callable[..., Solution]) -> Callable[[SolveProblem], Solution]:
    """A solver that needs nothing but the damped system and the configuration."""
    return lambda problem: solve(problem.op, problem.b, problem.config)


#: what each of these reads of the configuration beyond the common settings
_SYSTEM_SOLVERS = {
    "exact": (solve_exact, ("exact_max_dim",)),
    "lissa": (solve_lissa, ("max_iters", "hvp_budget", "power_iters", "lissa_scale", "check_every")),
    "sqp": (solve_sqp, ("max_iters", "hvp_budget", "power_iters")),
    "adam": (solve_adam, ("max_iters", "lr")),
}
for _name, (_solve, _settings) in _SYSTEM_SOLVERS.items():
    register_solver(_name, settings=_settings)(_on_the_system(_solve))


def _fitted_ekfac(problem: SolveProblem) -> EKFAC:
    cfg = problem.config
    ekfac = EKFAC(problem.model, problem.loss_fn, problem.space, problem.collate_fn, cfg.batch_size, seed=cfg.seed)
    ekfac.fit(problem.curvature.samples)
    return ekfac


@register_solver("ekfac", settings=())
def ekfac(problem: SolveProblem) -> Solution:
    """EK-FAC's inverse applied once: no curvature product, its residual says how good it is."""
    fitted = _fitted_ekfac(problem)
    x = fitted.inverse_product(problem.b, problem.op.damping)
    return Solution(x=x, iterations=0, gradient_passes=fitted.gradient_passes)


# "auto": an adapter's trainable parameters are linear layers, which the low-rank preconditioner
# needs, and it is built only when the iterations it saves cost more than building it
@register_solver(
    "cg",
    recommended={"preconditioner": "auto"},
    settings=("max_iters", "hvp_budget", "preconditioner", "preconditioner_samples"),
)
def cg(problem: SolveProblem) -> Solution:
    """Conjugate gradients, preconditioned as ``config.preconditioner`` says."""
    op, b, cfg = problem.op, problem.b, problem.config
    if cfg.preconditioner == "ekfac":
        fitted = _fitted_ekfac(problem)
        solution = solve_cg(op, b, cfg, preconditioner=lambda v: fitted.inverse_product(v, op.damping))
        solution.gradient_passes = fitted.gradient_passes
        return solution
    if cfg.preconditioner not in ("lowrank", "auto"):
        return solve_cg(op, b, cfg)
    lowrank = LowRankGaussNewton(
        problem.model,
        problem.loss_fn,
        problem.space,
        problem.collate_fn,
        cfg.batch_size,
        cfg.preconditioner_samples,
        cfg.seed,
    )

    def build() -> Callable[[torch.Tensor], torch.Tensor]:
        lowrank.fit(problem.curvature.samples)
        return lambda v: lowrank.inverse_product(v, op.damping)

    if cfg.preconditioner == "lowrank":
        solution = solve_cg(op, b, cfg, preconditioner=build())
    else:
        solution = solve_cg_deferred(op, b, cfg, build, math.ceil(lowrank.samples_per_instance * GRADIENT_PER_PRODUCT))
    solution.gradient_passes = lowrank.gradient_passes  # read after the solve: "auto" may never build it
    return solution
