"""A small ml-100k-format dataset whose instances are known by hand.

Users 109..139 have one interaction each (items 9..39; no instance): they put items 9..39 in
the pool of negatives (the interacted items). Item 40, interacted by user 140, has the same
title as item 1 ("Toy Story").

User 1's sequence (by timestamp; lines 5 and 7 tie at t=200 and keep file order):
item 1 (line 4, rating 4), 3 (line 2, 5), 4 (line 5, 2), 2 (line 7, 3), 6 (line 8, 5).
User 2's: 2 (line 3, 2), 5 (line 6, 4), 8 (line 10, 5). User 3 has one interaction (no instance).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rec_eraser.data import Dataset, load_dataset
from tests.data.conftest import ML_INTER, ML_ITEM, lastfm_dir, write_atomic  # noqa: F401 (a fixture)

TITLES = {
    1: "Toy Story",
    2: "GoldenEye",
    3: "Usual Suspects, The",
    4: "Four Rooms",
    5: "Get Shorty",
    6: "Copycat",
    7: "Twelve Monkeys",
    8: "Babe",
    **{i: f"Movie {i}" for i in range(9, 40)},
    40: "Toy Story",
}
INTER = [  # user, item, rating, timestamp (line = index + 2)
    [1, 3, 5, 100],
    [2, 2, 2, 50],
    [1, 1, 4, 50],
    [1, 4, 2, 200],
    [2, 5, 4, 60],
    [1, 2, 3, 200],
    [1, 6, 5, 300],
    [3, 7, 1, 10],
    [2, 8, 5, 70],
] + [[100 + i, i, 3, 1] for i in range(9, 41)]


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    d = tmp_path / "small"
    write_atomic(d / "ml-100k.inter", ML_INTER, INTER)
    write_atomic(d / "ml-100k.item", ML_ITEM, [[i, t, 1995, "Drama"] for i, t in TITLES.items()])
    return d


@pytest.fixture
def small(small_dir: Path) -> Dataset:
    return load_dataset(small_dir)
