"""Chronological per-user split: ordered histories and leave-last-out assignment.

Each user's interactions are ordered by timestamp; ties, and datasets without timestamps
(LastFM), keep file order (the sort is stable). Every position of a user's sequence is a
possible target; its history is the up-to-``max_history`` interactions just before it,
oldest first. Leave-last-out assigns a user's last position to ``test``, the second last to
``valid`` and all earlier ones to ``train``; a target's history may contain items of any
earlier position (the test target's history includes the valid target), as in LLaRA/SASRec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from rec_eraser.data.dataset import Interaction

SPLITS = ("train", "valid", "test")


def chronological(interactions: Iterable[Interaction]) -> dict[str, list[Interaction]]:
    """User -> that user's interactions ordered by (timestamp, file order); users in order of first appearance."""
    by_user: dict[str, list[Interaction]] = {}
    for x in sorted(interactions, key=lambda x: x.line):
        by_user.setdefault(x.user, []).append(x)
    for seq in by_user.values():
        seq.sort(key=lambda x: 0.0 if x.timestamp is None else x.timestamp)  # stable: ties keep file order
    return by_user


def leave_last_out(n: int) -> list[str]:
    """Split of each position of a sequence of length ``n``: last test, second last valid, the rest train."""
    if n <= 0:
        return []
    return ["train"] * max(n - 2, 0) + (["valid"] if n >= 2 else []) + ["test"]


@dataclass(frozen=True)
class Step:
    """One prediction step of a user's sequence.

    Attributes:
        user: the user.
        position: index of the target in the user's ordered sequence.
        history: up to ``max_history`` interactions just before the target, oldest first.
        target: the interaction to predict.
        split: ``"train"``, ``"valid"`` or ``"test"`` (leave-last-out on the position).
    """

    user: str
    position: int
    history: tuple[Interaction, ...]
    target: Interaction
    split: str


def steps(
    sequences: Mapping[str, Sequence[Interaction]], max_history: int = 10, min_history: int = 1
) -> Iterator[Step]:
    """Yield every step (history, target) of every user, in user order then position order.

    Positions with fewer than ``min_history`` earlier interactions are skipped (with the
    default 1, a user's first interaction is never a target, and a user with a single
    interaction yields nothing).
    """
    if max_history < 1 or min_history < 0 or min_history > max_history:
        raise ValueError(f"need 1 <= max_history and 0 <= min_history <= max_history, got {max_history}, {min_history}")
    for user, seq in sequences.items():
        labels = leave_last_out(len(seq))
        for pos, target in enumerate(seq):
            history = tuple(seq[max(0, pos - max_history) : pos])
            if len(history) >= min_history:
                yield Step(user, pos, history, target, labels[pos])
