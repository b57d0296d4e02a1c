"""The progress callback every long workflow takes: one human-readable message per step.

The CLI passes one that prints to the terminal (and the benchmark studies and the demo one
that also appends to their log file, :func:`logged`); library callers pass ``None`` or their own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

Say = Callable[[str], None]


def logged(log: Path, say: Say | None, ready: Callable[[], bool] = lambda: True) -> Say:
    """``say``, and each message appended with its time to the file ``log``: a run of an hour
    must not lose where it got to when ``--json`` or a closed terminal hides the messages.
    Messages come in order; while ``ready()`` is false they wait (the demo's log lives in a run
    folder that ``prepare`` wants new or empty)."""
    pending: list[str] = []

    def tell(message: str) -> None:
        pending.append(f"{datetime.now().isoformat(timespec='seconds')} {message}\n")
        if ready():
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a", encoding="utf-8") as f:
                f.writelines(pending)
            pending.clear()
        if say is not None:
            say(message)

    return tell


def training_progress(label: str, say: Say, every: float = 0.1) -> Callable[[int, int, float], None]:
    """A training progress callback that says where training is about every ``every`` of its steps."""
    said = [-1]

    def progress(step: int, total: int, loss: float) -> None:
        tenth = int(step / max(1, total) / every)
        if tenth != said[0] or step == total:
            said[0] = tenth
            say(f"{label}: step {step}/{total}, loss {loss:.3f}")

    return progress
