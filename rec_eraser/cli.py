"""The ``rec-eraser`` command line: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Unlearning for LLM-based recommenders: influence-function edits of LoRA adapters.")
err = Console(stderr=True)
console = Console()


def _fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")  # one line, never wrapped
    raise typer.Exit(code)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=float) + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr.")) -> None:
    # transformers' deprecation notices (raised inside peft) are noise to a user of this tool
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def prepare(
    dataset: str = typer.Option(..., "--dataset", help="ml-100k, lastfm, steam, or a folder of RecBole atomic files with its mapping."),
    task: str = typer.Option(..., "--task", help="llara or tallrec."),
    out: Path = typer.Option(..., "--out", help="The run folder to create (must not exist or be empty)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the candidate draws."),
    negatives: int = typer.Option(20, "--negatives", min=1, help="LLaRA: random negatives per candidate set."),
    max_history: int = typer.Option(10, "--max-history", min=1, help="Items of history in a prompt."),
    max_users: Optional[int] = typer.Option(None, "--max-users", min=1, help="Keep only the first N users (small demos)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Where lastfm/steam files live (default $REC_ERASER_DATA)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
) -> None:
    """Read a dataset, split it per user in time, build a task's instances and write the run folder."""
    from rec_eraser.data import DatasetError
    from rec_eraser.tasks import TaskError
    from rec_eraser.tasks.prepare import prepare as prepare_run

    try:
        summary = prepare_run(dataset, task, out, seed=seed, negatives=negatives, max_history=max_history, max_users=max_users, root=root)
    except (DatasetError, TaskError, FileExistsError, FileNotFoundError) as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(summary)
        return
    table = Table("users", "items", "interactions", "train", "valid", "test", "data hash")
    table.add_row(*(str(summary[k]) for k in ("users", "items", "interactions", "train", "valid", "test")), summary["data_hash"][:12])
    console.print(f"prepared {summary['task']} on {summary['dataset']} into {out}")
    console.print(table)


def _progress_bar(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err, disable=quiet, transient=False)


@app.command()
def train(
    run: Path = typer.Argument(..., help="A run folder made by `rec-eraser prepare`."),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="A recipe TOML file (default: recipes/demo-<task>.toml)."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="A local Hugging Face causal LM folder (overrides the recipe; default: embedded SmolLM2)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train the run's first adapter version (v0000): LoRA (+ LLaRA's item projector)."""
    from rec_eraser.tasks.prepare import load_manifest
    from rec_eraser.training.encode import EncodingError
    from rec_eraser.training.recipe import RecipeError, load_recipe

    try:
        task = load_manifest(run)["task"]
        recipe = load_recipe(recipe_file or Path(__file__).resolve().parent.parent / "recipes" / f"demo-{task}.toml")
        if base_model is not None:
            recipe = dataclasses.replace(recipe, base_model=str(base_model))
        from rec_eraser.training.train import train_run

        with _progress_bar(quiet or as_json) as bar:
            job = bar.add_task("training", total=None)
            version = train_run(run, recipe, progress=lambda step, total, loss: bar.update(
                job, completed=step, total=total, description=f"training (loss {loss:.3f})"))
    except (RecipeError, EncodingError, FileNotFoundError, FileExistsError, FloatingPointError, OSError) as exc:
        _fail(str(exc))
    manifest = json.loads((version / "manifest.json").read_text())
    if as_json:
        _emit_json({"version": version.name, "path": str(version), **manifest["training"], "train_instances": manifest["train_instances"]})
        return
    t = manifest["training"]
    console.print(f"trained {version} on {manifest['train_instances']} instances: {t['steps']} steps in {t['seconds']:.0f} s "
                  f"({t['seconds_per_instance_step']:.2f} s per instance-step), final epoch loss {t['final_loss']:.3f}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A trained run folder."),
    version: Optional[str] = typer.Option(None, "--version", help="Adapter version (default: the newest)."),
    split: str = typer.Option("test", "--split", help="test or valid."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N prompts."),
    no_generate: bool = typer.Option(False, "--no-generate", help="LLaRA: ranking mode only (no greedy generation)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Metrics of an adapter version on the run's test prompts, beside random and popularity baselines."""
    from rec_eraser.evaluation.evaluate import evaluate_version
    from rec_eraser.tasks import TaskError

    try:
        with _progress_bar(quiet or as_json) as bar:
            job = bar.add_task("evaluating", total=None)
            result = evaluate_version(run, version, split, limit, generate=not no_generate, tick=lambda k: bar.advance(job, k))
    except (TaskError, FileNotFoundError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
        return
    keys = [k for k in ("hit@1", "gen_hit@1", "valid_ratio", "gen_hit@1_over_valid", "ndcg@5", "ndcg@10", "auc") if k in result]
    table = Table("model", *keys)
    table.add_row(f"adapter {result['version']}", *(_fmt(result[k]) for k in keys))
    for name, figures in result["baselines"].items():
        table.add_row(name, *(_fmt(figures.get(k)) for k in keys))
    console.print(f"{result['task']} on {result['n']} {result['split']} prompts ({result['seconds']:.0f} s)")
    console.print(table)


@app.command()
def bench(
    target: str = typer.Argument(..., help="What to benchmark: 'solvers' or 'damping'."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="A local Hugging Face causal LM folder (default: a tiny random Llama)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated solvers (default: all)."),
    n_train: int = typer.Option(32, "--n-train", min=4, help="Training instances of the synthetic task."),
    curvature: str = typer.Option("ggn", "--curvature", help="'ggn' or 'hessian'."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."),
    scales: str = typer.Option("0.01,0.1,1", "--scales", help="damping: the automatic rule's scales to compare."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Benchmark the influence solvers on one edit request: accuracy, residual, HVPs, seconds."""
    if target not in ("solvers", "damping"):
        _fail(f"unknown benchmark {target!r}: choose 'solvers' or 'damping' (recipe benchmarks come with the evaluation harness)", 2)
    import torch

    from rec_eraser.core import SolverError

    if threads:
        torch.set_num_threads(threads)
    progress = None if (quiet or as_json) else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    if target == "damping":
        try:
            scale_values = [float(x) for x in scales.split(",")]
        except ValueError:
            _fail(f"--scales {scales!r}: expected comma-separated numbers")
        _bench_damping(base_model, scale_values, seed, as_json, progress)
        return
    from rec_eraser.bench.solvers import run_solver_benchmark

    try:
        result = run_solver_benchmark(base_model, methods.split(",") if methods else None, n_train, curvature, seed=seed, on_progress=progress)
    except (ValueError, FileNotFoundError, OSError, SolverError) as exc:
        _fail(str(exc))
    result["threads"] = torch.get_num_threads()
    if as_json:
        _emit_json(result)
        return
    console.print(f"p = {result['p']}, n = {result['n_train']}, curvature = {result['curvature']}, damping = {result['damping']:.3g} ({result['damping_rule']})")
    console.print(f"gradient {result['grad_seconds'] * 1e3:.1f} ms, HVP {result['hvp_seconds'] * 1e3:.1f} ms per micro-batch of {result['batch_size']} "
              f"({result['hvp_to_grad_ratio']:.2f} gradients)")
    other = "hessian" if result["curvature"] == "ggn" else "ggn"
    fwd = result["hvp_seconds_forward_over_reverse"]
    console.print(f"{other} HVP {result[f'hvp_seconds_{other}'] * 1e3:.1f} ms; Hessian by forward-over-reverse "
              + ("failed" if fwd is None else f"{fwd * 1e3:.1f} ms"))
    table = Table("solver", "relative error", "relative residual", "HVPs", "grad passes", "seconds")
    for name, row in result["solvers"].items():
        if "error" in row:
            table.add_row(name, "failed", row["error"], "", "", "")
        else:
            table.add_row(name, _fmt(row["relative_error"]), _fmt(row["relative_residual"]), str(row["hvps"]), str(row["gradient_passes"]), _fmt(row["seconds"]))
    console.print(table)


def _bench_damping(base_model: Optional[Path], scales: list[float], seed: int, as_json: bool, progress: Any) -> None:
    from rec_eraser.bench.damping import run_damping_check
    from rec_eraser.core import SolverError
    from rec_eraser.models import EmbeddedModelError

    try:
        result = run_damping_check(base_model, scales=scales, seed=seed, on_progress=progress)
    except (FileNotFoundError, OSError, SolverError, EmbeddedModelError) as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
        return
    console.print(f"n = {result['n_train']} training instances, {result['forgotten_instances']} forgotten, {result['test_instances']} test")
    table = Table("model", "damping", "test AUC", "forgotten loss", "unseen loss", "kept loss", "corr. with Retrain", "seconds")
    for name, row in result["rows"].items():
        table.add_row(name, _fmt(row.get("damping")), _fmt(row["auc"]), _fmt(row["forgotten_loss"]), _fmt(row["unseen_loss"]),
                      _fmt(row["kept_loss"]), _fmt(row["score_correlation_with_retrain"]), _fmt(row["seconds"]))
    console.print(table)


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Forget training instances of a small LoRA adapter and show what changed.

    A placeholder until the recommendation layer lands: it runs on the tiny random Llama
    and its synthetic task, not yet on ml-100k with SmolLM2.
    """
    from rec_eraser.bench.demo import run_placeholder_demo

    progress = None if (quiet or as_json) else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    result = run_placeholder_demo(on_progress=progress)
    if as_json:
        _emit_json(result)
        return
    table = Table("adapter", "loss on forgotten instances", "loss on never-seen instances", "loss on kept instances")
    for name in ("original", "unlearned"):
        m = result[name]["metrics"]
        table.add_row(name, _fmt(m["forgotten_loss"]), _fmt(m["unseen_loss"]), _fmt(m["kept_loss"]))
    console.print(table)
    r = result["report"]
    console.print(f"forgot {result['forgotten']} of {r['n_train']} instances with {r['method']}: {r['hvps']} HVPs, "
              f"relative residual {r['relative_residual']:.2g}, damping {r['damping']:.3g}, {r['seconds']:.2f} s")


if __name__ == "__main__":  # pragma: no cover
    app()
