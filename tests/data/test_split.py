"""Chronological split: ordering, leave-last-out, history windows (golden expectations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec_eraser.data import Interaction, chronological, leave_last_out, load_dataset, steps

# (user, item, timestamp, line): a's items i2 and i4 tie at t=10 and keep file order (i2 first)
RAW = [
    ("a", "i1", 30),
    ("a", "i2", 10),
    ("b", "i3", 5),
    ("a", "i4", 10),
    ("a", "i5", 40),
    ("b", "i6", 1),
    ("c", "i7", 1),
]
LOG = [Interaction(u, i, None, float(t), line) for line, (u, i, t) in enumerate(RAW, start=2)]


def view(max_history: int = 10, min_history: int = 1) -> list[tuple[str, int, list[str], str, str]]:
    return [
        (s.user, s.position, [h.item for h in s.history], s.target.item, s.split)
        for s in steps(chronological(LOG), max_history=max_history, min_history=min_history)
    ]


def test_chronological_order_is_stable_on_ties() -> None:
    seqs = chronological(reversed(LOG))  # input order does not matter: file order (line) breaks ties
    assert list(seqs) == ["a", "b", "c"]
    assert {u: [x.item for x in s] for u, s in seqs.items()} == {
        "a": ["i2", "i4", "i1", "i5"],
        "b": ["i6", "i3"],
        "c": ["i7"],
    }


def test_leave_last_out() -> None:
    assert [leave_last_out(n) for n in range(5)] == [
        [],
        ["test"],
        ["valid", "test"],
        ["train", "valid", "test"],
        ["train", "train", "valid", "test"],
    ]


def test_steps_golden() -> None:
    assert view(max_history=2) == [
        ("a", 1, ["i2"], "i4", "train"),
        ("a", 2, ["i2", "i4"], "i1", "valid"),
        ("a", 3, ["i4", "i1"], "i5", "test"),
        ("b", 1, ["i6"], "i3", "test"),
    ]
    assert view()[2] == ("a", 3, ["i2", "i4", "i1"], "i5", "test")
    assert [s[:2] + s[3:] for s in view(min_history=0) if s[2] == []] == [
        ("a", 0, "i2", "train"),
        ("b", 0, "i6", "valid"),
        ("c", 0, "i7", "test"),
    ]


def test_steps_rejects_bad_windows() -> None:
    with pytest.raises(ValueError):
        list(steps({}, max_history=0))
    with pytest.raises(ValueError):
        list(steps({}, max_history=2, min_history=3))


def test_without_timestamps_file_order_counts(lastfm_dir: Path) -> None:
    seqs = chronological(load_dataset(lastfm_dir).interactions)
    assert {u: [x.item for x in s] for u, s in seqs.items()} == {"2": ["51", "52", "54"], "3": ["53", "51"]}
    assert [(s.user, s.target.item, s.split) for s in steps(seqs)] == [
        ("2", "52", "valid"),
        ("2", "54", "test"),
        ("3", "51", "test"),
    ]


def test_history_is_at_most_ten_by_default() -> None:
    log = [Interaction("u", f"i{k}", None, float(k), k + 2) for k in range(15)]
    last = list(steps(chronological(log)))[-1]
    assert last.split == "test" and [h.item for h in last.history] == [f"i{k}" for k in range(4, 14)]
