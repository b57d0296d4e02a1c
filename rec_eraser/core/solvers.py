"""Solvers of (C + λI) x = b. Each returns the solution and its iteration count.

All take the same damped operator and configuration; the engine counts their products,
measures their residual and times them, so the figures are comparable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from rec_eraser.core.config import SolverConfig
from rec_eraser.core.curvature import CurvatureOperator
from rec_eraser.core.operators import DampedOperator, top_eigenvalue
from rec_eraser.errors import EXIT_CODES, RecEraserError

logger = logging.getLogger(__name__)

Preconditioner = Callable[[torch.Tensor], torch.Tensor]


class SolverError(RecEraserError, RuntimeError):
    """A solver diverged, produced non-finite values or met an operator it cannot invert."""

    exit_code = EXIT_CODES["computation"]


@dataclass
class Solution:
    x: torch.Tensor
    iterations: int
    top_eigenvalue: float | None = None
    residual: torch.Tensor | None = None  # CG's recursive residual b − Ax
    preconditioner_built_at: int | None = None  # plain CG iterations before a deferred preconditioner was built
    gradient_passes: int = 0  # passes a solver spent fitting its own curvature approximation (EK-FAC, low rank)


#: A gradient pass costs about half a curvature product (measured: 0.50–0.56 on the tiny Llama's GGN,
#: 1/2.6–1/2.3 on SmolLM2 with recommendation prompts), so a preconditioner built from ``s``
#: gradient passes over the curvature sample costs about s/2 CG iterations.
GRADIENT_PER_PRODUCT = 0.5


def _norm(v: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(v))


def _over_budget(op: DampedOperator, cfg: SolverConfig, start_hvps: int) -> bool:
    return cfg.hvp_budget is not None and op.curvature.hvps - start_hvps >= cfg.hvp_budget


def qp_gradient(op: DampedOperator, x: torch.Tensor, b: torch.Tensor, indices: list[int] | None = None) -> torch.Tensor:
    """Gradient of F(x) = ½xᵀ(C_S + λI)x − bᵀx on instances S: (C_S + λI)x − b.

    The factor is 1, not ½: the reference implementation detached its HVP from x and so
    followed ½Cx − b, converging to 2C⁻¹b.
    """
    return op(x, indices) - b


def dense_curvature(curvature: CurvatureOperator, block: int = 256) -> torch.Tensor:
    """The dense, symmetrised float64 curvature matrix, ``block`` vectorised products at a time."""
    space = curvature.space
    p = space.dim
    dense = torch.zeros(p, p, dtype=torch.float64)
    for start in range(0, p, block):
        cols = torch.arange(start, min(start + block, p))
        basis = torch.zeros(len(cols), p, dtype=space.dtype, device=space.device)
        basis[torch.arange(len(cols)), cols] = 1.0
        dense[:, cols] = curvature.matvec(basis).to(torch.float64).cpu().T
    return 0.5 * (dense + dense.T)


def solve_exact(op: DampedOperator, b: torch.Tensor, cfg: SolverConfig) -> Solution:
    """Dense C built column by column (vectorised products), then a float64 solve."""
    p = op.dim
    if p > cfg.exact_max_dim:
        raise SolverError(
            f"the exact solver builds a dense {p}x{p} matrix; that is above exact_max_dim={cfg.exact_max_dim}"
        )
    space = op.curvature.space
    dense = dense_curvature(op.curvature) + op.damping * torch.eye(p, dtype=torch.float64)
    try:
        x = torch.linalg.solve(dense, b.to(torch.float64).cpu())
    except RuntimeError as exc:  # singular matrix
        raise SolverError(f"the damped curvature is singular: {exc}; increase the damping") from exc
    return Solution(x=x.to(space.dtype).to(space.device), iterations=1)


def solve_cg(
    op: DampedOperator,
    b: torch.Tensor,
    cfg: SolverConfig,
    preconditioner: Preconditioner | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> Solution:
    """(Preconditioned) conjugate gradients with full products over the curvature sample.

    ``stop(iteration, residual_norm)``, when given, is asked after every iteration that did not
    converge; True ends the run there.
    """
    apply_m = preconditioner or (lambda r: r)
    start = op.curvature.hvps
    b_norm = _norm(b)
    x = torch.zeros_like(b)
    r = b.clone()
    z = apply_m(r)
    direction = z.clone()
    rz = float(torch.dot(r, z))
    iterations = 0
    for iterations in range(1, cfg.max_iters + 1):
        a_dir = op(direction)
        curvature = float(torch.dot(direction, a_dir))
        if not math.isfinite(curvature):
            raise SolverError("cg: non-finite curvature product")
        if curvature <= 0:
            raise SolverError(
                f"cg: the damped curvature is not positive definite (pᵀAp = {curvature:.3g}); "
                "increase the damping or use curvature='ggn'"
            )
        alpha = rz / curvature
        x += alpha * direction
        r -= alpha * a_dir
        r_norm = _norm(r)
        if (
            r_norm <= cfg.tol * b_norm
            or _over_budget(op, cfg, start)
            or (stop is not None and stop(iterations, r_norm))
        ):
            break
        z = apply_m(r)
        rz_new = float(torch.dot(r, z))
        direction = z + (rz_new / rz) * direction
        rz = rz_new
    return Solution(x=x, iterations=iterations, residual=r)


def solve_cg_deferred(
    op: DampedOperator, b: torch.Tensor, cfg: SolverConfig, build: Callable[[], Preconditioner], price: int
) -> Solution:
    """Plain CG that builds a preconditioner only when it pays.

    ``price`` is the preconditioner's cost in CG iterations. After that many plain iterations
    (rent before you buy, as in the ski-rental problem: a solve that is nearly done never
    pays for the build, a long one pays at most the price twice), the iterations still needed
    are predicted from the residual's observed rate of decrease; if they exceed the price,
    the preconditioner is built and preconditioned CG solves for the remaining error from the
    current iterate. The prediction is a heuristic: CG's rate changes as it runs.
    """
    b_norm = _norm(b)
    start = op.curvature.hvps

    def worth_building(iteration: int, residual_norm: float) -> bool:
        if iteration < price:
            return False
        rate = (residual_norm / b_norm) ** (1.0 / iteration)
        remaining = math.log(cfg.tol * b_norm / residual_norm) / math.log(rate) if rate < 1.0 else math.inf
        return remaining > price

    first = solve_cg(op, b, cfg, stop=worth_building)
    assert first.residual is not None
    r_norm = _norm(first.residual)
    if r_norm <= cfg.tol * b_norm or first.iterations >= cfg.max_iters or _over_budget(op, cfg, start):
        return first
    preconditioner = build()
    used = op.curvature.hvps - start
    rest_cfg = replace(
        cfg,
        tol=cfg.tol * b_norm / r_norm,
        max_iters=cfg.max_iters - first.iterations,
        hvp_budget=None if cfg.hvp_budget is None else max(1, cfg.hvp_budget - used),
    )
    rest = solve_cg(op, first.residual, rest_cfg, preconditioner=preconditioner)
    return Solution(
        x=first.x + rest.x,
        iterations=first.iterations + rest.iterations,
        residual=rest.residual,
        preconditioner_built_at=first.iterations,
    )


def solve_lissa(op: DampedOperator, b: torch.Tensor, cfg: SolverConfig) -> Solution:
    """LiSSA: the Neumann series h ← b + h − A_B h / s, x = h / s, on mini-batches B.

    s = ``lissa_scale`` · (top eigenvalue of C + λ), from power iteration, so that the
    iteration contracts. Stops on the measured residual (every ``check_every`` steps).
    """
    start = op.curvature.hvps
    top = top_eigenvalue(op.curvature, cfg.power_iters, seed=cfg.seed)
    scale = cfg.lissa_scale * (top + op.damping)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    m = op.size
    full = cfg.batch_size >= m
    h = b.clone()
    b_norm = _norm(b)
    steps = 0
    for steps in range(1, cfg.max_iters + 1):
        indices = None if full else torch.randperm(m, generator=gen)[: cfg.batch_size].tolist()
        h = b + h - op(h, indices) / scale
        if not torch.isfinite(h).all():
            raise SolverError(f"lissa diverged after {steps} steps (scale {scale:.3g}); raise lissa_scale")
        if steps % cfg.check_every == 0:
            residual = _norm(op(h / scale) - b) / b_norm
            logger.debug("lissa step %d residual %.3g", steps, residual)
            if residual <= cfg.tol:
                break
        if _over_budget(op, cfg, start):
            break
    return Solution(x=h / scale, iterations=steps, top_eigenvalue=top)


def solve_sqp(op: DampedOperator, b: torch.Tensor, cfg: SolverConfig) -> Solution:
    """The finite-sum QP min ½xᵀ(C + λI)x − bᵀx by SVRG on mini-batches.

    Each epoch takes one full gradient g̃ = (C + λI)x̃ − b at an anchor x̃ (its norm is the
    exact residual, so stopping is on the measured residual), then steps
    x ← x − η[(C_B + λI)(x − x̃) + g̃] on random mini-batches B. For a quadratic the
    variance-reduced gradient needs one HVP per step, and, unlike plain SGD, it converges
    to the exact minimiser instead of a noise floor. η = 1/(top eigenvalue of C + λ), from
    power iteration, halved whenever an epoch raises the residual.
    """
    start = op.curvature.hvps
    top = top_eigenvalue(op.curvature, cfg.power_iters, seed=cfg.seed)
    step = 1.0 / (top + op.damping)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    m = op.size
    batch = min(cfg.batch_size, m)
    inner = max(1, math.ceil(m / batch))
    b_norm = _norm(b)
    anchor = torch.zeros_like(b)
    full_grad = -b  # (C + λI)·0 − b
    best_x, best_residual = anchor.clone(), 1.0
    steps = 0
    while steps < cfg.max_iters:
        residual = _norm(full_grad) / b_norm
        if not math.isfinite(residual):
            raise SolverError(f"sqp produced non-finite values after {steps} steps")
        if residual > best_residual:
            step /= 2  # the epoch overshot: restart from the best anchor with a smaller step
            anchor = best_x.clone()
            full_grad = qp_gradient(op, anchor, b)
            logger.debug("sqp: residual rose to %.3g, step halved to %.3g", residual, step)
            continue
        best_x, best_residual = anchor.clone(), residual
        logger.debug("sqp step %d residual %.3g", steps, residual)
        if residual <= cfg.tol or _over_budget(op, cfg, start):
            break
        x = anchor.clone()
        for _ in range(min(inner, cfg.max_iters - steps)):
            indices = torch.randperm(m, generator=gen)[:batch].tolist()
            x -= step * (op(x - anchor, indices) + full_grad)
            steps += 1
        anchor = x
        full_grad = qp_gradient(op, anchor, b)
    return Solution(
        x=best_x if best_residual < _norm(full_grad) / b_norm else anchor, iterations=steps, top_eigenvalue=top
    )


def solve_adam(op: DampedOperator, b: torch.Tensor, cfg: SolverConfig) -> Solution:
    """The reference implementation's recipe: Adam on ½xᵀ(C + λI)x − bᵀx, ``max_iters`` steps.

    Each step takes one mini-batch gradient (C_B + λI)x − b (the right one: the reference
    detached its HVP and so followed ½C_Bx − b). With the reference's 20 steps at lr 1e-5,
    x moves at most about 20·lr per coordinate from 0, whatever the solution's scale; the
    benchmark keeps this row to show that difference.
    """
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    x = torch.zeros_like(b, requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=cfg.lr)
    batch = min(cfg.batch_size, op.size)
    for step in range(cfg.max_iters):
        indices = torch.randperm(op.size, generator=gen)[:batch].tolist()
        grad = qp_gradient(op, x.detach(), b, indices).detach()
        if not torch.isfinite(grad).all():
            raise SolverError(f"adam produced non-finite values after {step} steps")
        x.grad = grad
        optimizer.step()
    return Solution(x=x.detach(), iterations=cfg.max_iters)
