"""Edits to a training set: what the influence engine is asked to undo or correct.

A training instance is whatever the user's ``collate_fn`` accepts; the engine never
looks inside it. An edit names the instance as it was trained on and, for a
replacement, what it should have been.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True, eq=False)
class Removal:
    """Instance removal (IR): ``sample`` leaves the training set."""

    sample: Any


@dataclass(frozen=True, eq=False)
class Replacement:
    """Query modification (QM) or response correction (RC): ``old`` becomes ``new``.

    ``old`` must be the instance exactly as it was trained on; ``new`` is the edited
    instance (changed prompt for QM, changed response for RC).
    """

    old: Any
    new: Any


Edit = Union[Removal, Replacement]


def old_samples(edits: list[Edit]) -> list[Any]:
    """The instances, as trained on, that the edits touch."""
    return [e.sample if isinstance(e, Removal) else e.old for e in edits]


def new_samples(edits: list[Edit]) -> list[Any]:
    """The replacement instances of the edits (removals contribute none)."""
    return [e.new for e in edits if isinstance(e, Replacement)]


def validate_edits(edits: list[Edit]) -> None:
    """Raise ``TypeError``/``ValueError`` for an empty or mistyped list of edits."""
    if not edits:
        raise ValueError("no edits given: pass at least one Removal or Replacement")
    for i, edit in enumerate(edits):
        if not isinstance(edit, (Removal, Replacement)):
            raise TypeError(f"edit {i} is a {type(edit).__name__}, expected Removal or Replacement")
