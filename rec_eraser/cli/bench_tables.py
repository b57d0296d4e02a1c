"""How ``rec-eraser bench`` prints each benchmark's result on a terminal (``--json`` prints the result itself)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from rec_eraser.cli.common import console, fmt
from rec_eraser.workflows.model_scale import shape_words


def show_solvers(result: dict[str, Any]) -> None:
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


def show_recipe(result: dict[str, Any]) -> None:
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


def show_check(result: dict[str, Any]) -> None:
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


def show_sequential(result: dict[str, Any]) -> None:
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


def show_scaling(result: dict[str, Any]) -> None:
    table = Table(
        "training instances",
        "retrain s",
        "first request s",
        "request s",
        "rows computed / reused",
        "floor s",
        "request / floor",
        "request / retrain",
    )
    for row in result["sizes"]:
        table.add_row(
            str(row["n"]),
            fmt(row["retrain_seconds"]),
            fmt(row["first_request"]["update_seconds"]),
            fmt(row["update_seconds"]),
            f"{row['rows_computed']} / {row['rows_reused']}",
            fmt(row["floor_seconds"]),
            fmt(row["ratio_to_floor"]),
            fmt(row["ratio_to_retrain"]),
        )
    console.print(table)
    for name, fit in result["fit"].items():
        if fit:
            console.print(f"{name}: seconds ~ {fit['a']:.3g} * n^{fit['b']:.2f}")
    for skip in result["skipped"]:
        console.print(
            f"n = {skip['n']} skipped: training projected at {skip['projected_retrain_seconds']:.0f} s > {skip['cap_seconds']:.0f} s"
        )


def show_damping(result: dict[str, Any]) -> None:
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


def show_profile(result: dict[str, Any]) -> None:
    """``bench RECIPE --profile``: one row per training variant."""
    table = Table("variant", "s / instance-step", "speed-up", "peak MB", "padding", "max loss diff")
    for row in result["variants"]:
        table.add_row(
            row["variant"],
            fmt(row["seconds_per_instance_step"]),
            fmt(row["speedup"]),
            fmt(row["peak_mb"]),
            fmt(row["padding_share"]),
            fmt(row["max_loss_difference"]),
        )
    console.print(
        f"{result['task']} training, {result['recipe']} at tier {result['tier']} (batch {result['batch_size']}, "
        f"{result['threads']} threads): {result['variants'][0]['steps']} timed steps per variant"
    )
    console.print(table)


def show_encoder(result: dict[str, Any]) -> None:
    """``bench encoder``: the membership test of the item encoder before and after retraining it."""
    console.print(
        f"{result['dataset']}: SASRec item encoder, {result['forget_users']} forget users against "
        f"{result['holdout_users']} held-out users ({result['epochs']} epochs, seed {result['seed']})"
    )
    table = Table("encoder", "forget users' loss", "held-out users' loss", "membership AUC")
    for name in ("with", "without"):
        row = result[name]
        table.add_row(
            f"trained {name} them", fmt(row["forget_loss"]), fmt(row["holdout_loss"]), fmt(row["membership_auc"])
        )
    console.print(table)
    console.print(
        f"AUC drop on retraining without them: {fmt(result['auc_drop'])} (permutation p-value of the first AUC: "
        f"{fmt(result['with']['p_value'])})"
    )


def show_data_size(result: dict[str, Any]) -> None:
    """``bench data-size``: loading and preparing a synthetic dataset of a real size."""
    load, prep, every = result["load"], result["prepare"], result["every_user_estimate"]
    console.print(
        f"synthetic dataset: {result['interactions']:,} interactions ({fmt(result['file_mb'])} MB .inter file, "
        f"written in {fmt(result['generate_seconds'])} s)"
    )
    table = Table("stage", "seconds", "peak memory (MB)", "users", "interactions", "instances")
    table.add_row("load", fmt(load["seconds"]), fmt(load["peak_mb"]), str(load["users"]), str(load["interactions"]), "")
    table.add_row(
        f"prepare {result['task']}",
        fmt(prep["seconds"]),
        fmt(prep["peak_mb"]),
        str(prep["users"]),
        str(prep["interactions"]),
        str(prep["instances"]),
    )
    console.print(table)
    console.print(
        f"{fmt(prep['bytes_per_instance'])} bytes per prepared instance: every user's {every['instances']:,} "
        f"instances would take about {fmt(every['run_gb'])} GB (an estimate, not written)"
    )


def show_model_scale(result: dict[str, Any]) -> None:
    """``bench model-scale``: the 7B-shaped plan (counts, measured pass, estimates)."""
    a = result["assumptions"]
    console.print(
        f"{shape_words(result)} ({result['base_parameters']:,} parameters, {fmt(result['model_memory_gb_bf16'])} GB in "
        f"bfloat16), one instance = {result['tokens']} tokens, LoRA r={result['rank']}; update: "
        f"{result['update_passes']} gradient passes ({a['sample_size']} Fisher rows + {a['edited']} new forms), Retrain: "
        f"{result['retrain_passes']:,} ({a['train_instances']:,} instances x {a['epochs']} epochs), ratio "
        f"{fmt(result['ratio_to_retrain'])}"
    )
    table = Table(
        "LoRA on",
        "parameters",
        "Fisher rows GB",
        "pass s (here)",
        "update s (here)",
        "Retrain s (here)",
        "update s (A100, est.)",
        "Retrain s (A100, est.)",
    )
    for name, row in result["targets"].items():
        here, a100 = row["this_machine"], row["a100_estimate"]
        table.add_row(
            name,
            f"{row['lora_parameters']:,}",
            fmt(row["fisher_memory_gb"]),
            fmt(here["pass_seconds"]),
            fmt(here["update_seconds"]),
            fmt(here["retrain_seconds"]),
            fmt(a100["update_seconds"]),
            fmt(a100["retrain_seconds"]),
        )
    console.print(table)
    paper = result["paper_table9"]
    console.print(
        f"here: measured on this CPU, {result['threads']} threads (1 and 2 random layers, extrapolated to "
        f"{result['shape']['num_hidden_layers']}); A100: "
        f"{a['flops_per_pass']:.3g} FLOP a pass at {a['mfu']:.0%} of {a['a100_bf16_peak_flops']:.3g} FLOP/s, "
        f"an estimate. Paper, Table 9 (A100): {paper['update_seconds']:.3g} s a request, "
        f"{paper['retrain_seconds']:.3g} s Retrain."
    )
