"""The ``rec-eraser`` command line: parse, call the library, print. Nothing else lives here.

One module per group of commands; importing them registers their commands on ``app``, in the
order ``--help`` lists them (a user's order: make and train a run, edit it, inspect it, benchmark).
"""

from rec_eraser.cli.common import USER_ERRORS, app

# isort: off
from rec_eraser.cli import run, unlearn, adapters, bench  # noqa: F401, E402  (registers the commands)
# isort: on

__all__ = ["USER_ERRORS", "app"]
