"""``rec-eraser bench``: the solver, damping and scaling benchmarks and every recipe study."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from rec_eraser.cli.bench_named import NAMED_BENCHMARKS, BenchOptions, report
from rec_eraser.cli.bench_tables import (
    show_check,
    show_profile,
    show_recipe,
    show_sequential,
)
from rec_eraser.cli.common import app, err, fail
from rec_eraser.workflows.data_scale import ML20M_INTERACTIONS


@app.command()
def bench(
    target: str = typer.Argument(
        ...,
        help="What to benchmark: a named benchmark ("
        + "; ".join(f"'{name}': {b.help}" for name, b in NAMED_BENCHMARKS.items())
        + ") or a benchmark recipe: a file (recipes/ml100k-<task>-<edit>.toml) or a shipped recipe's name "
        "(ml100k-<task>-<edit>).",
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
    task: str = typer.Option("tallrec", "--task", help="scaling and data-size: 'tallrec' or 'llara'."),
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
    interactions: int = typer.Option(
        ML20M_INTERACTIONS, "--interactions", min=2, help="data-size: interactions of the synthetic dataset."
    ),
    max_users: Optional[int] = typer.Option(
        1000,
        "--max-users",
        min=0,
        help="data-size: the users prepare keeps (the first N; the checks cover all; 0: every user).",
    ),
    tokens: int = typer.Option(300, "--tokens", min=1, help="model-scale: tokens of one instance."),
    train_instances: int = typer.Option(
        10_000, "--train-instances", min=1, help="model-scale: the training set of the Retrain compared with."
    ),
    epochs: int = typer.Option(3, "--epochs", min=1, help="model-scale: the Retrain's epochs."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Benchmarks: a named benchmark (the TARGET list: solvers, damping, calibration, scaling, the
    item encoder, a 7B-shaped model, data at ML-20M's size) or every unlearning method on one
    experiment (a recipe file)."""
    from rec_eraser.shipped import shipped_names

    is_recipe = target not in NAMED_BENCHMARKS and (
        target.endswith(".toml") or Path(target).is_file() or target in shipped_names("recipes")
    )
    if target not in NAMED_BENCHMARKS and not is_recipe:
        fail(
            f"unknown benchmark {target!r}: choose {', '.join(repr(n) for n in NAMED_BENCHMARKS)}, a recipe file such "
            "as recipes/ml100k-tallrec-ir.toml, or a shipped recipe's name such as ml100k-tallrec-ir",
            2,
        )
    import torch

    if threads:
        torch.set_num_threads(threads)
    progress = None if (quiet or as_json) else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    if not is_recipe:
        options = BenchOptions(
            base_model=base_model,
            methods=methods,
            n_train=n_train,
            curvature=curvature,
            scales=scales,
            sizes=sizes,
            task=task,
            dataset=dataset,
            cap_seconds=cap_seconds or None,
            forget_sets=forget_sets,
            forget_users=forget_users,
            interactions=interactions,
            max_users=max_users or None,
            tokens=tokens,
            train_instances=train_instances,
            epochs=epochs,
            seed=seed,
            out=out,
            as_json=as_json,
            progress=progress,
        )
        NAMED_BENCHMARKS[target].run(options)
        return
    if quick and tier not in (None, "quick"):
        fail(f"--quick and --tier {tier} contradict each other; give one", 2)
    if sum((check, sequential is not None, profile)) > 1:
        fail("--check, --sequential and --profile contradict each other; give one", 2)
    if profile:
        from rec_eraser.workflows.training_profile import profile_training

        report(
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

    report(
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

    result = report(
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
    report(
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
