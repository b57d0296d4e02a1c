"""Small synthetic RecBole atomic files, in the formats of RecBole's ml-100k, LastFM and Steam files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ML_INTER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
ML_ITEM = ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]
ML_USER = ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"]
LASTFM_INTER = ["user_id:token", "artist_id:token", "weight:float", "tag_value:token_seq"]
LASTFM_ITEM = ["artist_id:token", "name:token", "url:token", "picture_url:token"]
STEAM_INTER = [
    "user_id:token",
    "play_hours:float",
    "products:token",
    "product_id:token",
    "page_order:float",
    "timestamp:float",
    "early_access:token",
    "page:float",
    "found_funny:token",
    "compensation:token",
]
STEAM_ITEM = [
    "app_name:token",
    "developer:token",
    "early_access:token",
    "genres:token_seq",
    "id:token",
    "metascore:float",
    "price:float",
    "publisher:token",
    "timestamp:float",
    "sentiment:token",
    "specs:token_seq",
    "tags:token_seq",
    "title:token",
]

Writer = Callable[[Path, Sequence[str], Sequence[Sequence[object]]], Path]


def write_atomic(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write an atomic file: tab-separated, ``name:type`` header, one record a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def write() -> Writer:
    return write_atomic


@pytest.fixture
def ml_dir(tmp_path: Path) -> Path:
    """ml-100k-format files: 3 users, 4 movies, 7 ratings (line numbers: header 1, records 2..8)."""
    d = tmp_path / "ml"
    write_atomic(
        d / "ml-100k.inter",
        ML_INTER,
        [
            [1, 10, 4, 300],
            [1, 11, 2, 100],
            [2, 10, 5, 50],
            [1, 12, 3, 100],
            [2, 13, 1, 60],
            [3, 11, 5, 70],
            [3, 12, 4, 80],
        ],
    )
    write_atomic(
        d / "ml-100k.item",
        ML_ITEM,
        [
            [10, "Toy Story", 1995, "Animation Children's Comedy"],
            [11, "GoldenEye", 1995, "Action"],
            [12, "Four Rooms", 1995, "Thriller"],
            [13, "Get Shorty", 1995, "Comedy"],
        ],
    )
    write_atomic(
        d / "ml-100k.user",
        ML_USER,
        [[1, 24, "M", "technician", 85711], [2, 53, "F", "other", 94043], [3, 23, "M", "writer", 32067]],
    )
    return d


@pytest.fixture
def lastfm_dir(tmp_path: Path) -> Path:
    """lastfm-format files (no timestamp, weight = listening count)."""
    d = tmp_path / "lastfm"
    write_atomic(
        d / "lastfm.inter",
        LASTFM_INTER,
        [
            [2, 51, 13883, "rock indie"],
            [2, 52, 11690, ""],
            [3, 53, 228, "pop"],
            [2, 54, 3735, "80s"],
            [3, 51, 1, ""],
        ],
    )
    write_atomic(
        d / "lastfm.item",
        LASTFM_ITEM,
        [
            [51, "Duran Duran", "http://www.last.fm/music/Duran+Duran", "http://x/1.jpg"],
            [52, "Morcheeba", "http://www.last.fm/music/Morcheeba", "http://x/2.jpg"],
            [53, "Air", "http://www.last.fm/music/Air", "http://x/3.jpg"],
            [54, "Hooverphonic", "http://www.last.fm/music/Hooverphonic", "http://x/4.jpg"],
        ],
    )
    return d


def steam_item(game_id: object, name: str) -> list[object]:
    return [
        name,
        "Dev",
        "False",
        "Action Indie",
        game_id,
        "",
        4.99,
        "Pub",
        1514764800,
        "Positive",
        "Single-player",
        "Action",
        name,
    ]


@pytest.fixture
def steam_dir(tmp_path: Path) -> Path:
    """steam-format files (no rating; the .item key column is `id`)."""
    d = tmp_path / "steam"
    write_atomic(
        d / "steam.inter",
        STEAM_INTER,
        [
            [0, 0.1, 216, 35140, "", 1514764800, "False", 1, "", ""],
            [1, 12.5, 3, 328100, 2, 1420070400, "False", 1, 1, ""],
            [0, 2.2, 216, 328100, "", 1483228800, "True", 1, "", "Product received for free"],
            [1, 40.0, 3, 35140, "", 1420070400, "False", 2, "", ""],
        ],
    )
    write_atomic(
        d / "steam.item",
        STEAM_ITEM,
        [
            steam_item(35140, "Batman: Arkham Asylum GOTY Edition"),
            steam_item(328100, "Gunspell - Steam Edition"),
            steam_item("", "Game without id"),
        ],
    )
    return d
