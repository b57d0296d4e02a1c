"""Provenance: every instance lists the interactions (lines) it was built from; JSON round trip."""

from __future__ import annotations

import json

from rec_eraser.data import Dataset
from rec_eraser.tasks import Instance, Source, build_llara, build_tallrec

# instance position -> .inter lines of its history then target (see conftest)
LINES = {
    ("1", 1): [4, 2],
    ("1", 2): [4, 2, 5],
    ("1", 3): [4, 2, 5, 7],
    ("1", 4): [4, 2, 5, 7, 8],
    ("2", 1): [3, 6],
    ("2", 2): [3, 6, 10],
}


def test_instances_list_their_interaction_lines(small: Dataset) -> None:
    for build in (build_llara(small, negatives=3), build_tallrec(small)):
        assert {(i.user, i.position): list(i.lines) for i in build} == LINES
    inst = build_tallrec(small)[2]
    assert inst.interactions == (
        Source("1", 50.0, 4, 4.0),
        Source("3", 100.0, 2, 5.0),
        Source("4", 200.0, 5, 2.0),
        Source("2", 200.0, 7, 3.0),
    )
    assert inst.target == Source("2", 200.0, 7, 3.0)


def test_touches_finds_instances_of_a_user_or_an_interaction(small: Dataset) -> None:
    out = build_llara(small, negatives=3)
    assert [i.id for i in out if i.touches(user="2")] == ["llara-2-1", "llara-2-2"]
    # line 5 is the target of llara-1-2, then in the history of the next two
    assert [i.id for i in out if i.touches(lines={5})] == ["llara-1-2", "llara-1-3", "llara-1-4"]
    assert [i.id for i in out if i.touches(lines={9})] == []  # user 3's only interaction builds nothing


def test_json_round_trip(small: Dataset) -> None:
    for inst in [*build_llara(small, negatives=3), *build_tallrec(small)]:
        text = json.dumps(inst.to_dict())
        back = Instance.from_dict(json.loads(text))
        assert back == inst
    d = build_llara(small, negatives=3)[0].to_dict()
    assert list(d) == [
        "id",
        "task",
        "split",
        "user",
        "position",
        "prompt",
        "response",
        "interactions",
        "history_items",
        "target_item",
        "candidates",
        "label",
    ]
    assert d["interactions"][0] == {"item": "1", "timestamp": 50.0, "line": 4, "rating": 4.0}
