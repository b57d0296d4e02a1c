"""A third task, defined here and registered, runs end to end: prepare, train, evaluate, forget
a user, correct an interaction. Nothing in the library names it: a new task is its prompt
builder and its evaluation, each registered once."""

from __future__ import annotations

import zlib
from dataclasses import replace

import pytest

import rec_eraser as rx
from rec_eraser.data import chronological, steps
from rec_eraser.tasks.base import TaskPrompts
from rec_eraser.tasks.instance import Instance, instance_id, sources
from rec_eraser.tasks.prompt_registry import PROMPT_REGISTRY, register_prompts
from rec_eraser.tasks.registry import TASK_REGISTRY, register_task
from rec_eraser.tasks.tallrec.evaluation import TallRec
from rec_eraser.tasks.templates import tallrec_response
from rec_eraser.tasks.titles import item_titles
from rec_eraser.workflows.events import EventError

NAME = "next-or-not"


def _prompt(history: list[str], candidate: str) -> str:
    return f"Seen: {'; '.join(history) or 'nothing'}. Next: {candidate}? Answer:"


class NextOrNotPrompts(TaskPrompts):
    """Is the candidate the user's real next item (Yes) or an item they never saw (No)? Implicit
    feedback only; every other step's candidate is swapped for a seeded unseen item."""

    name = NAME

    def build(self, dataset, *, seed, negatives, max_history):
        titles = item_titles(dataset)
        sequences = chronological(dataset.interactions)
        out = []
        for step in steps(sequences, max_history=max_history):
            seen = {x.item for x in sequences[step.user]}
            unseen = [i for i in dataset.items if i not in seen]
            real = step.position % 2 == 0
            candidate = (
                step.target.item
                if real
                else unseen[zlib.crc32(f"{seed}:{step.user}:{step.position}".encode()) % len(unseen)]
            )
            history = [x.item for x in step.history]
            out.append(
                Instance(
                    id=instance_id(NAME, step.user, step.position),
                    task=NAME,
                    split=step.split,
                    user=step.user,
                    position=step.position,
                    prompt=_prompt([titles[i] for i in history], titles[candidate]),
                    response=tallrec_response(int(real)),
                    interactions=sources(step),
                    history_items=tuple(history),
                    target_item=candidate,
                    label=int(real),
                )
            )
        return out

    def templates(self):
        return {"prompt": _prompt(["{history}"], "{candidate}")}

    def rebuild(self, instance, interactions, ctx, candidates=None):
        history = [s.item for s in interactions[:-1]]
        return replace(
            instance,
            prompt=_prompt([ctx.title(i) for i in history], ctx.title(instance.target_item)),
            interactions=interactions,
            history_items=tuple(history),
        )


class NextOrNot(TallRec):
    """Judged like TALLRec: the Yes − No score, AUC, the candidate's Yes-rate as the simple baseline."""

    name = NAME


@pytest.fixture
def next_or_not():
    register_prompts(NextOrNotPrompts())
    register_task(NextOrNot())
    yield
    del PROMPT_REGISTRY[NAME], TASK_REGISTRY[NAME]


def test_a_registered_third_task_runs_end_to_end(tmp_path, tiny_model_dir, next_or_not):
    from rec_eraser.tasks.prepare import load_instances, load_manifest
    from rec_eraser.workflows.registry import Registry

    run = rx.Run.prepare("ml-100k", task=NAME, out=tmp_path / "run", max_users=2)
    train = load_instances(run.path, "train")
    assert load_manifest(run.path)["templates"] == NextOrNotPrompts().templates()
    assert {z.label for z in train} == {0, 1} and all(z.prompt.startswith("Seen: ") for z in train)
    run.train("demo-tallrec", base_model=tiny_model_dir, measure_gap=False)
    figures = run.evaluate(limit=6)
    assert figures["task"] == NAME and 0.0 <= figures["auc"] <= 1.0

    trained = Registry(run.path).training_set("v0000")
    user = trained[0].user
    # an item in the history of one of the user's trained instances (and the target of none)
    targets = {s.item for z in trained if z.user == user for s in z.interactions[-1:]}
    item = next(i for z in trained if z.user == user for i in z.history_items if i not in targets)
    result = run.apply([rx.remove_interactions(user, [item])])
    assert result.version == "v0001" and result.modified > 0 and result.removed == 0
    after = Registry(run.path).training_set("v0001")
    assert len(after) == len(trained)
    assert all(item not in z.history_items and "Seen: " in z.prompt for z in after if z.user == user)

    with pytest.raises(
        EventError, match=f"correct_label needs the tallrec task; this run is {NAME} \\(it takes deletions only\\)"
    ):
        run.apply([rx.correct_label(user, item, "Yes")])
    result = run.apply([rx.delete_user(user)])
    assert result.version == "v0002" and result.removed == sum(z.user == user for z in after)
    assert all(z.user != user for z in Registry(run.path).training_set("v0002"))
