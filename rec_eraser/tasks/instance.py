"""The prepared training/evaluation instance and its provenance.

An :class:`Instance` is one prompt/response pair z = (x, y) plus everything needed to find
it again: the user, the target's position in the user's chronological sequence, and the
interactions (``.inter`` line, item, timestamp, rating) it was built from. The unlearning
workflows select instances by user (account deletion, IR) or by interaction line (noisy
interaction, QM) through :meth:`Instance.touches`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import Any

from rec_eraser.data import Interaction, Step
from rec_eraser.errors import RecEraserError


class TaskError(RecEraserError, ValueError):
    """A task cannot be built from this dataset or with these settings; the message says why."""


def instance_id(task: str, user: str, position: int) -> str:
    """The stable id of an instance: ``f"{task}-{user}-{position}"`` (position in the user's sequence)."""
    return f"{task}-{user}-{position}"


@dataclass(frozen=True)
class Source:
    """One interaction an instance was built from.

    Attributes:
        item: the item id (raw token of the dataset).
        timestamp: the interaction's time, or None where the dataset has none.
        line: the interaction's line in the ``.inter`` file (its identity).
        rating: the rating, or None for implicit feedback.
    """

    item: str
    timestamp: float | None
    line: int
    rating: float | None = None

    @classmethod
    def of(cls, x: Interaction) -> Source:
        return cls(x.item, x.timestamp, x.line, x.rating)

    def liked(self, liked_above: float) -> bool:
        """Whether the rating is above ``liked_above`` (explicit feedback only)."""
        if self.rating is None:
            raise TaskError(f"the interaction at line {self.line} has no rating")
        return self.rating > liked_above


@dataclass(frozen=True)
class Instance:
    """One prompt/response pair with its provenance (JSON-ready through :meth:`to_dict`).

    Attributes:
        id: stable id, ``f"{task}-{user}-{position}"``.
        task: the name of a registered task (``"llara"``, ``"tallrec"``).
        split: ``"train"``, ``"valid"`` or ``"test"``.
        user: the user whose history built the instance.
        position: index of the target in the user's chronological sequence.
        prompt: the query x; it never ends in whitespace.
        response: the answer y; it always starts with one space (see ``templates``).
        interactions: the history interactions, oldest first, then the target (last).
        history_items: the history's item ids, oldest first (LLaRA: prompt order of ``[HistoryEmb]``).
        target_item: the target's item id.
        candidates: LLaRA only: candidate item ids in prompt order (``[CansEmb]`` order), target among them.
        label: TALLRec only: 1 if the user liked the target ("Yes."), 0 otherwise ("No.").
    """

    id: str
    task: str
    split: str
    user: str
    position: int
    prompt: str
    response: str
    interactions: tuple[Source, ...]
    history_items: tuple[str, ...]
    target_item: str
    candidates: tuple[str, ...] | None = None
    label: int | None = None

    @property
    def target(self) -> Source:
        """The target interaction (the last of :attr:`interactions`)."""
        return self.interactions[-1]

    @property
    def lines(self) -> tuple[int, ...]:
        """The ``.inter`` lines of every interaction the instance was built from."""
        return tuple(s.line for s in self.interactions)

    def touches(self, user: str | None = None, lines: Collection[int] = ()) -> bool:
        """Whether the instance belongs to ``user`` or was built from any of the interaction ``lines``."""
        return (user is not None and self.user == user) or any(s.line in lines for s in self.interactions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields in declaration order, tuples as lists."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["interactions"] = [vars(s).copy() for s in self.interactions]
        out["history_items"] = list(self.history_items)
        out["candidates"] = None if self.candidates is None else list(self.candidates)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        """The inverse of :meth:`to_dict`."""
        d = dict(d)
        d["interactions"] = tuple(Source(**s) for s in d["interactions"])
        d["history_items"] = tuple(d["history_items"])
        if d.get("candidates") is not None:
            d["candidates"] = tuple(d["candidates"])
        return cls(**d)


def sources(step: Step) -> tuple[Source, ...]:
    """The provenance of a step: its history (oldest first) then its target."""
    return tuple(Source.of(x) for x in (*step.history, step.target))
