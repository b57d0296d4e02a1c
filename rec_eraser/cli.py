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

from rec_eraser.errors import RecEraserError
from rec_eraser.jsonable import finite

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Unlearning for LLM-based recommenders: influence-function edits of LoRA adapters.")
err = Console(stderr=True)
#: what a command reports as one line and a non-zero exit: the project's own errors, plus the
#: library's argument checks (ValueError) and the file system's; anything else is a bug
USER_ERRORS = (RecEraserError, ValueError, OSError)
console = Console()


def _fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")  # one line, never wrapped
    raise typer.Exit(code)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(finite(obj), indent=2, allow_nan=False, default=str) + "\n")


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
    from rec_eraser.tasks.prepare import prepare as prepare_run

    try:
        summary = prepare_run(dataset, task, out, seed=seed, negatives=negatives, max_history=max_history, max_users=max_users, root=root)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(summary)
        return
    table = Table("users", "items", "interactions", "train", "valid", "test", "data hash")
    table.add_row(*(str(summary[k]) for k in ("users", "items", "interactions", "train", "valid", "test")), summary["data_hash"][:12])
    console.print(f"prepared {summary['task']} on {summary['dataset']} into {out}")
    console.print(table)


def _run_dir(run: str) -> Path:
    """A run folder given as a path or as a name under adapters/; one-line error otherwise."""
    from rec_eraser.workflows import RegistryError, resolve_run

    try:
        return resolve_run(run)
    except RegistryError as exc:
        _fail(str(exc))


def _progress_bar(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err, disable=quiet, transient=False)


@app.command()
def train(
    run: str = typer.Argument(..., help="A run folder made by `rec-eraser prepare`, or its name under adapters/."),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="A recipe TOML file (default: recipes/demo-<task>.toml)."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="A local Hugging Face causal LM folder (overrides the recipe; default: embedded SmolLM2)."),
    measure_gap: bool = typer.Option(True, "--measure-gap/--no-measure-gap",
                                     help="Measure the adapter's memorisation gap now (256 forward passes), so no deletion request pays it."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train the run's first adapter version (v0000): LoRA (+ LLaRA's item projector).

    By default it also measures the adapter's memorisation gap, which the calibrated update of
    every later request reads (recorded in v0000's manifest).
    """
    from rec_eraser.tasks.prepare import load_manifest
    from rec_eraser.training.recipe import load_recipe

    run = _run_dir(run)
    try:
        task = load_manifest(run)["task"]
        recipe = load_recipe(recipe_file or Path(__file__).resolve().parent.parent / "recipes" / f"demo-{task}.toml")
        if base_model is not None:
            recipe = dataclasses.replace(recipe, base_model=str(base_model))
        from rec_eraser.training.train import train_run
        from rec_eraser.workflows.unlearn import training_memorisation

        with _progress_bar(quiet or as_json) as bar:
            job = bar.add_task("training", total=None)

            def measure(loaded, instances):
                bar.update(job, description="measuring the memorisation gap")
                return training_memorisation(run, recipe)(loaded, instances)

            version = train_run(run, recipe, progress=lambda step, total, loss: bar.update(
                job, completed=step, total=total, description=f"training (loss {loss:.3f})"), measure=measure if measure_gap else None)
    except USER_ERRORS as exc:
        _fail(str(exc))
    manifest = json.loads((version / "manifest.json").read_text())
    gap = ((manifest.get("metrics") or {}).get("calibration") or {}).get("memorisation_gap")
    if as_json:
        _emit_json({"version": version.name, "path": str(version), **manifest["training"], "train_instances": manifest["train_instances"],
                    "memorisation_gap": gap})
        return
    t = manifest["training"]
    console.print(f"trained {version} on {manifest['train_instances']} instances: {t['steps']} steps in {t['seconds']:.0f} s "
                  f"({t['seconds_per_instance_step']:.2f} s per instance-step), final epoch loss {t['final_loss']:.3f}")
    if gap:
        console.print(f"memorisation gap {gap['gap']:.3g} ± {gap['standard_error']:.2g} (never-trained minus trained loss, "
                      f"{gap['trained_instances']} + {gap['untrained_instances']} instances, {gap['seconds']:.0f} s)")


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="A trained run folder, or its name under adapters/."),
    version: Optional[str] = typer.Option(None, "--version", help="Adapter version (default: the newest)."),
    split: str = typer.Option("test", "--split", help="test or valid."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N prompts."),
    no_generate: bool = typer.Option(False, "--no-generate", help="LLaRA: ranking mode only (no greedy generation)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Metrics of an adapter version on the run's test prompts, beside baselines (random, popularity, SASRec alone; like-rate)."""
    from rec_eraser.evaluation.evaluate import evaluate_version

    run = _run_dir(run)
    try:
        with _progress_bar(quiet or as_json) as bar:
            job = bar.add_task("evaluating", total=None)
            result = evaluate_version(run, version, split, limit, generate=not no_generate, tick=lambda k: bar.advance(job, k))
    except USER_ERRORS as exc:
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
    target: str = typer.Argument(..., help="What to benchmark: 'solvers', 'damping', 'scaling', or a benchmark recipe file (recipes/ml100k-<task>-<edit>.toml)."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="A local Hugging Face causal LM folder (default: a tiny random Llama)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated solvers, or a recipe's methods (default: the tier's `methods` setting, else all)."),
    quick: bool = typer.Option(False, "--quick", help="Recipe benchmarks: the same as --tier quick."),
    tier: Optional[str] = typer.Option(None, "--tier", help="Recipe benchmarks: 'quick' (mechanics and cost, under 30 minutes on 2 CPU cores), "
                                       "'medium' (sized to judge fidelity) or 'full' (the recipe's own sizes; the default)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Recipe benchmarks: the folder for the run and its report (default: adapters/bench/RECIPE[-TIER])."),
    n_train: int = typer.Option(32, "--n-train", min=4, help="Training instances of the synthetic task."),
    curvature: str = typer.Option("ggn", "--curvature", help="'ggn' or 'hessian'."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."),
    scales: str = typer.Option("0.01,0.1,1", "--scales", help="damping: the automatic rule's scales to compare."),
    sizes: str = typer.Option("32,64,128", "--sizes", help="scaling: training-set sizes."),
    sequential: Optional[int] = typer.Option(None, "--sequential", min=1, help="Recipe benchmarks (ir): apply this many successive "
                                             "deletion batches, one request each, and compare with Retrain at --checkpoints."),
    checkpoints: str = typer.Option("1,5,10", "--checkpoints", help="--sequential: the batches after which Retrain is trained and compared."),
    batch_fraction: float = typer.Option(0.01, "--batch-fraction", min=0.0, help="--sequential: the share of the trained users per batch."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Recipe benchmarks: train in 'float32' or 'bfloat16' whatever the tier says "
                                            "(where bfloat16 is slow on this CPU; recorded in the run's recipe, so a run folder keeps one precision)."),
    check: bool = typer.Option(False, "--check", help="Recipe benchmarks: train (or reuse) the tier's v0000 only and say whether it "
                               "beats the task's baseline and memorised (the can_judge conditions that need no Retrain); exit 1 when it does not."),
    task: str = typer.Option("tallrec", "--task", help="scaling: 'tallrec' or 'llara'."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Benchmarks: the influence solvers on one edit request ('solvers'), the damping rule on a
    real adapter ('damping'), or every unlearning method on one experiment (a recipe file)."""
    is_recipe = target not in ("solvers", "damping", "scaling") and (target.endswith(".toml") or Path(target).is_file())
    if target not in ("solvers", "damping", "scaling") and not is_recipe:
        _fail(f"unknown benchmark {target!r}: choose 'solvers', 'damping', 'scaling' or a recipe file such as recipes/ml100k-tallrec-ir.toml", 2)
    import torch

    if threads:
        torch.set_num_threads(threads)
    progress = None if (quiet or as_json) else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    if is_recipe:
        if quick and tier not in (None, "quick"):
            _fail(f"--quick and --tier {tier} contradict each other; give one", 2)
        if check and sequential is not None:
            _fail("--check and --sequential contradict each other; give one", 2)
        if check:
            _bench_check(Path(target), tier or ("quick" if quick else "full"), out, base_model, precision, as_json, progress)
            return
        if sequential is not None:
            _bench_sequential(Path(target), tier or ("quick" if quick else "medium"), sequential, checkpoints, batch_fraction, out,
                              base_model, precision, as_json, progress)
            return
        _bench_recipe(Path(target), tier or ("quick" if quick else "full"), out, methods, base_model, precision, as_json, progress)
        return
    if target == "scaling":
        _bench_scaling(sizes, task, out, base_model, as_json, progress)
        return
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
    except USER_ERRORS as exc:
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
    ceiling = result.get("block_jacobi_cg_iterations")
    if ceiling:
        kinds = list(next(iter(ceiling.values())))
        table = Table("CG iterations to 1e-4", *(k.replace("_", " ") for k in kinds))
        for damping_label, row in ceiling.items():
            table.add_row(damping_label.replace("_", " "), *(str(row[k]) for k in kinds))
        console.print(table)


def _bench_recipe(recipe: Path, tier: str, out: Optional[Path], methods: Optional[str], base_model: Optional[Path], precision: Optional[str],
                  as_json: bool, progress: Any) -> None:
    from rec_eraser.workflows.benchmark import run_benchmark

    try:
        result = run_benchmark(recipe, tier=tier, out=out, methods=methods.split(",") if methods else None, base_model=base_model, say=progress,
                               precision=precision)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
        return
    from rec_eraser.workflows.bench_report import COLUMNS, rows

    shown = ("utility", "utility_gap", "agreement_with_retrain", "forget_loss", "membership_auc", "recovery", "seconds", "ratio_to_retrain")
    table = Table("method", *(c for c in shown if c in COLUMNS))
    for row in rows(result):
        table.add_row(row["method"], *(_fmt(row.get(c)) for c in shown))
    console.print(f"{result['experiment']['task']} {result['experiment']['edit']}: {result['forget_instances']} of "
                  f"{result['train_instances']} training instances edited; {result['test_prompts']} test prompts ({result['seconds']:.0f} s)")
    console.print(table)
    console.print(f"report: {result['report']}")


def _bench_check(recipe: Path, tier: str, out: Optional[Path], base_model: Optional[Path], precision: Optional[str], as_json: bool,
                 progress: Any) -> None:
    from rec_eraser.workflows.benchmark import check_adapter

    try:
        result = check_adapter(recipe, tier=tier, out=out, base_model=base_model, say=progress, precision=precision)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
        if not result["verdict"]:
            raise typer.Exit(1)
        return
    b, mem = result["beats_baselines"], result["memorised"]
    mark = lambda ok: "yes" if ok else "NO"  # noqa: E731
    console.print(f"{result['train_instances']} training instances, {result['training']['seconds']:.0f} s of training; {result['test_prompts']} test prompts")
    console.print(f"beats the baseline: {mark(b['verdict'])} ({b['metric']} {_fmt(b['adapter'])} vs {b['baseline']} {_fmt(b['baseline_value'])})")
    console.print(f"memorised: {mark(mem['verdict'])} (gap {_fmt(mem.get('gap'))} ± {_fmt(mem.get('standard_error'))}, {mem.get('untrained_source')})")
    console.print(f"report: {result['report']}")
    if not result["verdict"]:
        raise typer.Exit(1)


def _bench_sequential(recipe: Path, tier: str, batches: int, checkpoints: str, batch_fraction: float, out: Optional[Path],
                      base_model: Optional[Path], precision: Optional[str], as_json: bool, progress: Any) -> None:
    from rec_eraser.workflows.sequential import run_sequential

    try:
        marks = tuple(int(x) for x in checkpoints.split(","))
    except ValueError:
        _fail(f"--checkpoints {checkpoints!r}: expected comma-separated integers", 2)
    try:
        result = run_sequential(recipe, tier=tier, batches=batches, checkpoints=marks, batch_fraction=batch_fraction, out=out,
                                base_model=base_model, say=progress, precision=precision)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
        return
    table = Table("after batch", "forgotten", "forget loss: update", "Retrain", "original", "relative error", "agreement",
                  "utility gap", "retained drift", "trusted", "update / Retrain")
    for row in result["checkpoints"]:
        trusted = {True: "yes", False: "NO: retrain", None: "–"}[row.get("trusted")]
        table.add_row(str(row["batch"]), str(row["forget_instances"]), _fmt(row["current"]["forget_loss"]), _fmt(row["retrain"]["forget_loss"]),
                      _fmt(row["original"]["forget_loss"]), _fmt(row["relative_error"]), _fmt(row["current"]["agreement_with_retrain"]),
                      _fmt(row["current"]["utility_gap"]), _fmt(row["retained_drift"]), trusted, _fmt(row["ratio_to_retrain"]))
    console.print(table)
    console.print(f"report: {result['report']}")


def _bench_scaling(sizes: str, task: str, out: Optional[Path], base_model: Optional[Path], as_json: bool, progress: Any) -> None:
    from rec_eraser.workflows.scaling import run_scaling

    if task not in ("tallrec", "llara"):
        _fail(f"--task {task!r}: choose 'tallrec' or 'llara'", 2)
    try:
        size_values = [int(x) for x in sizes.split(",")]
    except ValueError:
        _fail(f"--sizes {sizes!r}: expected comma-separated integers")
    try:
        result = run_scaling(size_values, task=task, out=out, base_model=base_model, say=progress)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
        return
    table = Table("training instances", "forgotten", "retrain s", "update s", "update / retrain")
    for row in result["sizes"]:
        table.add_row(str(row["n"]), str(row["forgotten_instances"]), _fmt(row["retrain_seconds"]), _fmt(row["update_seconds"]), _fmt(row["update_to_retrain"]))
    console.print(table)


def _bench_damping(base_model: Optional[Path], scales: list[float], seed: int, as_json: bool, progress: Any) -> None:
    from rec_eraser.bench.damping import run_damping_check

    try:
        result = run_damping_check(base_model, scales=scales, seed=seed, on_progress=progress)
    except USER_ERRORS as exc:
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


# -- unlearning workflows ------------------------------------------------------------------
SOLVER_HELP = ("Influence solver: fisher (default: damped empirical Fisher, no HVP), cg (Gauss-Newton by CG with the "
               "low-rank Gauss-Newton preconditioner when it pays), sqp, lissa, ekfac.")


def _solver(method: str, sample_size: int, batch_size: int) -> Any:
    from rec_eraser.core import SolverConfig

    try:
        # an adapter's trainable parameters are linear layers, which the low-rank preconditioner needs
        preconditioner = "auto" if method == "cg" else None
        return SolverConfig(method=method, sample_size=sample_size, batch_size=batch_size, preconditioner=preconditioner)
    except ValueError as exc:
        _fail(str(exc), 2)


def _run_events(run: str, events: list, solver: Any, damping: Optional[float], as_json: bool, quiet: bool,
                earlier_problems: tuple = (), skip_invalid: bool = False, calibrate: bool = True) -> None:
    """Apply ``events`` [(line, Event)] to ``run`` and report; exit 1 on bad events unless ``skip_invalid``."""
    from rec_eraser.workflows import apply_events
    from rec_eraser.workflows.unlearn import DEFAULT_CALIBRATION

    run_dir = _run_dir(run)
    try:
        with _progress_bar(quiet or as_json) as bar:
            job = bar.add_task("per-instance gradients", total=None, visible=False)

            def on_gradient(k: int) -> None:
                bar.update(job, completed=k, visible=True)

            result = apply_events(run_dir, events, solver=solver, damping=damping, on_gradient=on_gradient,
                                  calibrate=DEFAULT_CALIBRATION if calibrate else None,
                                  say=None if (quiet or as_json) else (lambda m: err.print(f"[dim]{m}...[/dim]")))
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result.to_dict())
    else:
        _print_apply(result)
    problems = sorted([*earlier_problems, *result.problems], key=lambda p: p.line)
    for problem in problems:
        sys.stderr.write(f"error: {problem} (not applied)\n")
    if problems and not skip_invalid:
        raise typer.Exit(1)


def _print_apply(result: Any) -> None:
    for s in result.skipped:
        console.print(f"event {s['id']} was applied already (in {s['applied_in']}): skipped")
    if result.version is None:
        console.print(f"nothing applied; {result.parent} stays current")
        return
    table = Table("event", "type", "user", "instances removed", "instances modified")
    for e in result.applied:
        table.add_row(e["id"], e["type"], e["user"], str(e["removed"]), str(e["modified"]))
    console.print(table)
    line = f"{result.version} (from {result.parent}): {result.removed} instances removed, {result.modified} modified; {result.train_instances} remain"
    if result.solver:
        r = result.solver
        line += (f"; {r['method']} on {r['curvature_samples']} instances, damping {r['damping']:.3g}, "
                 f"residual {r['relative_residual']:.2g}, {r['seconds']:.1f} s")
    console.print(line)
    m = result.metrics
    cal = m.get("calibration")
    if cal:
        gap = cal.get("memorisation_gap")
        if gap:
            how = "measured now" if cal.get("reference_seconds") else "reused"
            console.print(f"memorisation gap {gap['gap']:.3g} ± {gap['standard_error']:.2g} (never-trained {gap['untrained_loss']:.3f} vs "
                          f"trained {gap['trained_loss']:.3f}, {gap['untrained_source']}; measured on {gap.get('measured_on')}, {how})")
        if result.solver and result.solver.get("calibration"):
            c = result.solver["calibration"]
            console.print(f"damping calibrated: x {c['factor']:.3g} of the rule, progress {c['progress']:.3g} "
                          f"({'on target' if c['reached'] else 'target not reached'}, {len(c['trials'])} trials)")
        elif cal.get("note"):
            console.print(cal["note"])
    drift = m.get("drift")
    if drift and drift.get("trusted") is not None:
        text = (f"retained drift over the lineage {drift['retained_drift']:.3g} in {drift['requests']} requests "
                f"(bound: the memorisation gap {drift['bound']:.3g})")
        if drift["trusted"]:
            console.print(text)
        else:
            err.print(f"[yellow]warning: {text}: this version has drifted too far to trust further approximate updates; "
                      "retrain the adapter from scratch on its training set[/yellow]")
    if m.get("before", {}).get("forgotten_loss") is not None:
        console.print(f"loss on forgotten instances: {m['before']['forgotten_loss']:.3f} -> {m['after']['forgotten_loss']:.3f}")
    if m.get("before", {}).get("corrected_loss") is not None:
        console.print(f"loss on corrected instances (new form): {m['before']['corrected_loss']:.3f} -> {m['after']['corrected_loss']:.3f}")


def _cli_events(*events: dict) -> list:
    from rec_eraser.workflows import EventError, parse_event

    try:
        return [(None, parse_event(e)) for e in events]
    except EventError as exc:
        _fail(str(exc), 2)


RUN_HELP = "A run folder, or its name under adapters/."
SOLVER_OPT = typer.Option("fisher", "--solver", help=SOLVER_HELP)
SAMPLE_OPT = typer.Option(64, "--sample-size", min=1, help="Instances in the curvature sub-sample (always holding the edited ones).")
BATCH_OPT = typer.Option(4, "--batch-size", min=1, help="Instances per micro-batch.")
DAMPING_OPT = typer.Option(None, "--damping", min=0.0, help="λ to start from (default: the automatic rule); recorded in the manifest.")
CALIBRATE_OPT = typer.Option(True, "--calibrate/--no-calibrate",
                             help="fisher: scale the damping so that the edited losses move by the adapter's memorisation gap (default), "
                                  "or keep the starting damping.")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON object and nothing else.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress output.")


@app.command("forget-user")
def forget_user(
    run: str = typer.Argument(..., help=RUN_HELP),
    users: list[str] = typer.Option(..., "--user", help="A user id to forget (repeat for several)."),
    solver: str = SOLVER_OPT, sample_size: int = SAMPLE_OPT, batch_size: int = BATCH_OPT, damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT,
) -> None:
    """Account deletion: remove every training instance built from the users' data, as one new adapter version."""
    events = _cli_events(*({"id": f"cli:delete_user:{u}", "type": "delete_user", "user": u} for u in dict.fromkeys(users)))
    _run_events(run, events, _solver(solver, sample_size, batch_size), damping, as_json, quiet, calibrate=calibrate)


@app.command("forget-interactions")
def forget_interactions(
    run: str = typer.Argument(..., help=RUN_HELP),
    user: str = typer.Option(..., "--user", help="The user whose interactions are noise."),
    items: list[str] = typer.Option(..., "--item", help="An item id of a noisy interaction (repeat for several)."),
    solver: str = SOLVER_OPT, sample_size: int = SAMPLE_OPT, batch_size: int = BATCH_OPT, damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT,
) -> None:
    """Noisy interactions: drop the items from the prompts that hold them; remove instances that target them."""
    event = {"id": f"cli:remove_interactions:{user}:{','.join(sorted(items))}", "type": "remove_interactions", "user": user, "items": items}
    _run_events(run, _cli_events(event), _solver(solver, sample_size, batch_size), damping, as_json, quiet, calibrate=calibrate)


@app.command()
def correct(
    run: str = typer.Argument(..., help=RUN_HELP),
    user: str = typer.Option(..., "--user", help="The user of the wrong interaction."),
    item: str = typer.Option(..., "--item", help="The item of the wrong interaction."),
    label: Optional[str] = typer.Option(None, "--label", help="TALLRec: the right label, Yes or No."),
    target: Optional[str] = typer.Option(None, "--target", help="LLaRA: the item the interaction was really with."),
    solver: str = SOLVER_OPT, sample_size: int = SAMPLE_OPT, batch_size: int = BATCH_OPT, damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT,
) -> None:
    """Wrong label (TALLRec) or wrong target (LLaRA): correct the interaction wherever it was used."""
    if (label is None) == (target is None):
        _fail("give exactly one of --label (tallrec) or --target (llara)", 2)
    if label is not None:
        event = {"id": f"cli:correct_label:{user}:{item}:{label}", "type": "correct_label", "user": user, "item": item, "label": label}
    else:
        event = {"id": f"cli:correct_target:{user}:{item}:{target}", "type": "correct_target", "user": user, "item": item, "target": target}
    _run_events(run, _cli_events(event), _solver(solver, sample_size, batch_size), damping, as_json, quiet, calibrate=calibrate)


@app.command("apply-events")
def apply_events_command(
    run: str = typer.Argument(..., help=RUN_HELP),
    events_file: Path = typer.Argument(..., help="JSON Lines: one event object per line (see the README)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Exit 0 even when some lines were bad (they are still reported and not applied)."),
    solver: str = SOLVER_OPT, sample_size: int = SAMPLE_OPT, batch_size: int = BATCH_OPT, damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT,
) -> None:
    """Drain an events file in one solve; events applied before are skipped, bad lines reported by number."""
    from rec_eraser.workflows import EventError, read_events

    try:
        events, problems = read_events(events_file)
    except EventError as exc:
        _fail(str(exc))
    cfg = _solver(solver, sample_size, batch_size)
    if not events:
        if as_json:
            _emit_json({"version": None, "applied": [], "problems": [p.to_dict() for p in problems]})
        for problem in problems:
            sys.stderr.write(f"error: {problem} (not applied)\n")
        raise typer.Exit(0 if skip_invalid else 1)
    _run_events(run, events, cfg, damping, as_json, quiet, earlier_problems=tuple(problems), skip_invalid=skip_invalid,
                calibrate=calibrate)


adapters = typer.Typer(no_args_is_help=True, help="The adapter registry of a run: list, show, diff, rollback.")
app.add_typer(adapters, name="adapters")


def _with_registry(run: str, action: Any) -> Any:
    """``action(registry)`` for the run, any registry error ending as one line."""
    from rec_eraser.workflows import Registry, resolve_run

    try:
        return action(Registry(resolve_run(run)))
    except USER_ERRORS as exc:
        _fail(str(exc))


@adapters.command("list")
def adapters_list(run: str = typer.Argument(..., help=RUN_HELP), as_json: bool = JSON_OPT) -> None:
    """Every version of the run, oldest first; the newest is current."""
    run_dir, rows = _with_registry(run, lambda r: (r.run_dir, [r.summary(v) for v in r.versions()]))
    if as_json:
        _emit_json({"run": str(run_dir), "versions": rows})
        return
    table = Table("version", "parent", "kind", "events", "train instances", "method", "seconds", "created")
    for r in rows:
        table.add_row(r["version"] + (" *" if r["current"] else ""), _fmt(r["parent"]), r["kind"], str(r["events"]),
                      _fmt(r["train_instances"]), _fmt(r["method"]), _fmt(r["seconds"]), _fmt(r["created"]))
    console.print(table)


@adapters.command("show")
def adapters_show(run: str = typer.Argument(..., help=RUN_HELP), version: Optional[str] = typer.Argument(None, help="Default: the current one."),
                  as_json: bool = JSON_OPT) -> None:
    """A version's manifest: parent, events applied, solver report, metrics, hashes."""
    record = _with_registry(run, lambda r: r.manifest(version or r.current()))
    if as_json:
        _emit_json(record)
        return
    console.print_json(json.dumps(record, default=float))


@adapters.command("diff")
def adapters_diff(run: str = typer.Argument(..., help=RUN_HELP), a: str = typer.Argument(...), b: str = typer.Argument(...),
                  as_json: bool = JSON_OPT) -> None:
    """Events in effect in one version and not the other, and (as information) the parameter distance."""
    result = _with_registry(run, lambda r: r.diff(a, b))
    if as_json:
        _emit_json(result)
        return
    console.print(f"events only in {a}: {', '.join(result['events_only_in_a']) or 'none'}")
    console.print(f"events only in {b}: {', '.join(result['events_only_in_b']) or 'none'}")
    console.print(f"training instances: {result['train_instances'][a]} vs {result['train_instances'][b]}")
    console.print(f"parameters: {result['tensors_changed']} of {result['tensors']} tensors differ; distance {result['parameter_distance']:.3g} "
                  f"({_fmt(result['relative_parameter_distance'])} relative)")


@adapters.command("rollback")
def adapters_rollback(run: str = typer.Argument(..., help=RUN_HELP), to: str = typer.Argument(..., help="The version to make current again."),
                      as_json: bool = JSON_OPT) -> None:
    """Make an older version current again, as a new version (history is kept); undone events may be re-applied."""
    result = _with_registry(run, lambda r: r.rollback(to))
    if as_json:
        _emit_json(result)
        return
    console.print(f"{result['version']} is current: a copy of {to} (was {result['from']})")
    if result["undone_events"]:
        console.print(f"[bold]undone[/bold] (their data is back in the adapter): {', '.join(result['undone_events'])}")


@app.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="A small version that finishes in under 5 minutes on 2 CPU cores."),
    out: Optional[Path] = typer.Option(None, "--out", help="The run folder (default: adapters/demo-llara or adapters/demo-llara-quick)."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="A local Hugging Face causal LM folder (default: embedded SmolLM2)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """The main job on the embedded defaults: train, forget users and noisy interactions, compare with retraining.

    ml-100k, SmolLM2-135M, LLaRA task. Each step is cached in the run folder, so a rerun only evaluates.
    """
    from rec_eraser.workflows.demo import run_demo

    progress = None if (quiet or as_json) else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    try:
        result = run_demo(out, quick=quick, base_model=base_model, say=progress)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
        return
    table = Table("adapter", "HitRatio@1", "ValidRatio", "loss on forgotten", "loss on unseen (test)", "membership AUC", "seconds")
    for name in ("original", "unlearned", "retrained"):
        m = result[name]["metrics"]
        table.add_row(f"{name} ({result[name]['version']})", _fmt(m["hit@1"]), _fmt(m["valid_ratio"]),
                      _fmt(m["forgotten_loss"]), _fmt(m["unseen_loss"]), _fmt(m["membership_auc"]), _fmt(result[name]["seconds"]))
    base = result["original"]["metrics"]["baselines"]
    console.print(f"ml-100k LLaRA, {result['train_instances']} training instances; forgot users {', '.join(result['forgotten_users'])} "
                  f"({result['forgotten_instances']} instances) and {len(result['noisy_interactions'])} noisy interactions "
                  f"({result['edits']['removed']} instances removed, {result['edits']['modified']} modified)")
    console.print(table)
    console.print(f"on {result['original']['metrics']['eval_prompts']} test prompts; random hit@1 {base['random']['hit@1']:.3f}, "
                  f"popularity hit@1 {base['popularity']['hit@1']:.3f}. The update cost {_fmt(result['update_to_retrain_seconds'])} "
                  f"of retraining's time. Run folder: {result['run']}")


if __name__ == "__main__":  # pragma: no cover
    app()
