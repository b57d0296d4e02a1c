"""TALLRec's rating task: liked / disliked items of a history window, a target, answer " Yes." / " No.".

Each step of a user's chronological sequence (``rec_eraser.data.steps``: up to
``max_history`` items before the target) gives one instance. A history item is liked when
its rating is above the mapping's ``liked_above`` (3 for ml-100k), disliked otherwise; the
label is 1 ("Yes.") when the target's rating is above it. Datasets without explicit ratings
(LastFM, Steam) cannot make this task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rec_eraser.data import Dataset, Interaction, Step, chronological, steps
from rec_eraser.tasks import templates
from rec_eraser.tasks.base import TaskPrompts
from rec_eraser.tasks.instance import Instance, Source, TaskError, instance_id, sources
from rec_eraser.tasks.templates import PromptWords, tallrec_prompt, tallrec_response
from rec_eraser.tasks.titles import item_titles

if TYPE_CHECKING:
    from rec_eraser.tasks.rewrite import PromptContext

logger = logging.getLogger(__name__)

TASK = "tallrec"


def liked_threshold(dataset: Dataset, liked_above: float | None = None) -> float:
    """The rating above which an item counts as liked: ``liked_above`` or the mapping's.

    Raises:
        TaskError: the dataset has no ratings, or no threshold is given anywhere.
    """
    where = dataset.mapping.path or dataset.mapping.name
    if dataset.mapping.rating is None:
        raise TaskError(
            f"the tallrec task needs explicit ratings, and dataset {dataset.name!r} has none "
            f"(its mapping {where} maps no rating field); use the llara task instead"
        )
    threshold = dataset.mapping.liked_above if liked_above is None else liked_above
    if threshold is None:
        raise TaskError(
            f"the tallrec task needs liked_above (rating > liked_above counts as liked): set it in the mapping {where}"
        )
    return float(threshold)


def _liked(step: Step, x: Interaction, liked_above: float) -> bool:
    if x.rating is None:
        raise TaskError(f"user {step.user!r}: the interaction at line {x.line} has no rating (tallrec needs one)")
    return x.rating > liked_above


def tallrec_instance(step: Step, titles: Mapping[str, str], words: PromptWords, liked_above: float) -> Instance:
    """The TALLRec instance of one step (every interaction must have a rating)."""
    likes = [_liked(step, x, liked_above) for x in step.history]
    liked = [titles[x.item] for x, ok in zip(step.history, likes) if ok]
    disliked = [titles[x.item] for x, ok in zip(step.history, likes) if not ok]
    label = int(_liked(step, step.target, liked_above))
    return Instance(
        id=instance_id(TASK, step.user, step.position),
        task=TASK,
        split=step.split,
        user=step.user,
        position=step.position,
        prompt=tallrec_prompt(liked, disliked, titles[step.target.item], words),
        response=tallrec_response(label),
        interactions=sources(step),
        history_items=tuple(x.item for x in step.history),
        target_item=step.target.item,
        label=label,
    )


def build_tallrec(dataset: Dataset, max_history: int = 10, liked_above: float | None = None) -> list[Instance]:
    """Every TALLRec instance of ``dataset`` (users in order of first appearance, then positions)."""
    threshold = liked_threshold(dataset, liked_above)
    titles = item_titles(dataset)
    sequences = chronological(dataset.interactions)
    out = [
        tallrec_instance(step, titles, dataset.mapping, threshold) for step in steps(sequences, max_history=max_history)
    ]
    logger.info(
        "tallrec: %d instances from %d users, %.1f%% labelled Yes",
        len(out),
        len(sequences),
        100.0 * sum(i.label or 0 for i in out) / max(len(out), 1),
    )
    return out


class TallrecPrompts(TaskPrompts):
    """TALLRec's prompts: liked and disliked history titles; a wrong label can be corrected."""

    name = TASK
    corrections = frozenset({"correct_label"})

    def build(self, dataset: Dataset, *, seed: int, negatives: int, max_history: int) -> list[Instance]:
        return build_tallrec(dataset, max_history=max_history)

    def manifest_settings(self, dataset: Dataset, *, negatives: int) -> dict[str, Any]:
        return {"liked_above": liked_threshold(dataset)}

    def corrupt(
        self, dataset: Dataset, picked: Sequence[Interaction], rng: np.random.Generator
    ) -> tuple[dict[int, Interaction], list[dict[str, Any]]]:
        """A wrong label: the rating flipped across the like threshold (a liked item gets the
        lowest rating of the data, a disliked one the highest); the record holds the true label."""
        threshold = liked_threshold(dataset)
        ratings = sorted({x.rating for x in dataset.interactions if x.rating is not None})
        chosen = {x.line for x in picked}
        corrupted, record = {}, []
        for x in dataset.interactions:
            if x.line in chosen:
                liked = x.rating > threshold
                corrupted[x.line] = replace(x, rating=ratings[0] if liked else ratings[-1])
                record.append({"user": x.user, "item": x.item, "line": x.line, "label": "Yes" if liked else "No"})
        return corrupted, record

    def templates(self) -> dict[str, str]:
        return {
            "alpaca": templates.ALPACA_TEMPLATE,
            "instruction": templates.TALLREC_INSTRUCTION,
            "input": templates.TALLREC_INPUT,
            "none": templates.TALLREC_NONE,
            "yes": templates.TALLREC_RESPONSES[1],
            "no": templates.TALLREC_RESPONSES[0],
        }

    def rebuild(
        self,
        instance: Instance,
        interactions: tuple[Source, ...],
        ctx: PromptContext,
        candidates: tuple[str, ...] | None = None,
    ) -> Instance:
        if ctx.liked_above is None:
            raise TaskError(f"{instance.id}: the run records no liked_above threshold")
        history, target = interactions[:-1], interactions[-1]
        liked = [ctx.title(s.item) for s in history if s.liked(ctx.liked_above)]
        disliked = [ctx.title(s.item) for s in history if not s.liked(ctx.liked_above)]
        label = int(target.liked(ctx.liked_above))
        return replace(
            instance,
            prompt=tallrec_prompt(liked, disliked, ctx.title(target.item), ctx.words),
            response=tallrec_response(label),
            interactions=interactions,
            history_items=tuple(s.item for s in history),
            target_item=target.item,
            label=label,
        )
