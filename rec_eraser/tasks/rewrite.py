"""Rebuild an instance after its data changed: an interaction dropped (noise), re-rated or re-targeted.

The unlearning workflows turn a user's correction into edits of the training instances
built from the corrected interactions. The edited instance is rebuilt with the very
templates and words the run was prepared with, so it is exactly what ``prepare`` would
have built from the corrected data, except that a history keeps its remaining items (it is
not refilled from older interactions: the edit is the removal of one item from a prompt).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rec_eraser.tasks.instance import Instance, Source, TaskError
from rec_eraser.tasks.prompt_registry import prompts_of, tasks_supporting


@dataclass(frozen=True)
class PromptContext:
    """What rebuilding a run's prompts needs: item titles, the dataset's words, TALLRec's like threshold."""

    titles: Mapping[str, str]
    words: Any
    liked_above: float | None
    #: why this run's prompts cannot be rebuilt (prepared with other templates), or None. Removing
    #: instances (a deletion) still works; rebuilding one would mix two layouts in one run.
    stale_templates: str | None = None

    @classmethod
    def of_run(cls, run_dir: Path | str) -> PromptContext:
        from rec_eraser.tasks.prepare import load_manifest, load_titles

        manifest = load_manifest(run_dir)
        fields = manifest["mapping"]["fields"]
        words = SimpleNamespace(noun=fields["noun"], verb=fields["verb"], verb_past=fields["verb_past"])
        stale = None
        if manifest.get("templates") != prompts_of(manifest["task"]).templates():
            stale = (
                f"{run_dir} was prepared with other prompt templates than this version of rec-eraser builds (an "
                "older LLaRA layout), so its prompts cannot be rebuilt: prepare and train the run again"
            )
        return cls(
            titles=load_titles(run_dir), words=words, liked_above=manifest.get("liked_above"), stale_templates=stale
        )

    def title(self, item: str) -> str:
        if item not in self.titles:
            raise TaskError(f"item {item!r} is not an item of this run")
        return self.titles[item]


def rebuild(
    instance: Instance, interactions: tuple[Source, ...], ctx: PromptContext, candidates: tuple[str, ...] | None = None
) -> Instance:
    """``instance`` rebuilt from ``interactions`` (history oldest first, target last) and ``candidates``."""
    if ctx.stale_templates:
        raise TaskError(ctx.stale_templates)
    return prompts_of(instance.task).rebuild(instance, interactions, ctx, candidates)


def _check_supports(instance: Instance, correction: str) -> None:
    if correction not in prompts_of(instance.task).corrections:
        raise TaskError(
            f"{instance.id}: {correction} needs the {' or '.join(tasks_supporting(correction))} task, "
            f"not {instance.task}"
        )


def without_items(instance: Instance, items: Collection[str], ctx: PromptContext) -> Instance | None:
    """The instance with ``items`` removed from its history; None when its target is one of them."""
    if instance.target_item in items:
        return None
    kept = tuple(s for s in instance.interactions[:-1] if s.item not in items)
    if len(kept) == len(instance.interactions) - 1:
        return instance
    return rebuild(instance, (*kept, instance.target), ctx)


def with_label(instance: Instance, item: str, liked: bool, ctx: PromptContext) -> Instance:
    """The user's interaction with ``item`` re-labelled liked / not liked, wherever it appears (tasks with ``correct_label``).

    The corrected interaction keeps its provenance (line, timestamp); its rating becomes
    ``liked_above + 1`` (liked) or ``liked_above`` (not liked), the nearest values on each
    side of the threshold on an integer scale, so the prompt and the response follow.
    """
    _check_supports(instance, "correct_label")
    if ctx.liked_above is None:
        raise TaskError(f"{instance.id}: the run records no liked_above threshold")
    rating = ctx.liked_above + 1.0 if liked else ctx.liked_above
    changed = tuple(
        replace(s, rating=rating) if s.item == item and s.liked(ctx.liked_above) != liked else s
        for s in instance.interactions
    )
    return instance if changed == instance.interactions else rebuild(instance, changed, ctx)


def with_item(instance: Instance, old: str, new: str, ctx: PromptContext) -> Instance:
    """The user's interaction with ``old`` was in truth with ``new`` (a wrong target), wherever it appears (tasks with ``correct_target``).

    Where ``old`` is the target, ``new`` takes its place among the candidates too (keeping
    the candidate order), unless it is a candidate already.
    """
    _check_supports(instance, "correct_target")
    ctx.title(new)
    if old not in (s.item for s in instance.interactions):
        return instance
    changed = tuple(replace(s, item=new) if s.item == old else s for s in instance.interactions)
    candidates = instance.candidates
    if instance.target_item == old and candidates is not None and new not in candidates:
        candidates = tuple(new if c == old else c for c in candidates)
    return rebuild(instance, changed, ctx, candidates)
