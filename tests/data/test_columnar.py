"""The columnar reader of large .inter files against the exact line-by-line reader."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rec_eraser.data import atomic, load_dataset, read_atomic
from rec_eraser.data.atomic import read_atomic_columns
from rec_eraser.tasks.prepare import first_users

ROLES = {"user_id": "user", "item_id": "item"}
FLOATS = {"rating": "rating", "timestamp": "timestamp"}


def _no_exact_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the columnar reader hands the file to the line-by-line reader."""

    def refuse(path):
        raise AssertionError(f"{path} was read line by line")

    monkeypatch.setattr(atomic, "read_atomic", refuse)


def _same_as_exact(path: Path, columns: atomic.AtomicColumns) -> None:
    table = read_atomic(path)
    assert columns.fields == table.fields and columns.sha256 == table.sha256
    assert columns.lines.tolist() == list(table.lines)
    for name, role in ROLES.items():
        assert columns.tokens[name].to_pylist() == table.tokens(name, role)
    for name, role in FLOATS.items():
        assert columns.floats[name].tolist() == table.floats(name, role)


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole wheel not installed")
def test_ml100k_read_in_columns_equals_the_exact_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    from rec_eraser.data.dataset import recbole_dataset_dir

    path = recbole_dataset_dir("ml-100k") / "ml-100k.inter"
    with monkeypatch.context() as m:
        _no_exact_reader(m)
        columns = read_atomic_columns(path, ROLES, FLOATS)
    assert len(columns) == 100_000
    _same_as_exact(path, columns)


def test_blank_lines_and_a_missing_last_newline_keep_the_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.inter"
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\n1\t10\t4\t100\n\n\n2\t11\t3.5\t90\n2\t12\t1\t95",
        encoding="utf-8",
    )
    with monkeypatch.context() as m:
        _no_exact_reader(m)
        columns = read_atomic_columns(path, ROLES, FLOATS)
    assert columns.lines.tolist() == [3, 6, 7]
    _same_as_exact(path, columns)


@pytest.mark.parametrize(
    "record",
    [
        "1\t10\t 4 \t100",  # spaces around a number: Python's float reads it, Arrow's cast does not
        "1\t10\t4\t100\r",  # a \r line end
    ],
)
def test_what_arrow_leaves_is_read_exactly(tmp_path: Path, record: str) -> None:
    path = tmp_path / "x.inter"
    path.write_bytes(f"user_id:token\titem_id:token\trating:float\ttimestamp:float\n{record}\n2\t11\t3\t90\n".encode())
    columns = read_atomic_columns(path, ROLES, FLOATS)
    assert columns.floats["rating"].tolist() == [4.0, 3.0]
    _same_as_exact(path, columns)


def test_max_users_is_the_first_users_after_the_checks(ml_dir: Path) -> None:
    whole = load_dataset("ml-100k", root=ml_dir)
    for n in (1, 2, len(whole.users), len(whole.users) + 5):
        cut = load_dataset("ml-100k", root=ml_dir, max_users=n)
        assert cut.interactions == first_users(whole, n).interactions
        assert cut.files == whole.files and cut.titles == whole.titles


@pytest.mark.parametrize(
    "cells, message",
    [
        (b"1\t10\t4\t100\t\xff\xfe", "UTF-8"),  # bad bytes in a column no role reads: Arrow never decodes it
        (b"\x1c\t10\t4\t100\tx", "empty user value"),  # blank to str.strip(), not to Arrow's trim
    ],
)
def test_bad_input_in_any_column_gets_the_exact_readers_error(tmp_path: Path, cells: bytes, message: str) -> None:
    path = tmp_path / "x.inter"
    header = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\tnote:token_seq\n"
    path.write_bytes(header + cells + b"\n2\t11\t3\t90\ty\n")
    with pytest.raises(atomic.DatasetError, match=message):
        read_atomic(path).tokens("user_id", "user")
    with pytest.raises(atomic.DatasetError, match=message):
        read_atomic_columns(path, ROLES, FLOATS)
