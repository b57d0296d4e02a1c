"""``rec-eraser adapters``: list, show, diff and roll back the versions of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from rec_eraser.cli.common import JSON_OPT, RUN_HELP, USER_ERRORS, app, console, emit_json, err, fail_on, fmt

adapters = typer.Typer(no_args_is_help=True, help="The adapter registry of a run: list, show, diff, rollback.")
app.add_typer(adapters, name="adapters")


def _with_registry(run: str, action: Any) -> Any:
    """``action(registry)`` for the run, any registry error ending as one line."""
    from rec_eraser.workflows import Registry, resolve_run

    try:
        return action(Registry(resolve_run(run)))
    except USER_ERRORS as exc:
        fail_on(exc)


@adapters.command("list")
def adapters_list(run: str = typer.Argument(..., help=RUN_HELP), as_json: bool = JSON_OPT) -> None:
    """Every version of the run, oldest first; the newest is current."""
    run_dir, rows = _with_registry(run, lambda r: (r.run_dir, [r.summary(v) for v in r.versions()]))
    if as_json:
        emit_json({"run": str(run_dir), "versions": rows})
        return
    table = Table("version", "parent", "kind", "events", "train instances", "method", "seconds", "created")
    for r in rows:
        table.add_row(
            r["version"] + (" *" if r["current"] else ""),
            fmt(r["parent"]),
            r["kind"],
            str(r["events"]),
            fmt(r["train_instances"]),
            fmt(r["method"]),
            fmt(r["seconds"]),
            fmt(r["created"]),
        )
    console.print(table)


@adapters.command("show")
def adapters_show(
    run: str = typer.Argument(..., help=RUN_HELP),
    version: Optional[str] = typer.Argument(None, help="Default: the current one."),
    as_json: bool = JSON_OPT,
) -> None:
    """A version's manifest: parent, events applied, solver report, metrics, hashes."""
    record = _with_registry(run, lambda r: r.manifest(version or r.current()))
    if as_json:
        emit_json(record)
        return
    console.print_json(json.dumps(record, default=float))


@adapters.command("diff")
def adapters_diff(
    run: str = typer.Argument(..., help=RUN_HELP),
    a: str = typer.Argument(...),
    b: str = typer.Argument(...),
    as_json: bool = JSON_OPT,
) -> None:
    """Events in effect in one version and not the other, and (as information) the parameter distance."""
    result = _with_registry(run, lambda r: r.diff(a, b))
    if as_json:
        emit_json(result)
        return
    console.print(f"events only in {a}: {escape(', '.join(result['events_only_in_a'])) or 'none'}")
    console.print(f"events only in {b}: {escape(', '.join(result['events_only_in_b'])) or 'none'}")
    console.print(f"training instances: {result['train_instances'][a]} vs {result['train_instances'][b]}")
    console.print(
        f"parameters: {result['tensors_changed']} of {result['tensors']} tensors differ; distance {result['parameter_distance']:.3g} "
        f"({fmt(result['relative_parameter_distance'])} relative)"
    )


@adapters.command("rollback")
def adapters_rollback(
    run: str = typer.Argument(..., help=RUN_HELP),
    to: str = typer.Argument(..., help="The version to make current again."),
    as_json: bool = JSON_OPT,
) -> None:
    """Make an older version current again, as a new version (history is kept); undone events may be re-applied."""
    result = _with_registry(run, lambda r: r.rollback(to))
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['version']} is current: a copy of {to} (was {result['from']})")
    if result["undone_events"]:
        console.print(
            f"[bold]undone[/bold] (their data is back in the adapter): {escape(', '.join(result['undone_events']))}"
        )


@app.command("status")
def status(
    run: str = typer.Argument(..., help=RUN_HELP),
    deadline: str = typer.Option(
        "30d",
        "--deadline",
        help="How long an event may stay applied only approximately (30d, 12h, 90m, 3600s); past it, exit code 6.",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """The requests the current version honours only approximately (influence updates not yet
    covered by a training from scratch), their ages, and whether the oldest is past the deadline:
    for a scheduler (cron, Airflow) to act on."""
    from rec_eraser.errors import EXIT_CODES
    from rec_eraser.workflows.erasure import erasure_status, parse_duration

    try:
        seconds = parse_duration(deadline)
    except USER_ERRORS as exc:
        fail_on(exc)
    result = _with_registry(run, lambda r: erasure_status(r, seconds))
    if as_json:
        emit_json(result)
    else:
        pending = result["pending_approximate"]
        console.print(
            f"{escape(result['run'])}: current {result['current']}, exact up to {fmt(result['exact_version'])}; "
            f"{len(pending)} event(s) applied approximately"
            + (f", the oldest {_age(result['oldest_pending_seconds'])} ago" if pending else "")
            + f"; deadline {_age(result['deadline_seconds'])}"
        )
        if pending:
            table = Table("event", "type", "user", "applied in", "applied", "age")
            for e in pending:
                table.add_row(
                    escape(e["id"]), e["type"], escape(e["user"]), e["version"], e["applied"], _age(e["age_seconds"])
                )
            console.print(table)
        if result["out_of_effect"]:
            err.print(
                "[bold red]out of effect:[/bold red] a compaction stopped before re-applying "
                f"{escape(', '.join(e['id'] for e in result['out_of_effect']))}; `rec-eraser compact` (or the next request) "
                "re-applies them"
            )
        elif result["overdue"]:
            err.print(
                "[bold red]overdue:[/bold red] the oldest approximate request is past the deadline; "
                "`rec-eraser compact` retrains from scratch on the current training set, which covers it exactly"
            )
    if result["overdue"]:
        raise typer.Exit(EXIT_CODES["overdue"])


@app.command("compact")
def compact(
    run: str = typer.Argument(..., help=RUN_HELP),
    eval_prompts: int = typer.Option(200, "--eval-prompts", min=1, help="Test prompts the comparison scores."),
    wait: float = typer.Option(
        0.0, "--wait", min=0.0, help="Seconds to wait for another job writing to the run when it is time to write."
    ),
    as_json: bool = JSON_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Retrain from scratch on the training set the current version stands for, compare it with that
    approximate version in function space, and make it current (exact). Requests may keep landing
    while it trains; they are re-applied on top of it and stay pending."""
    from rec_eraser.workflows.compaction import compact_run

    say = None if (quiet or as_json) else (lambda m: err.print(f"[dim]{m}...[/dim]"))
    result = _with_registry(run, lambda r: compact_run(r.run_dir, eval_prompts=eval_prompts, say=say, wait=wait))
    if as_json:
        emit_json(result)
        return
    if result["version"] is None:
        console.print(f"nothing to compact: {result['reason']}")
        return
    c = result["comparison"]
    if result.get("finished_interrupted"):
        console.print(
            f"{result['version']} (the exact retraining of {result['compacted']}) was written by a compaction that "
            f"stopped before re-applying the events that landed during its training; they are applied now; current {result['current']}"
        )
    else:
        console.print(
            f"{result['version']}: retrained from scratch on what {result['compacted']} stands for "
            f"({result['train_seconds']:.0f} s); current {result['current']}"
        )
    table = Table("figure", f"{result['compacted']} (approximate)", f"{result['version']} (exact)")
    for key in (c["main_metric"], "forgotten_loss", "corrected_loss", "unseen_loss", "membership_auc"):
        table.add_row(key, fmt(c["approximate"].get(key)), fmt(c["exact"].get(key)))
    console.print(table)
    console.print(f"{c['agreement_kind']} between them on {c['eval_prompts']} test prompts: {fmt(c['agreement'])}")
    for batch in result["reapplied"]:
        console.print(
            f"re-applied on top, approximately (pending): {escape(', '.join(batch['events']))} as {batch['version']}"
        )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@app.command("audit")
def audit(
    run: str = typer.Argument(..., help=RUN_HELP),
    user: str = typer.Option(..., "--user", help="The user to audit."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the report as Markdown to this file."),
    as_json: bool = JSON_OPT,
) -> None:
    """One user's data through the run: their training instances, the versions that held them, the
    events that removed or corrected them and how, whether a training from scratch covers them, and
    a membership test on the current version."""
    from rec_eraser.files import write_file_atomically
    from rec_eraser.workflows.audit import audit_user, render_markdown

    result = _with_registry(run, lambda r: audit_user(r.run_dir, user))
    report = render_markdown(result)
    if out is not None:
        try:
            write_file_atomically(out, lambda tmp: tmp.write_text(report, encoding="utf-8"))
        except OSError as exc:
            fail_on(exc)
    if as_json:
        emit_json(result)
    else:
        console.print(report, markup=False)
