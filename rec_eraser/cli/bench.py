"""``rec-eraser bench``: the solver, damping and scaling benchmarks and every recipe study."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from rec_eraser.cli.bench_tables import (
    show_check,
    show_damping,
    show_encoder,
    show_profile,
    show_recipe,
    show_scaling,
    show_sequential,
    show_solvers,
)
from rec_eraser.cli.common import USER_ERRORS, app, console, emit_json, err, fail, fail_on


@app.command()
def bench(
    target: str = typer.Argument(
        ...,
        help="What to benchmark: 'solvers', 'damping', 'calibration', 'scaling', 'encoder' (how much of a user the SASRec item encoder holds), or a benchmark recipe: a file (recipes/ml100k-<task>-<edit>.toml) or a shipped recipe's name (ml100k-<task>-<edit>).",
    ),
    base_model: Optional[Path] = typer.Option(
        None, "--base-model", help="A local Hugging Face causal LM folder (default: a tiny random Llama)."
    ),
    methods: Optional[str] = typer.Option(
        None,
        "--methods",
        help="Comma-separated solvers, or a recipe's methods (default: the tier's `methods` setting, else all).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Recipe benchmarks: the same as --tier quick."),
    tier: Optional[str] = typer.Option(
        None,
        "--tier",
        help="Recipe benchmarks: 'quick' (mechanics and cost, under 30 minutes on 2 CPU cores), "
        "'medium' (sized to judge fidelity) or 'full' (the recipe's own sizes; the default).",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Recipe benchmarks: the folder for the run and its report (default: adapters/bench/RECIPE[-TIER]).",
    ),
    n_train: int = typer.Option(32, "--n-train", min=4, help="Training instances of the synthetic task."),
    curvature: str = typer.Option("ggn", "--curvature", help="'ggn' or 'hessian'."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."
    ),
    scales: str = typer.Option("0.01,0.1,1", "--scales", help="damping: the automatic rule's scales to compare."),
    sizes: str = typer.Option("32,64,128", "--sizes", help="scaling: training-set sizes."),
    sequential: Optional[int] = typer.Option(
        None,
        "--sequential",
        min=1,
        help="Recipe benchmarks (ir): apply this many successive "
        "deletion batches, one request each, and compare with Retrain at --checkpoints.",
    ),
    checkpoints: str = typer.Option(
        "1,5,10", "--checkpoints", help="--sequential: the batches after which Retrain is trained and compared."
    ),
    batch_fraction: float = typer.Option(
        0.01, "--batch-fraction", min=0.0, help="--sequential: the share of the trained users per batch."
    ),
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        help="Recipe benchmarks: train in 'float32' or 'bfloat16' whatever the tier says "
        "(where bfloat16 is slow on this CPU; recorded in the run's recipe, so a run folder keeps one precision).",
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Recipe benchmarks: train (or reuse) the tier's v0000 only and say whether it "
        "beats the task's baseline and memorised (the can_judge conditions that need no Retrain); exit 1 when it does not.",
    ),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="Recipe benchmarks: profile --steps training steps of the tier's recipe (default tier: medium) under the "
        "attention kernels (eager, sdpa), precisions and length-bucketed batches, instead of running the benchmark.",
    ),
    steps: int = typer.Option(8, "--steps", min=1, help="--profile: timed optimiser steps per variant."),
    task: str = typer.Option("tallrec", "--task", help="scaling: 'tallrec' or 'llara'."),
    dataset: str = typer.Option("ml-100k", "--dataset", help="encoder: the dataset whose item encoder is tested."),
    cap_seconds: float = typer.Option(
        3600.0,
        "--cap-seconds",
        min=0.0,
        help="scaling: skip a size whose training is projected to take longer (0: no cap).",
    ),
    forget_sets: int = typer.Option(
        8, "--sets", min=2, help="calibration: how many seeded forget sets (one Retrain each)."
    ),
    forget_users: int = typer.Option(
        2, "--forget-users", min=1, help="calibration: users in each forget set (2 instances each)."
    ),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Benchmarks: the influence solvers on one edit request ('solvers'), the damping rule on a
    real adapter ('damping'), the calibration targets against Retrain on many forget sets
    ('calibration'), or every unlearning method on one experiment (a recipe file)."""
    from rec_eraser.shipped import shipped_names

    named = ("solvers", "damping", "calibration", "scaling", "encoder")
    is_recipe = target not in named and (
        target.endswith(".toml") or Path(target).is_file() or target in shipped_names("recipes")
    )
    if target not in named and not is_recipe:
        fail(
            f"unknown benchmark {target!r}: choose 'solvers', 'damping', 'calibration', 'scaling', 'encoder', a recipe file such as "
            "recipes/ml100k-tallrec-ir.toml, or a shipped recipe's name such as ml100k-tallrec-ir",
            2,
        )
    import torch

    if threads:
        torch.set_num_threads(threads)
    progress = None if (quiet or as_json) else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    if is_recipe:
        if quick and tier not in (None, "quick"):
            fail(f"--quick and --tier {tier} contradict each other; give one", 2)
        if sum((check, sequential is not None, profile)) > 1:
            fail("--check, --sequential and --profile contradict each other; give one", 2)
        if profile:
            from rec_eraser.workflows.training_profile import profile_training

            _report(
                lambda: profile_training(
                    target, tier or ("quick" if quick else "medium"), steps, out, say=progress, base_model=base_model
                ),
                as_json,
                show_profile,
            )
            return
        if check:
            _bench_check(
                Path(target), tier or ("quick" if quick else "full"), out, base_model, precision, as_json, progress
            )
            return
        if sequential is not None:
            _bench_sequential(
                Path(target),
                tier or ("quick" if quick else "medium"),
                sequential,
                checkpoints,
                batch_fraction,
                out,
                base_model,
                precision,
                as_json,
                progress,
            )
            return
        _bench_recipe(
            Path(target), tier or ("quick" if quick else "full"), out, methods, base_model, precision, as_json, progress
        )
        return
    if target == "scaling":
        _bench_scaling(sizes, task, out, base_model, cap_seconds or None, as_json, progress)
        return
    if target == "encoder":
        from rec_eraser.workflows.encoder_membership import encoder_membership

        _report(lambda: encoder_membership(dataset, seed=seed, say=progress), as_json, show_encoder)
        return
    if target == "calibration":
        _bench_calibration(base_model, forget_sets, forget_users, seed, as_json, progress)
        return
    if target == "damping":
        try:
            scale_values = [float(x) for x in scales.split(",")]
        except ValueError:
            fail(f"--scales {scales!r}: expected comma-separated numbers")
        _bench_damping(base_model, scale_values, seed, as_json, progress)
        return
    from rec_eraser.bench.solvers import run_solver_benchmark

    def solvers() -> dict[str, Any]:
        result = run_solver_benchmark(
            base_model, methods.split(",") if methods else None, n_train, curvature, seed=seed, on_progress=progress
        )
        return {**result, "threads": torch.get_num_threads()}

    _report(solvers, as_json, show_solvers)


def _report(
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


def _bench_recipe(
    recipe: Path,
    tier: str,
    out: Optional[Path],
    methods: Optional[str],
    base_model: Optional[Path],
    precision: Optional[str],
    as_json: bool,
    progress: Any,
) -> None:
    from rec_eraser.workflows.benchmark import run_benchmark

    _report(
        lambda: run_benchmark(
            recipe,
            tier=tier,
            out=out,
            methods=methods.split(",") if methods else None,
            base_model=base_model,
            say=progress,
            precision=precision,
        ),
        as_json,
        show_recipe,
    )


def _bench_check(
    recipe: Path,
    tier: str,
    out: Optional[Path],
    base_model: Optional[Path],
    precision: Optional[str],
    as_json: bool,
    progress: Any,
) -> None:
    from rec_eraser.workflows.benchmark import check_adapter

    result = _report(
        lambda: check_adapter(recipe, tier=tier, out=out, base_model=base_model, say=progress, precision=precision),
        as_json,
        show_check,
    )
    if not result["verdict"]:
        raise typer.Exit(1)


def _bench_sequential(
    recipe: Path,
    tier: str,
    batches: int,
    checkpoints: str,
    batch_fraction: float,
    out: Optional[Path],
    base_model: Optional[Path],
    precision: Optional[str],
    as_json: bool,
    progress: Any,
) -> None:
    from rec_eraser.workflows.sequential import run_sequential

    try:
        marks = tuple(int(x) for x in checkpoints.split(","))
    except ValueError:
        fail(f"--checkpoints {checkpoints!r}: expected comma-separated integers", 2)
    _report(
        lambda: run_sequential(
            recipe,
            tier=tier,
            batches=batches,
            checkpoints=marks,
            batch_fraction=batch_fraction,
            out=out,
            base_model=base_model,
            say=progress,
            precision=precision,
        ),
        as_json,
        show_sequential,
    )


def _bench_scaling(
    sizes: str,
    task: str,
    out: Optional[Path],
    base_model: Optional[Path],
    cap_seconds: Optional[float],
    as_json: bool,
    progress: Any,
) -> None:
    from rec_eraser.tasks.prompt_registry import task_names
    from rec_eraser.workflows.scaling import run_scaling

    if task not in task_names():
        fail(f"--task {task!r}: choose one of {', '.join(task_names())}", 2)
    try:
        size_values = [int(x) for x in sizes.split(",")]
    except ValueError:
        fail(f"--sizes {sizes!r}: expected comma-separated integers")
    _report(
        lambda: run_scaling(
            size_values, task=task, out=out, base_model=base_model, cap_seconds=cap_seconds, say=progress
        ),
        as_json,
        show_scaling,
    )


def _bench_calibration(
    base_model: Optional[Path], sets: int, forget_users: int, seed: int, as_json: bool, progress: Any
) -> None:
    from rec_eraser.bench.targets import markdown, run_target_study

    _report(
        lambda: run_target_study(base_model, sets=sets, forget_users=forget_users, seed=seed, on_progress=progress),
        as_json,
        lambda result: console.print(markdown(result), markup=False),
    )


def _bench_damping(base_model: Optional[Path], scales: list[float], seed: int, as_json: bool, progress: Any) -> None:
    from rec_eraser.bench.damping import run_damping_check

    _report(
        lambda: run_damping_check(base_model, scales=scales, seed=seed, on_progress=progress), as_json, show_damping
    )
