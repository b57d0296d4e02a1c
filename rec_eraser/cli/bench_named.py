"""The named benchmarks of ``rec-eraser bench`` (``solvers``, ``scaling``, ``data-size``, ...):
a registry, so that a new one is one function and one entry, not another branch in the command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rec_eraser.cli.bench_tables import (
    show_damping,
    show_data_size,
    show_encoder,
    show_model_scale,
    show_scaling,
    show_solvers,
)
from rec_eraser.cli.common import USER_ERRORS, console, emit_json, fail, fail_on


def report(
    compute: Callable[[], dict[str, Any]], as_json: bool, show: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Every benchmark's ending: run it (a user error is one line and exit 1), then print its
    result as one JSON object or for people."""
    try:
        result = compute()
    except USER_ERRORS as exc:
        fail_on(exc)
    if as_json:
        emit_json(result)
    else:
        show(result)
    return result


@dataclass(frozen=True)
class BenchOptions:
    """The options of `rec-eraser bench` that the named benchmarks read."""

    base_model: Optional[Path]
    methods: Optional[str]
    n_train: int
    curvature: str
    scales: str
    sizes: str
    task: str
    dataset: str
    cap_seconds: Optional[float]
    forget_sets: int
    forget_users: int
    interactions: int
    max_users: Optional[int]
    tokens: int
    train_instances: int
    epochs: int
    seed: int
    out: Optional[Path]
    as_json: bool
    progress: Any


def _bench_solvers(o: BenchOptions) -> None:
    import torch

    from rec_eraser.bench.solvers import run_solver_benchmark

    def solvers() -> dict[str, Any]:
        result = run_solver_benchmark(
            o.base_model,
            o.methods.split(",") if o.methods else None,
            o.n_train,
            o.curvature,
            seed=o.seed,
            on_progress=o.progress,
        )
        return {**result, "threads": torch.get_num_threads()}

    report(solvers, o.as_json, show_solvers)


def _bench_damping(o: BenchOptions) -> None:
    from rec_eraser.bench.damping import run_damping_check

    try:
        scales = [float(x) for x in o.scales.split(",")]
    except ValueError:
        fail(f"--scales {o.scales!r}: expected comma-separated numbers")
    report(
        lambda: run_damping_check(o.base_model, scales=scales, seed=o.seed, on_progress=o.progress),
        o.as_json,
        show_damping,
    )


def _bench_calibration(o: BenchOptions) -> None:
    from rec_eraser.bench.targets import markdown, run_target_study

    report(
        lambda: run_target_study(
            o.base_model, sets=o.forget_sets, forget_users=o.forget_users, seed=o.seed, on_progress=o.progress
        ),
        o.as_json,
        lambda result: console.print(markdown(result), markup=False),
    )


def _check_task(task: str) -> None:
    from rec_eraser.tasks.prompt_registry import task_names

    if task not in task_names():
        fail(f"--task {task!r}: choose one of {', '.join(task_names())}", 2)


def _bench_scaling(o: BenchOptions) -> None:
    from rec_eraser.workflows.scaling import run_scaling

    _check_task(o.task)
    try:
        sizes = [int(x) for x in o.sizes.split(",")]
    except ValueError:
        fail(f"--sizes {o.sizes!r}: expected comma-separated integers")
    report(
        lambda: run_scaling(
            sizes, task=o.task, out=o.out, base_model=o.base_model, cap_seconds=o.cap_seconds, say=o.progress
        ),
        o.as_json,
        show_scaling,
    )


def _bench_encoder(o: BenchOptions) -> None:
    from rec_eraser.workflows.encoder_membership import encoder_membership

    report(lambda: encoder_membership(o.dataset, seed=o.seed, say=o.progress), o.as_json, show_encoder)


def _bench_data_size(o: BenchOptions) -> None:
    from rec_eraser.workflows.data_scale import prepare_at_size

    _check_task(o.task)
    report(
        lambda: prepare_at_size(
            o.interactions, task=o.task, max_users=o.max_users, seed=o.seed, workdir=o.out, say=o.progress
        ),
        o.as_json,
        show_data_size,
    )


def _bench_model_scale(o: BenchOptions) -> None:
    from rec_eraser.workflows.model_scale import model_scale_plan

    report(
        lambda: model_scale_plan(
            tokens=o.tokens, train_instances=o.train_instances, epochs=o.epochs, seed=o.seed, say=o.progress
        ),
        o.as_json,
        show_model_scale,
    )


@dataclass(frozen=True)
class NamedBenchmark:
    """A benchmark `rec-eraser bench NAME` runs: one line of help and what runs it."""

    help: str
    run: Callable[[BenchOptions], None]


#: The named benchmarks; a new one is one entry here (recipes need none: they are files).
NAMED_BENCHMARKS: dict[str, NamedBenchmark] = {
    "solvers": NamedBenchmark("the influence solvers on one edit request", _bench_solvers),
    "damping": NamedBenchmark("the damping rule on a real adapter", _bench_damping),
    "calibration": NamedBenchmark("the calibration targets against Retrain on many forget sets", _bench_calibration),
    "scaling": NamedBenchmark("update and Retrain cost as the training set grows (--sizes)", _bench_scaling),
    "encoder": NamedBenchmark("how much of a user the SASRec item encoder holds", _bench_encoder),
    "model-scale": NamedBenchmark(
        "update and Retrain on a 7B-shaped model: counts, a measured pass, estimates (--tokens, --train-instances)",
        _bench_model_scale,
    ),
    "data-size": NamedBenchmark(
        "prepare on a synthetic dataset of ML-20M's size (--interactions, --max-users)", _bench_data_size
    ),
}
