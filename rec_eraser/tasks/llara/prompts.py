"""LLaRA's next-item task: history titles with item tokens, a seeded candidate set, answer = target title.

Each step of a user's chronological sequence (``rec_eraser.data.steps``: up to ``max_history``
items before the target) gives one instance. Its candidates are the target plus
``negatives`` items drawn without replacement from the dataset's interacted items,
excluding every item the user ever interacted with (any split, so no negative is a later
positive) and every item whose title equals a title of the user's items or of a candidate
already drawn (ml-100k has a few same-title items; the answer must match one candidate
only). The draw and the shuffle of the candidate order use one ``numpy`` Generator seeded
from ``(seed, instance id)``: given the seed and the pool (the interacted items of the data
used, so ``max_users`` changes it), an instance's candidates do not depend on build order,
are identical on every build, and are stored in the instance.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rec_eraser.data import Dataset, Interaction, Step, chronological, steps
from rec_eraser.tasks import templates
from rec_eraser.tasks.base import TaskPrompts
from rec_eraser.tasks.instance import Instance, Source, TaskError, instance_id, sources
from rec_eraser.tasks.templates import PromptWords, llara_prompt, llara_response
from rec_eraser.tasks.titles import item_titles

if TYPE_CHECKING:
    from rec_eraser.tasks.rewrite import PromptContext

logger = logging.getLogger(__name__)

TASK = "llara"


def candidate_rng(seed: int, iid: str) -> np.random.Generator:
    """The Generator of one instance's candidates, seeded from ``(seed, sha256(iid))``."""
    if seed < 0:
        raise TaskError(f"seed must be a non-negative integer, got {seed}")
    digest = int.from_bytes(hashlib.sha256(iid.encode("utf-8")).digest()[:16], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def eligible_negatives(pool: Sequence[str], user_items: Iterable[str], titles: Mapping[str, str]) -> list[str]:
    """Items of ``pool`` (in pool order) that are not the user's items nor share a title with one."""
    own = set(user_items)
    own_titles = {titles[i] for i in own}
    return [i for i in pool if i not in own and titles[i] not in own_titles]


def draw_candidates(
    iid: str, target: str, eligible: Sequence[str], titles: Mapping[str, str], negatives: int = 20, seed: int = 0
) -> tuple[str, ...]:
    """The target and ``negatives`` items of ``eligible`` with distinct titles, in a seeded random order.

    Raises:
        TaskError: fewer than ``negatives`` eligible items with distinct titles.
    """
    if negatives < 0:
        raise TaskError(f"negatives must be >= 0, got {negatives}")
    rng = candidate_rng(seed, iid)
    seen = {titles[target]}
    chosen: list[str] = []
    for k in rng.permutation(len(eligible)):
        if len(chosen) == negatives:
            break
        item = eligible[int(k)]
        if item != target and titles[item] not in seen:
            seen.add(titles[item])
            chosen.append(item)
    if len(chosen) < negatives:
        raise TaskError(
            f"{iid}: only {len(chosen)} items are eligible as negatives (not the user's, distinct "
            f"titles), {negatives} asked: lower negatives or use a larger dataset"
        )
    pool = [target, *chosen]
    return tuple(pool[int(k)] for k in rng.permutation(len(pool)))


def llara_instance(step: Step, candidates: Sequence[str], titles: Mapping[str, str], words: PromptWords) -> Instance:
    """The LLaRA instance of one step with the given candidates (which must contain the target)."""
    if step.target.item not in candidates:
        raise TaskError(f"target {step.target.item!r} of user {step.user!r} is not among its candidates")
    history = tuple(x.item for x in step.history)
    prompt = llara_prompt([titles[i] for i in history], [titles[c] for c in candidates], words)
    return Instance(
        id=instance_id(TASK, step.user, step.position),
        task=TASK,
        split=step.split,
        user=step.user,
        position=step.position,
        prompt=prompt,
        response=llara_response(titles[step.target.item]),
        interactions=sources(step),
        history_items=history,
        target_item=step.target.item,
        candidates=tuple(candidates),
    )


def build_llara(dataset: Dataset, seed: int = 0, negatives: int = 20, max_history: int = 10) -> list[Instance]:
    """Every LLaRA instance of ``dataset`` (users in order of first appearance, then positions)."""
    titles = item_titles(dataset)
    pool = dataset.items
    sequences = chronological(dataset.interactions)
    eligible = {user: eligible_negatives(pool, (x.item for x in seq), titles) for user, seq in sequences.items()}
    out: list[Instance] = []
    for step in steps(sequences, max_history=max_history):
        iid = instance_id(TASK, step.user, step.position)
        candidates = draw_candidates(iid, step.target.item, eligible[step.user], titles, negatives, seed)
        out.append(llara_instance(step, candidates, titles, dataset.mapping))
    logger.info("llara: %d instances from %d users, %d candidates each", len(out), len(sequences), negatives + 1)
    return out


class LlaraPrompts(TaskPrompts):
    """LLaRA's prompts: a seeded candidate set per instance; a wrong target can be corrected."""

    name = TASK
    corrections = frozenset({"correct_target"})
    item_tokens = True

    def build(self, dataset: Dataset, *, seed: int, negatives: int, max_history: int) -> list[Instance]:
        return build_llara(dataset, seed=seed, negatives=negatives, max_history=max_history)

    def manifest_settings(self, dataset: Dataset, *, negatives: int) -> dict[str, Any]:
        return {"negatives": negatives}

    def corrupt(
        self, dataset: Dataset, picked: Sequence[Interaction], rng: np.random.Generator
    ) -> tuple[dict[int, Interaction], list[dict[str, Any]]]:
        """A wrong target: the item replaced by a random item the user never interacted with; the
        record holds the true item. The true item must stay an item of the run (someone else keeps
        an interaction with it), or the correction could not name it: the few targets whose item
        would vanish are left alone."""
        remaining = Counter(x.item for x in dataset.interactions)
        chosen = set()
        for x in picked:
            if remaining[x.item] >= 2:
                remaining[x.item] -= 1
                chosen.add(x.line)
        all_items = sorted(dataset.titles) if dataset.titles else dataset.items
        seen = {u: {x.item for x in seq} for u, seq in chronological(dataset.interactions).items()}
        corrupted, record = {}, []
        for x in dataset.interactions:
            if x.line in chosen:
                item = str(rng.choice([i for i in all_items if i not in seen[x.user]]))
                seen[x.user].add(item)
                corrupted[x.line] = replace(x, item=item)
                record.append({"user": x.user, "item": item, "line": x.line, "target": x.item})
        return corrupted, record

    def templates(self) -> dict[str, str]:
        return {
            "llara": templates.LLARA_TEMPLATE,
            "history_emb": templates.HISTORY_EMB,
            "cans_emb": templates.CANS_EMB,
            "user_emb": templates.USER_EMB,
            "item_token": "before the title",
        }

    def rebuild(
        self,
        instance: Instance,
        interactions: tuple[Source, ...],
        ctx: PromptContext,
        candidates: tuple[str, ...] | None = None,
    ) -> Instance:
        history, target = interactions[:-1], interactions[-1]
        cands = candidates if candidates is not None else instance.candidates
        if cands is None or target.item not in cands:
            raise TaskError(f"{instance.id}: the target {target.item!r} is not among the candidates")
        prompt = llara_prompt([ctx.title(s.item) for s in history], [ctx.title(c) for c in cands], ctx.words)
        return replace(
            instance,
            prompt=prompt,
            response=llara_response(ctx.title(target.item)),
            interactions=interactions,
            history_items=tuple(s.item for s in history),
            target_item=target.item,
            candidates=tuple(cands),
        )
