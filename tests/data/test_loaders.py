"""Loaders of the three mappings on synthetic atomic files, and ml-100k as shipped in recbole."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rec_eraser.data import DatasetError, known_datasets, load_dataset, mapping_for
from tests.data.conftest import LASTFM_INTER, write_atomic


def test_known_mappings() -> None:
    assert {"ml-100k", "lastfm", "steam"} <= set(known_datasets())
    ml, fm, steam = mapping_for("ml-100k"), mapping_for("lastfm"), mapping_for("steam")
    assert (ml.user, ml.item, ml.rating, ml.timestamp, ml.title) == (
        "user_id",
        "item_id",
        "rating",
        "timestamp",
        "movie_title",
    )
    assert (fm.item, fm.rating, fm.timestamp, fm.title) == ("artist_id", None, None, "name")
    assert (steam.item, steam.item_file_key, steam.rating, steam.title) == ("product_id", "id", None, "app_name")
    assert (ml.noun, fm.noun, steam.noun) == ("movie", "artist", "game")
    assert (ml.verb_past, fm.verb_past, steam.verb_past) == ("watched", "listened to", "played")


def test_ml100k_format(ml_dir: Path) -> None:
    before = sorted(p.name for p in ml_dir.iterdir())
    data = load_dataset("ml-100k", root=ml_dir)
    assert sorted(p.name for p in ml_dir.iterdir()) == before  # the loader writes nothing
    assert (len(data.users), len(data.items), len(data.interactions)) == (3, 4, 7)
    first = data.interactions[0]
    assert (first.user, first.item, first.rating, first.timestamp, first.line) == ("1", "10", 4.0, 300.0, 2)
    assert data.title("10") == "Toy Story" and data.title("13") == "Get Shorty"
    assert data.mapping.name == "ml-100k" and data.mapping.liked_above == 3.0
    assert set(data.files) == {"ml-100k.inter", "ml-100k.item", "ml-100k.user"}


def test_root_may_be_the_parent_folder(ml_dir: Path) -> None:
    (ml_dir.parent / "ml-100k").mkdir()
    for f in ml_dir.iterdir():
        (ml_dir.parent / "ml-100k" / f.name).write_bytes(f.read_bytes())
    assert len(load_dataset("ml-100k", root=ml_dir.parent).interactions) == 7


def test_lastfm_format(lastfm_dir: Path) -> None:
    for data in (
        load_dataset("lastfm", root=lastfm_dir),
        load_dataset(lastfm_dir),
        load_dataset(lastfm_dir / "lastfm.inter"),
    ):
        assert (len(data.users), len(data.items), len(data.interactions)) == (2, 4, 5)
        assert all(x.rating is None and x.timestamp is None for x in data.interactions)
        assert [x.item for x in data.interactions] == ["51", "52", "53", "54", "51"]
        assert data.title("54") == "Hooverphonic"
        assert data.mapping.name == "lastfm"


def test_steam_format(steam_dir: Path) -> None:
    data = load_dataset("steam", root=steam_dir)
    assert (len(data.users), len(data.items), len(data.interactions)) == (2, 2, 4)
    assert all(x.rating is None for x in data.interactions)
    assert [x.timestamp for x in data.interactions if x.user == "0"] == [1514764800.0, 1483228800.0]
    assert data.title("35140") == "Batman: Arkham Asylum GOTY Edition"
    assert data.title("328100") == "Gunspell - Steam Edition"  # keyed by the .item file's `id` column


def test_steam_unknown_items_can_be_dropped(steam_dir: Path, tmp_path: Path) -> None:
    inter = steam_dir / "steam.inter"
    inter.write_text(inter.read_text() + "1\t1.0\t3\t999\t\t1420070500\tFalse\t1\t\t\n")
    with pytest.raises(DatasetError) as err:
        load_dataset("steam", root=steam_dir)
    assert (err.value.path, err.value.line, err.value.field) == (inter, 6, "product_id")
    custom = tmp_path / "steam-drop.toml"
    text = mapping_for("steam").path.read_text()
    custom.write_text(text.replace('unknown_items = "error"', 'unknown_items = "drop"'))
    data = load_dataset("steam", root=steam_dir, mapping=custom)
    assert len(data.interactions) == 4 and "999" not in data.items


def test_environment_folder(lastfm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REC_ERASER_DATA", str(lastfm_dir.parent))
    assert len(load_dataset("lastfm").interactions) == 5


def test_missing_user_dataset_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REC_ERASER_DATA", raising=False)
    with pytest.raises(DatasetError, match=r"steam\.inter.*root=FOLDER.*REC_ERASER_DATA"):
        load_dataset("steam")
    with pytest.raises(DatasetError, match=str(tmp_path / "lastfm.inter")):
        load_dataset("lastfm", root=tmp_path)


def test_new_dataset_is_a_mapping_file(tmp_path: Path) -> None:
    d = tmp_path / "shop"
    write_atomic(
        d / "shop.inter",
        ["uid:token", "sku:token", "stars:float", "ts:float"],
        [["u1", "s1", 5, 2], ["u1", "s2", 1, 1]],
    )
    with pytest.raises(DatasetError, match=r"no field mapping for 'shop'"):
        load_dataset(d)
    (d / "shop.toml").write_text(
        '[fields]\nuser = "uid"\nitem = "sku"\nrating = "stars"\ntimestamp = "ts"\n'
        '[prompt]\nnoun = "product"\nverb_past = "bought"\n'
    )
    data = load_dataset(d)
    assert [(x.item, x.rating, x.timestamp) for x in data.interactions] == [("s1", 5.0, 2.0), ("s2", 1.0, 1.0)]
    assert data.mapping.noun == "product" and data.title("s1") == "s1"  # no .item file: ids stand in


def test_folder_needs_one_inter_file(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.inter", LASTFM_INTER, [])
    write_atomic(tmp_path / "b.inter", LASTFM_INTER, [])
    with pytest.raises(DatasetError, match="exactly one"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="neither a known dataset"):
        load_dataset(tmp_path / "nowhere")


def test_recbole_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(DatasetError, match="pip install --no-deps recbole==1.2.1"):
        load_dataset("ml-100k")


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole wheel not installed")
def test_ml100k_shipped_in_recbole() -> None:
    data = load_dataset("ml-100k")
    assert (len(data.users), len(data.items), len(data.interactions)) == (943, 1682, 100000)
    assert len(data.titles) == 1682 and data.title("1") == "Toy Story"
    assert all(x.rating in (1.0, 2.0, 3.0, 4.0, 5.0) for x in data.interactions)
    assert data.root.parts[-2:] == ("dataset_example", "ml-100k")
