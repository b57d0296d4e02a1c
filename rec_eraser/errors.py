"""The one base of every error a user can cause and fix.

Bad input (a malformed file, an unknown user, a wrong base model), a refused operation (a run
another job holds, a solve above its residual bound) and the like raise a subclass of
:class:`RecEraserError`, each also deriving from the builtin it stood for before (``ValueError``,
``RuntimeError``), so existing ``except`` clauses keep working. The CLI turns any of them into
one line on stderr and a non-zero exit, and so it does with ``ValueError`` and ``OSError``:
the workflows' checks raise ``ExperimentError`` (``rec_eraser.workflows.experiments``), but
many argument checks of the lower layers still raise a plain ``ValueError`` (moving them onto
this base is open work). Other exceptions are taken for bugs and keep their traceback.
"""

from __future__ import annotations

from typing import ClassVar

#: The exit codes of ``rec-eraser``, so that a scheduler can tell failures apart:
#: 1 bad input or a refused request (the default), 2 a bad command-line option (typer's usage
#: code), 3 the run is busy (another job holds its lock: try again later), 4 a computation
#: failed (a solve above its residual bound, a diverged training, a damping that cannot be
#: set), 5 integrity (a version's file differs from its recorded hash, the base model changed),
#: 6 overdue (``rec-eraser status``: an event applied only approximately is older than the
#: deadline; the command still prints the status), 70 an internal error (a bug: the command
#: prints its traceback; please report it).
EXIT_CODES = {"input": 1, "usage": 2, "busy": 3, "computation": 4, "integrity": 5, "overdue": 6, "internal": 70}


class RecEraserError(Exception):
    """Bad input or a refused operation; the message says what and, where it can, what to do."""

    #: the exit code of a command that ends in this error (see :data:`EXIT_CODES`)
    exit_code: ClassVar[int] = EXIT_CODES["input"]


class RunBusy(RecEraserError, RuntimeError):
    """Another job holds the run's write lock; trying again when it ends is the fix (exit code 3)."""

    exit_code = EXIT_CODES["busy"]


def exit_code_of(exc: BaseException) -> int:
    """The exit code a command ends with on ``exc`` (1 for errors outside the project's own)."""
    return getattr(exc, "exit_code", EXIT_CODES["input"])


#: what a caller can cause and fix, as opposed to a bug: the project's own errors, plus the
#: argument checks of the lower layers (ValueError) and the file system's (a run folder that
#: exists already, a model folder that does not); the CLI turns these into one line and exit 1
USER_ERRORS: tuple[type[Exception], ...] = (RecEraserError, ValueError, OSError)
