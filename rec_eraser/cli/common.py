"""What every ``rec-eraser`` command shares: the app, one-line errors, JSON output, progress."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from rec_eraser.errors import USER_ERRORS, RecEraserError, exit_code_of  # noqa: F401  (USER_ERRORS: re-exported for the commands)
from rec_eraser.jsonable import finite

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a bug's traceback is printed once, plainly, by rec_eraser.cli.main
    help="Unlearning for LLM-based recommenders: influence-function edits of LoRA adapters.",
)
err = Console(stderr=True)
console = Console()


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")  # one line, never wrapped
    raise typer.Exit(code)


#: set by ``--debug``: user errors print their traceback before their line
DEBUG = {"on": False}


def fail_on(exc: BaseException) -> None:
    """One line for a user error, with its exit code (``rec_eraser.errors.EXIT_CODES``)."""
    if DEBUG["on"]:
        traceback.print_exception(exc, file=sys.stderr)
    fail(str(exc), exit_code_of(exc))


def emit_json(obj: Any) -> None:
    if not_rank_zero():  # under torchrun rank 0 prints the one object
        return
    sys.stdout.write(json.dumps(finite(obj), indent=2, allow_nan=False, default=str) + "\n")


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


#: the commands that run under ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1): every rank
#: computes its share (training steps, gradient rows, b, scoring), rank 0 alone writes and prints
DISTRIBUTED_COMMANDS = ("train", "evaluate", "forget-user", "forget-interactions", "correct", "apply-events")


@app.callback()
def main(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an error before its one line."),
) -> None:
    DEBUG["on"] = debug
    # transformers' deprecation notices (raised inside peft) are noise to a user of this tool
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _join_process_group(ctx.invoked_subcommand)


def not_rank_zero() -> bool:
    """A process that torchrun started with a rank other than 0 (it prints nothing but errors)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0


def _join_process_group(command: str | None) -> None:
    """Under torchrun: join the group for a command that splits its work, refuse the others."""
    if command not in DISTRIBUTED_COMMANDS:
        fail(
            f"`rec-eraser {command}` runs in one process; run it without torchrun (the commands that "
            f"run distributed: {', '.join(DISTRIBUTED_COMMANDS)})",
            2,
        )
    from rec_eraser.core import distributed

    distributed.init_from_env()
    if not_rank_zero():  # one voice: rank 0's (errors still print on every rank)
        console.quiet = err.quiet = True


def run_dir_of(run: str) -> Path:
    """A run folder given as a path or as a name under adapters/; one-line error otherwise."""
    from rec_eraser.workflows import RegistryError, resolve_run

    try:
        return resolve_run(run)
    except RegistryError as exc:
        fail_on(exc)


def progress_bar(quiet: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )


RUN_HELP = "A run folder, or its name under adapters/."
JSON_OPT = typer.Option(False, "--json", help="Print one JSON object and nothing else.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress output.")
