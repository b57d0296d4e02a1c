"""Atomic, durable writes: a failure leaves the old state and no temporary sibling; a success
is flushed to disk before it is published."""

from __future__ import annotations

import os

import pytest

from rec_eraser import files
from rec_eraser.files import write_file_atomically, write_folder_atomically


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "state.json"
    write_file_atomically(path, lambda p: p.write_text("old"))
    assert path.read_text() == "old" and oct(path.stat().st_mode & 0o777) == oct(0o644)

    def fails(p):
        p.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        write_file_atomically(path, fails)
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["state.json"]
    write_file_atomically(path, lambda p: p.write_text("new"), mode=0o600)
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "v0001"

    def fails(staging):
        (staging / "a.bin").write_bytes(b"1")
        raise RuntimeError("killed mid-fill")

    with pytest.raises(RuntimeError, match="killed"):
        write_folder_atomically(target, fails)
    assert list(tmp_path.iterdir()) == []

    def refuse():
        raise FileExistsError("taken meanwhile")

    with pytest.raises(FileExistsError, match="taken meanwhile"):
        write_folder_atomically(target, lambda s: (s / "a.bin").write_bytes(b"1"), check=refuse)
    assert list(tmp_path.iterdir()) == []

    def fill(staging):
        (staging / "a.bin").write_bytes(b"1")
        (staging / "data").mkdir()
        (staging / "data" / "b.json").write_text("{}")

    write_folder_atomically(target, fill)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["a.bin", "data", "data/b.json"]
    with pytest.raises(OSError):  # an existing, non-empty folder is never replaced
        write_folder_atomically(target, fill)
    assert [p.name for p in tmp_path.iterdir()] == ["v0001"]


def test_everything_is_flushed_before_the_rename_publishes_it(tmp_path, monkeypatch):
    flushed: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def rename(src, dst):
        flushed.append(f"rename {os.path.basename(dst)}")
        real_rename(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "rename", rename)

    def fill(staging):
        (staging / "data").mkdir()
        (staging / "data" / "b.json").write_text("{}")

    write_folder_atomically(tmp_path / "run", fill)
    published = flushed.index("rename run")
    before = [os.path.basename(p) for p in flushed[:published]]
    assert "b.json" in before and "data" in before  # the file and its folder's entries
    assert flushed[published + 1] == str(tmp_path)  # then the rename itself
