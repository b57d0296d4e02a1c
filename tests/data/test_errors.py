"""Bad input: one exception class whose message names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec_eraser.data import DatasetError, load_dataset, load_mapping, read_atomic
from tests.data.conftest import ML_INTER, ML_USER, write_atomic


def expect(path: Path, line: int, field: str, root: Path, match: str = "") -> None:
    """load_dataset("ml-100k", root) fails naming file, line and field in attributes and message."""
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset("ml-100k", root=root)
    e = err.value
    assert (e.path, e.line, e.field) == (path, line, field)
    assert str(path) in str(e) and f"line {line}" in str(e) and repr(field) in str(e)


def rewrite(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_header_cell_without_type(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.inter", 1, "user_id\titem_id:token\trating:float\ttimestamp:float")
    expect(ml_dir / "ml-100k.inter", 1, "user_id", ml_dir, "no ':type'")


def test_unknown_type(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.item", 1, "item_id:token\tmovie_title:text\trelease_year:token\tclass:token_seq")
    expect(ml_dir / "ml-100k.item", 1, "movie_title", ml_dir, "unknown type 'text'")


def test_missing_mapped_column(ml_dir: Path) -> None:
    write_atomic(ml_dir / "ml-100k.inter", ML_INTER[:3], [[1, 10, 4]])
    expect(ml_dir / "ml-100k.inter", 1, "timestamp", ml_dir, "no column 'timestamp'")


def test_missing_title_column(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.item", 1, "item_id:token\tname:token_seq\trelease_year:token\tclass:token_seq")
    expect(ml_dir / "ml-100k.item", 1, "movie_title", ml_dir, "mapped as title")


@pytest.mark.parametrize(("text", "field"), [("1\t10\t4", "timestamp"), ("1\t10\t4\t300\t7", "timestamp")])
def test_wrong_number_of_cells(ml_dir: Path, text: str, field: str) -> None:
    rewrite(ml_dir / "ml-100k.inter", 4, text)
    expect(ml_dir / "ml-100k.inter", 4, field, ml_dir, "cells, the header has 4")


def test_non_numeric_rating(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.inter", 3, "1\t11\tgood\t100")
    expect(ml_dir / "ml-100k.inter", 3, "rating", ml_dir, "'good' is not a number")


def test_non_numeric_timestamp(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.inter", 8, "3\t12\t4\t2020-01-01")
    expect(ml_dir / "ml-100k.inter", 8, "timestamp", ml_dir, "not a number")


def test_empty_user(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.inter", 5, "\t12\t3\t100")
    expect(ml_dir / "ml-100k.inter", 5, "user_id", ml_dir, "empty user")


def test_unknown_item(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.inter", 6, "2\t99\t1\t60")
    expect(ml_dir / "ml-100k.inter", 6, "item_id", ml_dir, "item '99' is not in ml-100k.item")


def test_user_not_in_user_file(ml_dir: Path) -> None:
    rewrite(ml_dir / "ml-100k.inter", 7, "4\t11\t5\t70")
    expect(ml_dir / "ml-100k.inter", 7, "user_id", ml_dir, "user '4' is not in ml-100k.user")


def test_user_with_empty_history(ml_dir: Path) -> None:
    write_atomic(
        ml_dir / "ml-100k.user",
        ML_USER,
        [[1, 24, "M", "x", 1], [2, 53, "F", "x", 2], [3, 23, "M", "x", 3], [5, 30, "F", "x", 5]],
    )
    expect(ml_dir / "ml-100k.user", 5, "user_id", ml_dir, "user '5' has an empty history")


def test_no_interactions(ml_dir: Path) -> None:
    write_atomic(ml_dir / "ml-100k.inter", ML_INTER, [])
    with pytest.raises(DatasetError, match="no interactions"):
        load_dataset("ml-100k", root=ml_dir)


def test_reader_blank_lines_bom_and_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.inter"
    path.write_bytes("\ufeffa:token\tb:float\r\nx\t1\r\n\r\ny\t2\r\n".encode())
    table = read_atomic(path)
    assert [f.name for f in table.fields] == ["a", "b"] and table.rows == (("x", "1"), ("y", "2"))
    assert table.lines == (2, 4)
    path.write_bytes(b"a:token\nx\n\xff\n")
    with pytest.raises(DatasetError, match=r"line 3: not UTF-8"):
        read_atomic(path)
    with pytest.raises(DatasetError, match="cannot read"):
        read_atomic(tmp_path / "missing.inter")


def test_bad_mapping_files(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[fields]\nuser = "u"\n')
    with pytest.raises(DatasetError, match=r"m\.toml, field 'item': \[fields\] needs item"):
        load_mapping(path)
    path.write_text('[fields]\nuser = "u"\nitem = "i"\nrate = "r"\n')
    with pytest.raises(DatasetError, match=r"field 'rate': unknown key in \[fields\]"):
        load_mapping(path)
    path.write_text("[fields\n")
    with pytest.raises(DatasetError, match="not valid TOML"):
        load_mapping(path)
