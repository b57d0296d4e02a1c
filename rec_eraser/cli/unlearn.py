"""``rec-eraser forget-user``, ``forget-interactions``, ``correct``, ``apply-events`` and ``suggest-noise``: events to a new adapter version."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from rec_eraser.cli.common import (
    JSON_OPT,
    QUIET_OPT,
    RUN_HELP,
    USER_ERRORS,
    app,
    console,
    emit_json,
    err,
    fail,
    fail_on,
    not_rank_zero,
    progress_bar,
    run_dir_of,
)

SOLVER_HELP = (
    "Influence solver: fisher (default: damped empirical Fisher, no HVP), cg (Gauss-Newton by CG with the "
    "low-rank Gauss-Newton preconditioner when it pays), sqp, lissa, ekfac."
)
# the literals are rec_eraser.workflows.unlearn.DEFAULT_SOLVER's (importing it here would load torch for
# every `--help`); tests/test_cli.py checks that they stay equal
SOLVER_OPT = typer.Option("fisher", "--solver", help=SOLVER_HELP)
SAMPLE_OPT = typer.Option(
    64,
    "--sample-size",
    min=1,
    help="Instances in the curvature sub-sample (always holding the edited ones, and at least half this many others: "
    "a large request grows it).",
)
BATCH_OPT = typer.Option(4, "--batch-size", min=1, help="Instances per micro-batch.")
# the literal is rec_eraser.core.SolverConfig's default row_weights (tests/test_cli.py checks it)
ROW_WEIGHTS_OPT = typer.Option(
    "auto",
    "--row-weights",
    help="fisher: how the sample's rows are weighted: auto (default: uniform unless the reference calibration cannot "
    "reach the memorisation gap on it, as on heavily memorising LLaRA adapters; then inclusion), uniform (1/m each) "
    "or inclusion (each by the inverse of its chance of being sampled: the edited rows 1/n). See docs/fidelity.md.",
)
DAMPING_OPT = typer.Option(
    None, "--damping", min=0.0, help="λ to start from (default: the automatic rule); recorded in the manifest."
)
CALIBRATE_OPT = typer.Option(
    True,
    "--calibrate/--no-calibrate",
    help="fisher: scale the damping from the adapter's memorisation gap (default; see --calibration-target), "
    "or keep the starting damping.",
)
REUSE_OPT = typer.Option(
    True,
    "--reuse-curvature/--no-reuse-curvature",
    help="fisher: reuse the curvature rows of the lineage's last request when a probe finds them fresh "
    "(default), or compute every row.",
)

WAIT_OPT = typer.Option(
    0.0,
    "--wait",
    min=0.0,
    help="Seconds to wait for another job writing to the run before giving up (exit code 3); default: none.",
)

# the literal is rec_eraser.workflows.unlearn.Calibrate's default target (tests/test_cli.py checks it)
CALIBRATION_TARGET_OPT = typer.Option(
    "reference",
    "--calibration-target",
    help="fisher: what the calibrated damping is matched on: reference (default: the retained rows of the Fisher "
    "sample are predicted to move by the memorisation gap on average; the edited instances then move by their own "
    "predicted amount), edited (the edited instances' loss moves by the gap) or quantile (each edited instance's loss "
    "is carried to its rank among the never-trained reference losses, a corrected form's back among the trained ones; "
    "the damping is where the edited rows' predicted move equals those targets). See docs/fidelity.md.",
)

# the literal is rec_eraser.workflows.item_encoder.DEFAULT_ENCODER_CHOICE (tests/test_cli.py checks it)
ITEM_ENCODER_OPT = typer.Option(
    "keep",
    "--item-encoder",
    help="LLaRA: keep the item encoder as it is (default), or retrain it without every erased interaction in "
    "effect (about a minute on ml-100k) and carry the projector over to it. See docs/unlearning.md.",
)


def _solver(method: str, sample_size: int, batch_size: int, row_weights: str = "auto") -> Any:
    from rec_eraser.core import SolverConfig

    try:
        return SolverConfig.for_method(method, sample_size=sample_size, batch_size=batch_size, row_weights=row_weights)
    except ValueError as exc:
        fail(str(exc), 2)


def _run_events(
    run: str,
    events: list,
    solver: Any,
    damping: Optional[float],
    as_json: bool,
    quiet: bool,
    earlier_problems: tuple = (),
    skip_invalid: bool = False,
    calibrate: bool = True,
    calibration_target: str = "reference",
    wait: float = 0.0,
    reuse_curvature: bool = True,
    item_encoder: str = "keep",
) -> None:
    """Apply ``events`` [(line, Event)] to ``run`` and report; exit 1 on bad events unless ``skip_invalid``."""
    from dataclasses import replace

    from rec_eraser.errors import RecEraserError
    from rec_eraser.workflows import apply_events
    from rec_eraser.workflows.curvature_cache import DEFAULT_CACHE
    from rec_eraser.workflows.item_encoder import check_encoder_choice
    from rec_eraser.workflows.unlearn import DEFAULT_CALIBRATION

    try:  # checked even with --no-calibrate: a misspelt option is an error, not silently nothing
        calibration = replace(DEFAULT_CALIBRATION, target=calibration_target)
        check_encoder_choice(item_encoder)
    except (ValueError, RecEraserError) as exc:
        fail(str(exc), 2)
    calibration = calibration if calibrate else None
    run_dir = run_dir_of(run)
    try:
        with progress_bar(quiet or as_json) as bar:
            job = bar.add_task("per-instance gradients", total=None, visible=False)

            def on_gradient(k: int) -> None:
                bar.update(job, completed=k, visible=True)

            result = apply_events(
                run_dir,
                events,
                solver=solver,
                damping=damping,
                on_gradient=on_gradient,
                calibrate=calibration,
                say=None if (quiet or as_json) else (lambda m: err.print(f"[dim]{m}...[/dim]")),
                wait=wait,
                cache=replace(DEFAULT_CACHE, enabled=reuse_curvature),
                item_encoder=item_encoder,
            )
    except USER_ERRORS as exc:
        fail_on(exc)
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_apply(result)
    if result.version is None and item_encoder == "retrain" and not (quiet or as_json):
        err.print(
            "[yellow]the item encoder was not retrained: no new event was applied (a version that only retrains "
            "the encoder for events applied before is not offered)[/yellow]"
        )
    problems = sorted([*earlier_problems, *result.problems], key=lambda p: p.line)
    for problem in [] if not_rank_zero() else problems:  # under torchrun, rank 0 reports them
        sys.stderr.write(f"error: {problem} (not applied)\n")
    if problems and not skip_invalid:
        raise typer.Exit(1)


def _print_apply(result: Any) -> None:
    from rec_eraser.workflows.update import on_which_fisher

    for s in result.skipped:
        console.print(f"event {escape(s['id'])} was applied already (in {s['applied_in']}): skipped")
    if result.version is None:
        console.print(f"nothing applied; {result.parent} stays current")
        return
    table = Table("event", "type", "user", "instances removed", "instances modified")
    for e in result.applied:
        table.add_row(escape(e["id"]), e["type"], escape(e["user"]), str(e["removed"]), str(e["modified"]))
    console.print(table)
    line = f"{result.version} (from {result.parent}): {result.removed} instances removed, {result.modified} modified; {result.train_instances} remain"
    if result.solver:
        r = result.solver
        line += (
            f"; {r['method']} on {r['curvature_samples']} instances, damping {r['damping']:.3g}, "
            f"residual {r['relative_residual']:.2g}, {r['seconds']:.1f} s"
        )
    console.print(line)
    m = result.metrics
    cost = m.get("cost")
    if cost:
        console.print(
            f"cost: {cost['update_seconds']:.1f} s, {cost['ratio_to_floor']:.2g}x its floor (the {cost['floor_rows']} "
            f"edited instances' gradients, {cost['floor_seconds']:.1f} s); {cost['rows_computed']} gradient rows computed, "
            f"{cost['rows_reused']} reused" + (f"; peak memory {m['peak_mb']:.0f} MB" if m.get("peak_mb") else "")
        )
    cal = m.get("calibration")
    if cal:
        gap = cal.get("memorisation_gap")
        if gap:
            how = "measured now" if cal.get("reference_seconds") else "reused"
            console.print(
                f"memorisation gap {gap['gap']:.3g} ± {gap['standard_error']:.2g} (never-trained {gap['untrained_loss']:.3f} vs "
                f"trained {gap['trained_loss']:.3f}, {gap['untrained_source']}; measured on {gap.get('measured_on')}, {how})"
            )
        if result.solver and result.solver.get("calibration"):
            c = result.solver["calibration"]
            start = (
                "the given damping"
                if str(result.solver.get("damping_rule", "")).startswith("given")
                else "the rule's damping"
            )
            console.print(
                f"damping calibrated: x {c['factor']:.3g} of {start}, progress {c['progress']:.3g} "
                f"({'on target' if c['reached'] else 'target not reached'}, {len(c['trials'])} trials)"
            )
        elif cal.get("quantile"):
            q = cal["quantile"]
            console.print(
                f"damping matched on the {q['rows']} edited instances' quantile targets: x {q['factor']:.3g} of the "
                f"starting damping, predicted to move them by {q['predicted']:.3g} on average (target {q['target']:.3g})"
                f"{'' if q['reached'] else ' (end of the search range: the target was not reached)'}"
            )
        elif cal.get("reference"):
            ref = cal["reference"]
            console.print(
                f"damping matched on {ref['rows']} retained instances of {ref['users']} users: x {ref['factor']:.3g} of the "
                f"starting damping, predicted to move them by {ref['predicted']:.3g} on average"
                f"{on_which_fisher(ref)}"
                f"{'' if ref['reached'] else ' (end of the search range: the gap was not reached)'}"
            )
        if cal.get("note"):  # also when a search ran: it may say why the asked-for target was not used
            console.print(cal["note"])
    drift = m.get("drift")
    if drift and drift.get("trusted") is not None:
        text = (
            f"retained drift over the lineage {drift['retained_drift']:.3g} in {drift['requests']} requests "
            f"(bound: the memorisation gap {drift['bound']:.3g})"
        )
        if drift["trusted"]:
            console.print(text)
        else:
            err.print(
                f"[yellow]warning: {text}: this version has drifted too far to trust further approximate updates; "
                "retrain the adapter from scratch on its training set[/yellow]"
            )
    if m.get("before", {}).get("forgotten_loss") is not None:
        console.print(
            f"loss on forgotten instances: {m['before']['forgotten_loss']:.3f} -> {m['after']['forgotten_loss']:.3f}"
        )
    if m.get("before", {}).get("corrected_loss") is not None:
        console.print(
            f"loss on corrected instances (new form): {m['before']['corrected_loss']:.3f} -> {m['after']['corrected_loss']:.3f}"
        )
    encoder = result.item_encoder
    if encoder and encoder.get("retrained"):
        console.print(
            f"item encoder retrained without what the events in effect ({encoder['events']}) erase: {encoder['dropped']} "
            f"interactions dropped, {encoder['corrected']} corrected ({encoder['seconds']:.1f} s); projector carried over, "
            f"relative residual {encoder['alignment']['relative_residual']:.3g}"
        )
        after = encoder["after"]
        for name, label in (("forgotten_loss", "forgotten"), ("corrected_loss", "corrected (new form)")):
            if after.get(name) is not None:
                console.print(f"loss on {label} instances with the new encoder: {after[name]:.3f}")


def _cli_events(kind: str, users: list[str], **fields: Any) -> list:
    from rec_eraser.workflows import EventError
    from rec_eraser.workflows.events import request_event

    try:
        return [(None, request_event(kind, user, **fields)) for user in dict.fromkeys(users)]
    except EventError as exc:
        fail(str(exc), 2)


@app.command("forget-user")
def forget_user(
    run: str = typer.Argument(..., help=RUN_HELP),
    users: list[str] = typer.Option(..., "--user", help="A user id to forget (repeat for several)."),
    solver: str = SOLVER_OPT,
    sample_size: int = SAMPLE_OPT,
    batch_size: int = BATCH_OPT,
    row_weights: str = ROW_WEIGHTS_OPT,
    damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    reuse_curvature: bool = REUSE_OPT,
    calibration_target: str = CALIBRATION_TARGET_OPT,
    item_encoder: str = ITEM_ENCODER_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Account deletion: remove every training instance built from the users' data, as one new adapter version."""
    _run_events(
        run,
        _cli_events("delete_user", users),
        _solver(solver, sample_size, batch_size, row_weights),
        damping,
        as_json,
        quiet,
        calibrate=calibrate,
        reuse_curvature=reuse_curvature,
        calibration_target=calibration_target,
        item_encoder=item_encoder,
        wait=wait,
    )


@app.command("forget-interactions")
def forget_interactions(
    run: str = typer.Argument(..., help=RUN_HELP),
    user: str = typer.Option(..., "--user", help="The user whose interactions are noise."),
    items: list[str] = typer.Option(..., "--item", help="An item id of a noisy interaction (repeat for several)."),
    solver: str = SOLVER_OPT,
    sample_size: int = SAMPLE_OPT,
    batch_size: int = BATCH_OPT,
    row_weights: str = ROW_WEIGHTS_OPT,
    damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    reuse_curvature: bool = REUSE_OPT,
    calibration_target: str = CALIBRATION_TARGET_OPT,
    item_encoder: str = ITEM_ENCODER_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Noisy interactions: drop the items from the prompts that hold them; remove instances that target them."""
    _run_events(
        run,
        _cli_events("remove_interactions", [user], items=items),
        _solver(solver, sample_size, batch_size, row_weights),
        damping,
        as_json,
        quiet,
        calibrate=calibrate,
        reuse_curvature=reuse_curvature,
        calibration_target=calibration_target,
        item_encoder=item_encoder,
        wait=wait,
    )


@app.command()
def correct(
    run: str = typer.Argument(..., help=RUN_HELP),
    user: str = typer.Option(..., "--user", help="The user of the wrong interaction."),
    item: str = typer.Option(..., "--item", help="The item of the wrong interaction."),
    label: Optional[str] = typer.Option(None, "--label", help="TALLRec: the right label, Yes or No."),
    target: Optional[str] = typer.Option(None, "--target", help="LLaRA: the item the interaction was really with."),
    solver: str = SOLVER_OPT,
    sample_size: int = SAMPLE_OPT,
    batch_size: int = BATCH_OPT,
    row_weights: str = ROW_WEIGHTS_OPT,
    damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    reuse_curvature: bool = REUSE_OPT,
    calibration_target: str = CALIBRATION_TARGET_OPT,
    item_encoder: str = ITEM_ENCODER_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Wrong label (TALLRec) or wrong target (LLaRA): correct the interaction wherever it was used."""
    if (label is None) == (target is None):
        fail("give exactly one of --label (tallrec) or --target (llara)", 2)
    events = (
        _cli_events("correct_label", [user], item=item, label=label)
        if label is not None
        else _cli_events("correct_target", [user], item=item, target=target)
    )
    _run_events(
        run,
        events,
        _solver(solver, sample_size, batch_size, row_weights),
        damping,
        as_json,
        quiet,
        calibrate=calibrate,
        reuse_curvature=reuse_curvature,
        calibration_target=calibration_target,
        item_encoder=item_encoder,
        wait=wait,
    )


@app.command("apply-events")
def apply_events_command(
    run: str = typer.Argument(..., help=RUN_HELP),
    events_file: Path = typer.Argument(..., help="JSON Lines: one event object per line (see the README)."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Exit 0 even when some lines were bad (they are still reported and not applied)."
    ),
    solver: str = SOLVER_OPT,
    sample_size: int = SAMPLE_OPT,
    batch_size: int = BATCH_OPT,
    row_weights: str = ROW_WEIGHTS_OPT,
    damping: Optional[float] = DAMPING_OPT,
    calibrate: bool = CALIBRATE_OPT,
    reuse_curvature: bool = REUSE_OPT,
    calibration_target: str = CALIBRATION_TARGET_OPT,
    item_encoder: str = ITEM_ENCODER_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Drain an events file in one solve; events applied before are skipped, bad lines reported by number."""
    from rec_eraser.workflows import EventError, read_events

    try:
        events, problems = read_events(events_file)
    except EventError as exc:
        fail_on(exc)
    cfg = _solver(solver, sample_size, batch_size, row_weights)
    if not events:
        if as_json:
            emit_json({"version": None, "applied": [], "problems": [p.to_dict() for p in problems]})
        for problem in problems:
            sys.stderr.write(f"error: {problem} (not applied)\n")
        raise typer.Exit(0 if skip_invalid else 1)
    _run_events(
        run,
        events,
        cfg,
        damping,
        as_json,
        quiet,
        earlier_problems=tuple(problems),
        skip_invalid=skip_invalid,
        calibrate=calibrate,
        reuse_curvature=reuse_curvature,
        calibration_target=calibration_target,
        item_encoder=item_encoder,
        wait=wait,
    )


@app.command("suggest-noise")
def suggest_noise_command(
    run: str = typer.Argument(..., help=RUN_HELP),
    top: int = typer.Option(50, "--top", min=1, help="How many interactions to suggest."),
    score: str = typer.Option(
        "self_influence",
        "--score",
        help="self_influence (through the update's damped Fisher), loss, or leave_out (how much leaving the interaction out of a prompt's history lowers its loss).",
    ),
    correct: bool = typer.Option(
        False, "--correct", help="TALLRec: suggest flipping the labels of the interactions that are targets."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the suggested events (JSON Lines) to this file."),
    truth: Optional[Path] = typer.Option(
        None, "--truth", help="Events that introduced known noise: adds precision@K and recall@K."
    ),
    version: Optional[str] = typer.Option(None, "--version", help="The version to score (default: the current one)."),
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Rank the training interactions by how noisy the adapter finds them; write the top ones as events."""
    from rec_eraser.files import write_file_atomically
    from rec_eraser.workflows import resolve_run
    from rec_eraser.workflows.noise import events_jsonl, suggest_noise

    say = None if (quiet or as_json) else (lambda m: err.print(f"[dim]{m}...[/dim]"))
    try:
        result = suggest_noise(
            resolve_run(run), top=top, score=score, version=version, correct=correct, truth=truth, say=say
        )
        if out is not None:
            text = events_jsonl(result)
            write_file_atomically(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except USER_ERRORS as exc:
        fail_on(exc)
    if as_json:
        emit_json(result)
        return
    table = Table("user", "item", result["score"])
    for s in result["suggested"]:
        table.add_row(escape(s["user"]), escape(s["item"]), f"{s['score']:.4g}")
    console.print(table)
    console.print(
        f"{len(result['suggested'])} of {result['interactions']} interactions of {result['version']}; "
        f"{len(result['events'])} events" + (f" written to {escape(str(out))}" if out else "")
    )
    for name, figures in (result.get("truth") or {}).items():
        if isinstance(figures, dict):
            cells = ", ".join(f"P@{k} {v['precision']:.3f} R@{k} {v['recall']:.3f}" for k, v in figures.items())
            console.print(f"{name}: {cells}")
