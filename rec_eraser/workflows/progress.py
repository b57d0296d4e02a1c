"""The progress callback every long workflow takes: one human-readable message per step.

The CLI passes one that prints to the terminal (and the benchmark studies one that also
appends to their ``bench.log``); library callers pass ``None`` or their own.
"""

from __future__ import annotations

from collections.abc import Callable

Say = Callable[[str], None]
