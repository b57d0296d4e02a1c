"""From events to edits of the training set (docs/design.md, "Edits").

- ``delete_user`` u: every training instance of u is removed (Instance Removal).
- ``remove_interactions`` u, items: an instance of u whose target is one of the items is
  removed (IR); one whose history holds them loses them from its prompt, item tokens
  included (Query Modification).
- ``correct_label`` u, item, Yes|No (TALLRec): the interaction is re-labelled wherever it
  appears: the response where it is the target (Response Correction), the liked/disliked
  lists where it is in the history (QM).
- ``correct_target`` u, item, target (LLaRA): the interaction was in truth with ``target``:
  the response (and the candidate it replaces) where it is the target (RC), the history
  where it appears there (QM).

Events are applied in order to a working copy of the touched instances, so several events
on one instance compose, and the plan holds one edit per instance (old form → final form):
b is linear in the edits, so the whole batch is one solve.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rec_eraser.tasks.base import CORRECTIONS
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prompt_registry import prompts_of, tasks_supporting
from rec_eraser.tasks.rewrite import PromptContext, with_item, with_label, without_items
from rec_eraser.workflows.events import Event, EventError


@dataclass
class RunIndex:
    """What an event is checked against: the run's task, users and each user's interacted items (all splits)."""

    task: str
    user_items: dict[str, set[str]]
    items: set[str]

    @classmethod
    def build(cls, task: str, splits: Sequence[Sequence[Instance]], titles: dict[str, str]) -> RunIndex:
        user_items: dict[str, set[str]] = defaultdict(set)
        for instances in splits:
            for z in instances:
                user_items[z.user].update(s.item for s in z.interactions)
        return cls(task=task, user_items=dict(user_items), items=set(titles))

    def validate(self, event: Event) -> None:
        """Raise :class:`EventError` when ``event`` does not fit the run."""
        if event.user not in self.user_items:
            raise EventError(f"unknown user {event.user!r}")
        if event.type in CORRECTIONS and event.type not in (own := prompts_of(self.task).corrections):
            raise EventError(
                f"{event.type} needs the {' or '.join(tasks_supporting(event.type))} task; this run is "
                f"{self.task} ({'use ' + ' or '.join(sorted(own)) if own else 'it takes deletions only'})"
            )
        for item in event.items or ((event.item,) if event.item is not None else ()):
            if item not in self.items:
                raise EventError(f"unknown item {item!r}")
            if item not in self.user_items[event.user]:
                raise EventError(f"user {event.user!r} has no interaction with item {item!r}")
        if event.target is not None:
            if event.target not in self.items:
                raise EventError(f"unknown target item {event.target!r}")
            if event.target == event.item:
                raise EventError("the corrected target equals the item it corrects")


@dataclass
class EventEffect:
    """How many training instances one event removed and modified."""

    event: Event
    removed: int = 0
    modified: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.event.to_dict(), "removed": self.removed, "modified": self.modified}


@dataclass
class EditPlan:
    """Touched training instances: their form as trained on, and after the events (None: removed)."""

    before: dict[str, Instance] = field(default_factory=dict)
    after: dict[str, Instance | None] = field(default_factory=dict)
    effects: list[EventEffect] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        """Ids of the instances whose final form differs from the trained one."""
        return [i for i in self.before if self.after[i] != self.before[i]]

    @property
    def removed(self) -> list[str]:
        return [i for i in self.changed if self.after[i] is None]

    @property
    def modified(self) -> list[str]:
        return [i for i in self.changed if self.after[i] is not None]


def _apply(event: Event, z: Instance, ctx: PromptContext) -> Instance | None:
    if event.type == "delete_user":
        return None
    if event.type == "remove_interactions":
        return without_items(z, set(event.items), ctx)
    if event.type == "correct_label":
        return with_label(z, str(event.item), event.liked, ctx)
    return with_item(z, str(event.item), str(event.target), ctx)


def plan_edits(events: Sequence[Event], training_set: Sequence[Instance], ctx: PromptContext) -> EditPlan:
    """The edits that ``events`` (already validated) make to ``training_set``, in event order."""
    by_user: dict[str, list[Instance]] = defaultdict(list)
    for z in training_set:
        by_user[z.user].append(z)
    plan = EditPlan()
    for event in events:
        effect = EventEffect(event)
        for original in by_user.get(event.user, []):
            current = plan.after.get(original.id, original)
            if current is None:
                continue
            new = _apply(event, current, ctx)
            if new is None:
                effect.removed += 1
            elif new != current:
                effect.modified += 1
            else:
                continue
            plan.before.setdefault(original.id, original)
            plan.after[original.id] = new
        plan.effects.append(effect)
    return plan
