"""``rec-eraser bench``: the solver, damping and scaling benchmarks and every recipe study."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from rec_eraser.cli.common import USER_ERRORS, app, console, emit_json, err, fail, fail_on, fmt


@app.command()
def bench(
    target: str = typer.Argument(
        ...,
        help="What to benchmark: 'solvers', 'damping', 'calibration', 'scaling', or a benchmark recipe: a file (recipes/ml100k-<task>-<edit>.toml) or a shipped recipe's name (ml100k-<task>-<edit>).",
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
    task: str = typer.Option("tallrec", "--task", help="scaling: 'tallrec' or 'llara'."),
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

    named = ("solvers", "damping", "calibration", "scaling")
    is_recipe = target not in named and (
        target.endswith(".toml") or Path(target).is_file() or target in shipped_names("recipes")
    )
    if target not in named and not is_recipe:
        fail(
            f"unknown benchmark {target!r}: choose 'solvers', 'damping', 'calibration', 'scaling', a recipe file such as "
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
        if check and sequential is not None:
            fail("--check and --sequential contradict each other; give one", 2)
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
        _bench_scaling(sizes, task, out, base_model, as_json, progress)
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

    _report(solvers, as_json, _show_solvers)


def _show_solvers(result: dict[str, Any]) -> None:
    console.print(
        f"p = {result['p']}, n = {result['n_train']}, curvature = {result['curvature']}, damping = {result['damping']:.3g} ({result['damping_rule']})"
    )
    console.print(
        f"gradient {result['grad_seconds'] * 1e3:.1f} ms, HVP {result['hvp_seconds'] * 1e3:.1f} ms per micro-batch of {result['batch_size']} "
        f"({result['hvp_to_grad_ratio']:.2f} gradients)"
    )
    other = "hessian" if result["curvature"] == "ggn" else "ggn"
    fwd = result["hvp_seconds_forward_over_reverse"]
    console.print(
        f"{other} HVP {result[f'hvp_seconds_{other}'] * 1e3:.1f} ms; Hessian by forward-over-reverse "
        + ("failed" if fwd is None else f"{fwd * 1e3:.1f} ms")
    )
    table = Table("solver", "relative error", "relative residual", "HVPs", "grad passes", "seconds")
    for name, row in result["solvers"].items():
        if "error" in row:
            table.add_row(name, "failed", row["error"], "", "", "")
        else:
            table.add_row(
                name,
                fmt(row["relative_error"]),
                fmt(row["relative_residual"]),
                str(row["hvps"]),
                str(row["gradient_passes"]),
                fmt(row["seconds"]),
            )
    console.print(table)
    ceiling = result.get("block_jacobi_cg_iterations")
    if ceiling:
        kinds = list(next(iter(ceiling.values())))
        table = Table("CG iterations to 1e-4", *(k.replace("_", " ") for k in kinds))
        for damping_label, row in ceiling.items():
            table.add_row(damping_label.replace("_", " "), *(str(row[k]) for k in kinds))
        console.print(table)


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
        _show_recipe,
    )


def _show_recipe(result: dict[str, Any]) -> None:
    from rec_eraser.workflows.bench_report import COLUMNS, rows

    shown = (
        "utility",
        "utility_gap",
        "agreement_with_retrain",
        "forget_loss",
        "membership_auc",
        "recovery",
        "seconds",
        "ratio_to_retrain",
    )
    table = Table("method", *(c for c in shown if c in COLUMNS))
    for row in rows(result):
        table.add_row(row["method"], *(fmt(row.get(c)) for c in shown))
    console.print(
        f"{result['experiment']['task']} {result['experiment']['edit']}: {result['forget_instances']} of "
        f"{result['train_instances']} training instances edited; {result['test_prompts']} test prompts ({result['seconds']:.0f} s)"
    )
    console.print(table)
    console.print(f"report: {result['report']}")


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
        _show_check,
    )
    if not result["verdict"]:
        raise typer.Exit(1)


def _show_check(result: dict[str, Any]) -> None:
    b, mem = result["beats_baselines"], result["memorised"]
    mark = lambda ok: "yes" if ok else "NO"  # noqa: E731
    console.print(
        f"{result['train_instances']} training instances, {result['training']['seconds']:.0f} s of training; {result['test_prompts']} test prompts"
    )
    console.print(
        f"beats the baseline: {mark(b['verdict'])} ({b['metric']} {fmt(b['adapter'])} vs {b['baseline']} {fmt(b['baseline_value'])})"
    )
    console.print(
        f"memorised: {mark(mem['verdict'])} (gap {fmt(mem.get('gap'))} ± {fmt(mem.get('standard_error'))}, {mem.get('untrained_source')})"
    )
    console.print(f"report: {result['report']}")


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
        _show_sequential,
    )


def _show_sequential(result: dict[str, Any]) -> None:
    table = Table(
        "after batch",
        "forgotten",
        "forget loss: update",
        "Retrain",
        "original",
        "relative error",
        "agreement",
        "utility gap",
        "retained drift",
        "trusted",
        "update / Retrain",
    )
    for row in result["checkpoints"]:
        trusted = {True: "yes", False: "NO: retrain", None: "–"}[row.get("trusted")]
        table.add_row(
            str(row["batch"]),
            str(row["forget_instances"]),
            fmt(row["current"]["forget_loss"]),
            fmt(row["retrain"]["forget_loss"]),
            fmt(row["original"]["forget_loss"]),
            fmt(row["relative_error"]),
            fmt(row["current"]["agreement_with_retrain"]),
            fmt(row["current"]["utility_gap"]),
            fmt(row["retained_drift"]),
            trusted,
            fmt(row["ratio_to_retrain"]),
        )
    console.print(table)
    console.print(f"report: {result['report']}")


def _bench_scaling(
    sizes: str, task: str, out: Optional[Path], base_model: Optional[Path], as_json: bool, progress: Any
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
        lambda: run_scaling(size_values, task=task, out=out, base_model=base_model, say=progress),
        as_json,
        _show_scaling,
    )


def _show_scaling(result: dict[str, Any]) -> None:
    table = Table("training instances", "forgotten", "retrain s", "update s", "update / retrain")
    for row in result["sizes"]:
        table.add_row(
            str(row["n"]),
            str(row["forgotten_instances"]),
            fmt(row["retrain_seconds"]),
            fmt(row["update_seconds"]),
            fmt(row["update_to_retrain"]),
        )
    console.print(table)


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
        lambda: run_damping_check(base_model, scales=scales, seed=seed, on_progress=progress), as_json, _show_damping
    )


def _show_damping(result: dict[str, Any]) -> None:
    console.print(
        f"n = {result['n_train']} training instances, {result['forgotten_instances']} forgotten, {result['test_instances']} test"
    )
    table = Table(
        "model", "damping", "test AUC", "forgotten loss", "unseen loss", "kept loss", "corr. with Retrain", "seconds"
    )
    for name, row in result["rows"].items():
        table.add_row(
            name,
            fmt(row.get("damping")),
            fmt(row["auc"]),
            fmt(row["forgotten_loss"]),
            fmt(row["unseen_loss"]),
            fmt(row["kept_loss"]),
            fmt(row["score_correlation_with_retrain"]),
            fmt(row["seconds"]),
        )
    console.print(table)
