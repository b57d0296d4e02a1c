"""Events to edits: golden instance sets from the instances' provenance, and prompts rebuilt as prepare builds them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rec_eraser.data import load_dataset
from rec_eraser.tasks.prepare import build_instances, first_users, load_instances
from rec_eraser.tasks.rewrite import PromptContext
from rec_eraser.workflows import Event, EventError, RunIndex, plan_edits


def setup(run):
    train = load_instances(run, "train")
    ctx = PromptContext.of_run(run)
    index = RunIndex.build(
        train[0].task, [train, load_instances(run, "valid"), load_instances(run, "test")], dict(ctx.titles)
    )
    return train, ctx, index


def busiest_user(train):
    users = [z.user for z in train]
    return max(set(users), key=users.count)


def test_delete_user_removes_exactly_the_users_instances(tallrec_run):
    train, ctx, _ = setup(tallrec_run)
    user = busiest_user(train)
    plan = plan_edits([Event("e1", "delete_user", user)], train, ctx)
    assert set(plan.removed) == {z.id for z in train if z.user == user} and plan.modified == []
    assert plan.effects[0].removed == len(plan.removed) and plan.effects[0].modified == 0


@pytest.mark.parametrize("run_name", ["tallrec_run", "llara_run"])
def test_noisy_interaction_leaves_histories_and_removes_its_target_instance(request, run_name):
    train, ctx, _ = setup(request.getfixturevalue(run_name))
    user = busiest_user(train)
    mine = sorted((z for z in train if z.user == user), key=lambda z: z.position)
    item = mine[2].target_item  # the target of one instance and in the history of later ones
    plan = plan_edits([Event("e", "remove_interactions", user, items=(item,))], train, ctx)
    assert set(plan.removed) == {z.id for z in mine if z.target_item == item}
    assert set(plan.modified) == {z.id for z in mine if item in z.history_items and z.target_item != item}
    assert plan.modified, "the item should sit in later histories"
    for iid in plan.modified:
        old, new = plan.before[iid], plan.after[iid]
        assert new.history_items == tuple(i for i in old.history_items if i != item)
        assert new.response == old.response and new.target == old.target and new.candidates == old.candidates
        assert (
            f"{ctx.titles[item]}" not in new.prompt.split("Choose")[0]
        )  # LLaRA: the history part; TALLRec: whole text
        if new.task == "llara":
            assert new.prompt.count("[HistoryEmb]") == len(new.history_items)


def test_a_rebuilt_tallrec_prompt_is_the_prompt_prepare_builds_without_the_interaction(tallrec_run):
    """Golden: for a short history (no refill from older items) the edit equals re-preparing the data without it."""
    train, ctx, _ = setup(tallrec_run)
    user = busiest_user(train)
    mine = sorted((z for z in train if z.user == user), key=lambda z: z.position)
    dropped = mine[1].target  # an early interaction
    later = next(z for z in mine if z.position == 4)  # history of 4 < 10 items, holding the dropped one
    assert dropped.line in later.lines
    plan = plan_edits([Event("e", "remove_interactions", user, items=(dropped.item,))], train, ctx)
    dataset = first_users(load_dataset("ml-100k"), 6)
    rebuilt = build_instances(
        replace(dataset, interactions=tuple(x for x in dataset.interactions if x.line != dropped.line)), "tallrec"
    )
    golden = next(z for z in rebuilt if z.target.line == later.target.line)
    assert plan.after[later.id].prompt == golden.prompt and plan.after[later.id].response == golden.response
    assert plan.after[later.id].interactions == golden.interactions


def test_label_correction_flips_the_response_and_moves_the_item_between_liked_and_disliked(tallrec_run):
    train, ctx, _ = setup(tallrec_run)
    user = busiest_user(train)
    mine = sorted((z for z in train if z.user == user), key=lambda z: z.position)
    target = mine[1]
    new_label = "No" if target.label == 1 else "Yes"
    plan = plan_edits([Event("e", "correct_label", user, item=target.target_item, label=new_label)], train, ctx)
    assert plan.removed == []
    assert set(plan.modified) == {z.id for z in mine if target.target_item in (*z.history_items, z.target_item)}
    fixed = plan.after[target.id]
    assert fixed.response == (" Yes." if new_label == "Yes" else " No.") and fixed.label == (new_label == "Yes")
    title = f'"{ctx.titles[target.target_item]}"'
    later = plan.after[next(z.id for z in mine if target.target_item in z.history_items)]
    preference, unpreference = later.prompt.split("User Unpreference:")
    assert (title in preference) == (new_label == "Yes") and (title in unpreference.split("Whether")[0]) == (
        new_label == "No"
    )


def test_target_correction_replaces_the_answer_and_the_candidate(llara_run):
    train, ctx, index = setup(llara_run)
    user = busiest_user(train)
    z = next(x for x in train if x.user == user and x.position > 2)
    new_item = next(i for i in ctx.titles if i not in index.user_items[user])
    plan = plan_edits([Event("e", "correct_target", user, item=z.target_item, target=new_item)], train, ctx)
    fixed = plan.after[z.id]
    assert fixed.response == " " + ctx.titles[new_item] and fixed.target_item == new_item
    assert fixed.candidates == tuple(new_item if c == z.target_item else c for c in z.candidates)
    listed = (
        fixed.prompt.split("titles: ", 1)[1].rsplit(". Answer:", 1)[0].removeprefix("[CansEmb] ").split(", [CansEmb] ")
    )
    assert listed == [ctx.titles[c] for c in fixed.candidates]


def test_a_run_prepared_with_other_templates_is_not_rewritten(llara_run, tmp_path):
    import json
    import shutil

    from rec_eraser.tasks import TaskError

    old = shutil.copytree(llara_run, tmp_path / "old-layout")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["templates"].pop("user_emb")  # as runs prepared before the user token were
    (old / "manifest.json").write_text(json.dumps(manifest))
    train, ctx, index = setup(old)
    user = busiest_user(train)
    # deleting a user rebuilds nothing, so it still works
    assert plan_edits([Event("d", "delete_user", user)], train, ctx).removed
    z = next(x for x in train if x.user == user and x.position > 2)
    new_item = next(i for i in ctx.titles if i not in index.user_items[user])
    with pytest.raises(TaskError, match="other prompt templates"):
        plan_edits([Event("e", "correct_target", user, item=z.target_item, target=new_item)], train, ctx)


def test_events_on_one_instance_compose_into_one_edit(tallrec_run):
    train, ctx, _ = setup(tallrec_run)
    user = busiest_user(train)
    mine = [z for z in train if z.user == user]
    item = sorted(mine, key=lambda z: z.position)[2].target_item
    plan = plan_edits(
        [Event("a", "remove_interactions", user, items=(item,)), Event("b", "delete_user", user)], train, ctx
    )
    assert set(plan.removed) == {z.id for z in mine} and plan.modified == []
    assert plan.before == {z.id: z for z in mine}  # edits go from the trained form, not an intermediate one
    first, second = plan.effects
    assert first.removed + second.removed == len(mine) and second.modified == 0
    again = plan_edits(
        [Event("b", "delete_user", user), Event("a", "remove_interactions", user, items=(item,))], train, ctx
    )
    assert again.effects[1].removed == again.effects[1].modified == 0  # nothing left to touch


@pytest.mark.parametrize(
    "event, message",
    [
        (Event("e", "delete_user", "no-such-user"), "unknown user"),
        (Event("e", "remove_interactions", "USER", items=("no-such-item",)), "unknown item"),
        (Event("e", "remove_interactions", "USER", items=("OTHER",)), "has no interaction with item"),
        (Event("e", "correct_target", "USER", item="OWN", target="OTHER"), "needs the llara task"),
    ],
)
def test_events_that_do_not_fit_the_run_are_refused(tallrec_run, event, message):
    train, _, index = setup(tallrec_run)
    user = busiest_user(train)
    own = train[[z.user for z in train].index(user)].target_item
    other = next(i for i in index.items if i not in index.user_items[user])
    fields = {k: v for k, v in vars(event).items()}
    fields["user"] = user if fields["user"] == "USER" else fields["user"]
    fields["items"] = tuple(other if i == "OTHER" else i for i in fields["items"])
    fields["item"] = own if fields["item"] == "OWN" else fields["item"]
    fields["target"] = other if fields["target"] == "OTHER" else fields["target"]
    with pytest.raises(EventError, match=message):
        index.validate(Event(**fields))


def test_a_label_correction_that_keeps_the_class_changes_nothing(tallrec_run):
    train, ctx, _ = setup(tallrec_run)
    z = next(x for x in train if x.position > 1)
    plan = plan_edits(
        [Event("e", "correct_label", z.user, item=z.target_item, label="Yes" if z.label else "No")], train, ctx
    )
    assert plan.changed == [] and plan.effects[0].modified == 0
