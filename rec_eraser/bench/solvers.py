"""``rec-eraser bench solvers``: every solver on one edit request, with its cost and accuracy.

Runs on the tiny random Llama + LoRA by default (p = 2048, so the dense solve gives the
ground truth), or on a local Hugging Face causal LM folder with LoRA r=8 on q/v.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rec_eraser.bench.toy import ToyTask, make_toy_task
from rec_eraser.core import EKFAC, InfluenceEngine, LowRankGaussNewton, Removal, Replacement, SolverConfig, SolverError
from rec_eraser.core.curvature import CurvatureOperator, deterministic_mode
from rec_eraser.core.damping import auto_damping
from rec_eraser.core.params import ParameterSpace
from rec_eraser.core.solvers import dense_curvature
from rec_eraser.models import load_causal_lm

logger = logging.getLogger(__name__)

# name -> solver settings; every entry solves the same damped system
DEFAULT_SOLVERS: dict[str, dict[str, Any]] = {
    "exact": {"method": "exact"},
    "cg": {"method": "cg", "tol": 1e-4},
    "cg+lowrank": {"method": "cg", "preconditioner": "lowrank", "tol": 1e-4},
    "cg+auto": {"method": "cg", "preconditioner": "auto", "tol": 1e-4},
    "cg+ekfac": {"method": "cg", "preconditioner": "ekfac", "tol": 1e-4},
    "ekfac": {"method": "ekfac", "max_residual": float("inf")},
    "sqp": {"method": "sqp", "tol": 1e-3, "max_iters": 20_000, "hvp_budget": 4000},
    "lissa": {"method": "lissa", "tol": 1e-3, "max_iters": 20_000, "hvp_budget": 4000, "max_residual": float("inf")},
    # the reference implementation's recipe: 20 Adam steps at lr 1e-5 on the QP
    "reference_recipe": {"method": "adam", "max_iters": 20, "lr": 1e-5, "max_residual": float("inf")},
}


def _mean_seconds(fn: Callable[[], Any], reps: int = 3) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def forward_over_reverse_hvp(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    space: ParameterSpace,
    batch: Any,
    tangents: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """H v by ``torch.func.jvp(grad(f))``: the alternative to double backward, for timing."""
    from torch.func import functional_call, grad, jvp

    names = space.names

    def loss_of(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return functional_call(_LossModule(model, loss_fn), {f"model.{n}": p for n, p in zip(names, params)}, (batch,))

    primals = tuple(p.detach() for p in space.params)
    return jvp(grad(loss_of), (primals,), (tuple(tangents),))[1]


class _LossModule(nn.Module):
    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def time_products(task: ToyTask, batch_size: int) -> dict[str, float | None]:
    """Seconds of one gradient and of one HVP of each kind on one micro-batch."""
    model, space = task.model, ParameterSpace(task.model)
    samples = task.train[:batch_size]
    batch = ToyTask.collate(samples)
    v = torch.randn(space.dim, generator=torch.Generator().manual_seed(0)).to(space.dtype)
    timings: dict[str, float | None] = {}
    with deterministic_mode(model):
        timings["grad_seconds"] = _mean_seconds(lambda: torch.autograd.grad(task.loss_fn(model, batch), space.params))
        for kind in ("hessian", "ggn"):
            op = CurvatureOperator(model, task.loss_fn, space, samples, ToyTask.collate, kind, batch_size)
            timings[f"hvp_seconds_{kind}"] = _mean_seconds(lambda: op.batch_product(batch, v))
        try:
            tangents = space.unflatten(v)
            timings["hvp_seconds_forward_over_reverse"] = _mean_seconds(
                lambda: forward_over_reverse_hvp(model, task.loss_fn, space, batch, tangents)
            )
        except Exception as exc:  # report, do not fail the benchmark: this path is optional
            logger.warning("forward-over-reverse HVP failed: %s", exc)
            timings["hvp_seconds_forward_over_reverse"] = None
    return timings


def pcg_iterations(
    matrix: torch.Tensor,
    b: torch.Tensor,
    apply_inverse: Callable[[torch.Tensor], torch.Tensor],
    tol: float = 1e-4,
    max_iters: int = 10_000,
) -> int:
    """Iterations of preconditioned CG on a dense SPD system to ‖r‖ ≤ tol·‖b‖ (one product each)."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = apply_inverse(r)
    d = z.clone()
    rz = r @ z
    for k in range(max_iters):
        if r.norm() <= tol * b.norm():
            return k
        ad = matrix @ d
        step = rz / (d @ ad)
        x += step * d
        r -= step * ad
        z = apply_inverse(r)
        rz, rz_old = r @ z, rz
        d = z + (rz / rz_old) * d
    return max_iters


def _module_of(name: str) -> str:
    """The layer a trainable tensor belongs to: LoRA's A and B of one projection share it."""
    return name.split(".lora_")[0] if ".lora_" in name else name.rsplit(".", 1)[0]


def block_jacobi_ceiling(
    dense: torch.Tensor,
    b: torch.Tensor,
    space: ParameterSpace,
    damping: float,
    tol: float = 1e-4,
    others: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] | None = None,
) -> dict[str, int]:
    """CG iterations on the dense damped system with the *exact* diagonal blocks as preconditioner.

    EK-FAC approximates the per-tensor blocks and drops everything between them, so CG
    preconditioned by the exact per-tensor blocks bounds what it can achieve; the per-module
    blocks (LoRA's A and B together) bound a LoRA-aware factorisation. ``others`` adds
    approximate preconditioners, each called as ``fn(residual, damping)`` (the low-rank one,
    which keeps the coupling, for contrast).
    """
    system = dense + damping * torch.eye(dense.shape[0], dtype=torch.float64)
    rhs = b.double()
    spans, offset = [], 0
    for name, numel in zip(space.names, space.numels):
        spans.append((name, offset, offset + numel))
        offset += numel
    groups = {"per_tensor": [[s] for s in spans], "per_module": []}
    for name, start, stop in spans:
        module = groups["per_module"]
        if module and _module_of(module[-1][-1][0]) == _module_of(name):
            module[-1].append((name, start, stop))
        else:
            module.append([(name, start, stop)])
    result = {"none": pcg_iterations(system, rhs, lambda r: r, tol)}
    for label, blocks in groups.items():
        inverse = torch.zeros_like(system)
        for block in blocks:
            lo, hi = block[0][1], block[-1][2]
            inverse[lo:hi, lo:hi] = torch.linalg.inv(system[lo:hi, lo:hi])
        result[f"exact_blocks_{label}"] = pcg_iterations(system, rhs, lambda r, m=inverse: m @ r, tol)
    for label, fn in (others or {}).items():
        result[label] = pcg_iterations(system, rhs, lambda r, fn=fn: fn(r, damping).to(torch.float64), tol)
    return result


def benchmark_edits(task: ToyTask) -> list:
    """Remove three instances and correct the response of a fourth."""
    tr = task.train
    corrected = dict(tr[3])
    vocab_cap = int(tr[3]["input_ids"].max()) + 1
    corrected["labels"] = torch.where(tr[3]["labels"] >= 0, (tr[3]["labels"] + 1) % vocab_cap, tr[3]["labels"])
    return [Removal(tr[0]), Removal(tr[1]), Removal(tr[2]), Replacement(tr[3], corrected)]


def run_solver_benchmark(
    base_model: Path | None = None,
    methods: Sequence[str] | None = None,
    n_train: int = 32,
    curvature: str = "ggn",
    batch_size: int = 8,
    seed: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready result (docs/engine.md, "Solver benchmark", describes its fields)."""
    say = on_progress or (lambda _msg: None)
    names = list(methods or DEFAULT_SOLVERS)
    unknown = [m for m in names if m not in DEFAULT_SOLVERS]
    if unknown:
        raise ValueError(f"unknown solver {unknown[0]!r}; choose from {', '.join(DEFAULT_SOLVERS)}")
    say("building the model and adapter")
    if base_model is None:
        task = make_toy_task(n_train=n_train, seed=seed)
    else:
        task = make_toy_task(
            n_train=n_train, seq_len=32, seed=seed, base=load_causal_lm(base_model)[0], train_steps=10, lr=1e-3
        )
    space = ParameterSpace(task.model)
    say("timing gradient and HVPs")
    timings = time_products(task, batch_size)
    edits = benchmark_edits(task)
    with deterministic_mode(task.model):
        op = CurvatureOperator(task.model, task.loss_fn, space, task.train, ToyTask.collate, curvature, batch_size)
        damping = auto_damping(op, seed=seed)
    result: dict[str, Any] = {
        "p": space.dim,
        "n_train": len(task.train),
        "edits": len(edits),
        "curvature": curvature,
        "damping": damping.value,
        "damping_rule": damping.rule,
        "batch_size": batch_size,
        **timings,
        "hvp_seconds": timings[f"hvp_seconds_{curvature}"],
        "hvp_to_grad_ratio": timings[f"hvp_seconds_{curvature}"] / timings["grad_seconds"],
        "solvers": {},
    }
    can_exact = space.dim <= SolverConfig().exact_max_dim
    reference = None
    order = (["exact"] if can_exact else []) + [n for n in names if n != "exact"]
    for name in order:
        say(f"solving with {name}")
        engine = InfluenceEngine(
            task.model,
            task.loss_fn,
            task.train,
            ToyTask.collate,
            curvature=curvature,
            damping=damping.value,
            solver=SolverConfig(batch_size=batch_size, seed=seed, **DEFAULT_SOLVERS[name]),
        )
        try:
            update = engine.compute(edits)
        except SolverError as exc:
            result["solvers"][name] = {"error": str(exc)}
            continue
        x = torch.cat([d.reshape(-1) for d in update.delta.values()])
        if name == "exact":
            reference = x
        r = update.report
        if name in names:
            result["solvers"][name] = {
                "relative_error": None if reference is None else float((x - reference).norm() / reference.norm()),
                "relative_residual": r.relative_residual,
                "hvps": r.hvps,
                "gradient_passes": r.gradient_passes,
                "iterations": r.iterations,
                "seconds": r.seconds,
            }
    if can_exact:
        say("measuring what block preconditioners can do")
        with deterministic_mode(task.model):
            dense = dense_curvature(op)
            b = InfluenceEngine(
                task.model, task.loss_fn, task.train, ToyTask.collate, curvature=curvature, damping=damping.value
            ).rhs(edits)
            ekfac = EKFAC(task.model, task.loss_fn, space, ToyTask.collate, batch_size=batch_size, seed=seed)
            ekfac.fit(task.train)
            lowrank = LowRankGaussNewton(
                task.model, task.loss_fn, space, ToyTask.collate, batch_size=batch_size, seed=seed
            )
            lowrank.fit(task.train)
        others = {
            "ekfac": lambda r, lam: ekfac.inverse_product(r.to(space.dtype), lam),
            "lowrank": lambda r, lam: lowrank.inverse_product(r.to(space.dtype), lam),
        }
        # at the automatic damping and at 1/100 of it, where the system is 100x worse conditioned
        result["block_jacobi_cg_iterations"] = {
            f"damping_x{scale:g}": block_jacobi_ceiling(dense, b, space, damping.value * scale, others=others)
            for scale in (1.0, 0.01)
        }
    return result
