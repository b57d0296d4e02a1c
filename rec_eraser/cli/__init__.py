"""The ``rec-eraser`` command line: parse, call the library, print. Nothing else lives here.

One module per group of commands; importing them registers their commands on ``app``, in the
order ``--help`` lists them (a user's order: make and train a run, edit it, inspect it, benchmark).
"""

import sys
import traceback

from rec_eraser.cli.common import USER_ERRORS, app
from rec_eraser.errors import EXIT_CODES

# isort: off
from rec_eraser.cli import run, unlearn, adapters, bench  # noqa: F401, E402  (registers the commands)
# isort: on

__all__ = ["USER_ERRORS", "app", "main"]


def main() -> None:
    """The ``rec-eraser`` command: ``app``, where an error that is not the user's (a bug) ends in
    its traceback and exit code 70, never the 1 of bad input."""
    try:
        app()
    except Exception:
        traceback.print_exc()
        sys.exit(EXIT_CODES["internal"])
