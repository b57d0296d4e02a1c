"""``rec-eraser prepare``, ``train``, ``evaluate`` and ``demo``: make a run, train and measure its adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from rec_eraser.cli.common import (
    USER_ERRORS,
    app,
    console,
    emit_json,
    err,
    fail_on,
    fmt,
    progress_bar,
    run_dir_of,
)


@app.command()
def prepare(
    dataset: str = typer.Option(
        ..., "--dataset", help="ml-100k, lastfm, steam, or a folder of RecBole atomic files with its mapping."
    ),
    task: str = typer.Option(..., "--task", help="llara or tallrec."),
    out: Path = typer.Option(..., "--out", help="The run folder to create (must not exist or be empty)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the candidate draws."),
    negatives: int = typer.Option(20, "--negatives", min=1, help="LLaRA: random negatives per candidate set."),
    max_history: int = typer.Option(10, "--max-history", min=1, help="Items of history in a prompt."),
    max_users: Optional[int] = typer.Option(
        None, "--max-users", min=1, help="Keep only the first N users (small demos)."
    ),
    root: Optional[Path] = typer.Option(
        None, "--root", help="Where lastfm/steam files live (default $REC_ERASER_DATA)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
) -> None:
    """Read a dataset, split it per user in time, build a task's instances and write the run folder."""
    from rec_eraser.tasks.prepare import prepare as prepare_run

    try:
        summary = prepare_run(
            dataset, task, out, seed=seed, negatives=negatives, max_history=max_history, max_users=max_users, root=root
        )
    except USER_ERRORS as exc:
        fail_on(exc)
    if as_json:
        emit_json(summary)
        return
    table = Table("users", "items", "interactions", "train", "valid", "test", "data hash")
    table.add_row(
        *(str(summary[k]) for k in ("users", "items", "interactions", "train", "valid", "test")),
        summary["data_hash"][:12],
    )
    console.print(f"prepared {summary['task']} on {summary['dataset']} into {out}")
    console.print(table)


@app.command()
def train(
    run: str = typer.Argument(..., help="A run folder made by `rec-eraser prepare`, or its name under adapters/."),
    recipe_file: Optional[Path] = typer.Option(
        None,
        "--recipe",
        help="A recipe TOML file, or a shipped recipe's name such as demo-tallrec (default: demo-<task>).",
    ),
    base_model: Optional[Path] = typer.Option(
        None,
        "--base-model",
        help="A local Hugging Face causal LM folder (overrides the recipe; default: embedded SmolLM2).",
    ),
    measure_gap: bool = typer.Option(
        True,
        "--measure-gap/--no-measure-gap",
        help="Measure the adapter's memorisation gap now (256 forward passes), so no deletion request pays it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train the run's first adapter version (v0000): LoRA (+ LLaRA's item projector).

    By default it also measures the adapter's memorisation gap, which the calibrated update of
    every later request reads (recorded in v0000's manifest).
    """
    run = run_dir_of(run)
    try:
        from rec_eraser.training.train import run_recipe, train_run

        recipe = run_recipe(run, recipe_file, base_model)
        from rec_eraser.workflows.unlearn import training_memorisation

        with progress_bar(quiet or as_json) as bar:
            job = bar.add_task("training", total=None)

            def measure(loaded, instances):
                bar.update(job, description="measuring the memorisation gap")
                return training_memorisation(run, recipe)(loaded, instances)

            version = train_run(
                run,
                recipe,
                progress=lambda step, total, loss: bar.update(
                    job, completed=step, total=total, description=f"training (loss {loss:.3f})"
                ),
                measure=measure if measure_gap else None,
            )
    except USER_ERRORS as exc:
        fail_on(exc)
    manifest = json.loads((version / "manifest.json").read_text())
    gap = ((manifest.get("metrics") or {}).get("calibration") or {}).get("memorisation_gap")
    if as_json:
        emit_json(
            {
                "version": version.name,
                "path": str(version),
                **manifest["training"],
                "train_instances": manifest["train_instances"],
                "memorisation_gap": gap,
            }
        )
        return
    t = manifest["training"]
    console.print(
        f"trained {version} on {manifest['train_instances']} instances: {t['steps']} steps in {t['seconds']:.0f} s "
        f"({t['seconds_per_instance_step']:.2f} s per instance-step), final epoch loss {t['final_loss']:.3f}"
        + (f", peak memory {t['peak_mb']:.0f} MB" if t.get("peak_mb") else "")
    )
    if gap:
        console.print(
            f"memorisation gap {gap['gap']:.3g} ± {gap['standard_error']:.2g} (never-trained minus trained loss, "
            f"{gap['trained_instances']} + {gap['untrained_instances']} instances, {gap['seconds']:.0f} s)"
        )


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

    run = run_dir_of(run)
    try:
        with progress_bar(quiet or as_json) as bar:
            job = bar.add_task("evaluating", total=None)
            result = evaluate_version(
                run, version, split, limit, generate=not no_generate, tick=lambda k: bar.advance(job, k)
            )
    except USER_ERRORS as exc:
        fail_on(exc)
    if as_json:
        emit_json(result)
        return
    keys = [
        k
        for k in ("hit@1", "gen_hit@1", "valid_ratio", "gen_hit@1_over_valid", "ndcg@5", "ndcg@10", "auc")
        if k in result
    ]
    table = Table("model", *keys)
    table.add_row(f"adapter {result['version']}", *(fmt(result[k]) for k in keys))
    for name, figures in result["baselines"].items():
        table.add_row(name, *(fmt(figures.get(k)) for k in keys))
    console.print(f"{result['task']} on {result['n']} {result['split']} prompts ({result['seconds']:.0f} s)")
    console.print(table)


@app.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="A small version that finishes in a few minutes on 2 CPU cores."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="The run folder (default: adapters/demo-tallrec or adapters/demo-tallrec-quick)."
    ),
    base_model: Optional[Path] = typer.Option(
        None, "--base-model", help="A local Hugging Face causal LM folder (default: embedded SmolLM2)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages (RUN/demo.log still gets them)."),
) -> None:
    """The main job on the embedded defaults: train, forget users and noisy interactions, compare with retraining.

    ml-100k, SmolLM2-135M, TALLRec task; about 25 minutes on 2 CPU cores. Each step is cached in
    the run folder, so a rerun only evaluates; progress also goes to RUN/demo.log.
    """
    from rec_eraser.workflows.demo import render_markdown, run_demo, summary_lines, table_rows

    progress = None if (quiet or as_json) else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    try:
        result = run_demo(out, quick=quick, base_model=base_model, say=progress)
    except USER_ERRORS as exc:
        fail_on(exc)
    if as_json:
        emit_json(result)
        return
    edits = result["edits"] or {}
    console.print(
        f"ml-100k {result['task']}, {result['train_instances']} training instances; forgot users "
        f"{', '.join(result['forgotten_users'])} ({result['forgotten_instances']} instances) and "
        f"{len(result['noisy_interactions'])} noisy interactions ({edits.get('removed')} instances removed, "
        f"{edits.get('modified')} modified); {result['eval_prompts']} test prompts."
    )
    if not console.is_terminal:  # a log file: plain Markdown, which no terminal width truncates
        console.print(render_markdown(result), markup=False, highlight=False, soft_wrap=True)
    else:
        header, rows = table_rows(result)
        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        for line in summary_lines(result):
            console.print(f"- {line}", markup=False, highlight=False)
    console.print(f"Run folder: {result['run']} (progress log: {result['run']}/demo.log)", markup=False)
