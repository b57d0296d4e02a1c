"""LLaRA instances: prompts, seeded candidates, history windows."""

from __future__ import annotations

import pytest

from rec_eraser.data import Dataset, chronological, steps
from rec_eraser.tasks import (
    CANS_EMB,
    HISTORY_EMB,
    Instance,
    TaskError,
    build_llara,
    draw_candidates,
    item_titles,
    llara_instance,
)


def by_id(dataset: Dataset, **kw: int) -> dict[str, Instance]:
    return {i.id: i for i in build_llara(dataset, **kw)}


def test_instances_and_golden_prompt(small: Dataset) -> None:
    out = build_llara(small, negatives=2)
    assert [(i.id, i.split, i.history_items, i.target_item) for i in out] == [
        ("llara-1-1", "train", ("1",), "3"),
        ("llara-1-2", "train", ("1", "3"), "4"),
        ("llara-1-3", "valid", ("1", "3", "4"), "2"),
        ("llara-1-4", "test", ("1", "3", "4", "2"), "6"),
        ("llara-2-1", "valid", ("2",), "5"),
        ("llara-2-2", "test", ("2", "5"), "8"),
    ]
    step = next(s for s in steps(chronological(small.interactions)) if (s.user, s.position) == ("1", 2))
    inst = llara_instance(step, ("9", "4", "40"), item_titles(small), small.mapping)
    assert inst.prompt == (
        "This user has watched [HistoryEmb] Toy Story, [HistoryEmb] The Usual Suspects in the previous. Please "
        "predict the next movie this user will watch. Choose the answer from the following 3 movie titles: "
        "[CansEmb] Movie 9, [CansEmb] Four Rooms, [CansEmb] Toy Story. Answer: [UserEmb]"
    )
    assert inst.response == " Four Rooms" and inst.candidates == ("9", "4", "40")
    with pytest.raises(TaskError, match="not among its candidates"):
        llara_instance(step, ("9", "40"), item_titles(small), small.mapping)


@pytest.mark.parametrize("negatives", [0, 3, 20])
def test_candidates_are_target_plus_negatives(small: Dataset, negatives: int) -> None:
    titles = item_titles(small)
    user_items = {u: {x.item for x in seq} for u, seq in chronological(small.interactions).items()}
    for inst in build_llara(small, negatives=negatives):
        cands = inst.candidates
        assert cands is not None and len(cands) == negatives + 1 and inst.target_item in cands
        negs = [c for c in cands if c != inst.target_item]
        assert not set(negs) & user_items[inst.user]  # no item of the user (history or later)
        assert "40" not in negs or inst.user != "1"  # same title as user 1's Toy Story
        assert len({titles[c] for c in cands}) == len(cands)  # titles tell candidates apart
        assert inst.prompt.count(CANS_EMB) == negatives + 1
        assert inst.prompt.count(HISTORY_EMB) == len(inst.history_items)
        assert f"from the following {negatives + 1} movie titles: " in inst.prompt
        assert inst.prompt.endswith(". Answer: [UserEmb]") and inst.response == " " + titles[inst.target_item]


def test_candidates_are_seeded(small: Dataset) -> None:
    first, again = by_id(small, seed=0), by_id(small, seed=0)
    assert first == again
    other = by_id(small, seed=1)
    assert any(first[k].candidates != other[k].candidates for k in first)
    # the target's place is shuffled too
    assert len({i.candidates.index(i.target_item) for i in build_llara(small, seed=0)}) > 1


def test_history_window(small: Dataset) -> None:
    last = build_llara(small, max_history=2, negatives=2)[3]
    assert last.id == "llara-1-4" and last.history_items == ("4", "2")
    assert [s.line for s in last.interactions] == [5, 7, 8]


def test_too_few_negatives_is_a_clear_error(small: Dataset) -> None:
    with pytest.raises(TaskError, match="eligible as negatives"):
        build_llara(small, negatives=35)
    with pytest.raises(TaskError, match="negatives must be"):
        draw_candidates("x", "1", ["2"], {"1": "a", "2": "b"}, negatives=-1)
    with pytest.raises(TaskError, match="seed"):
        build_llara(small, seed=-1)
