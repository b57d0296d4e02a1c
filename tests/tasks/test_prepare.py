"""prepare(): the run folder, its manifest and hash, refusal to overwrite, atomicity, load_instances."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from pathlib import Path

import pytest

from rec_eraser.data import load_dataset
from rec_eraser.tasks import (
    TaskError,
    build_instances,
    build_llara,
    load_instances,
    load_manifest,
    load_titles,
    prepare,
)

prepare_module = importlib.import_module("rec_eraser.tasks.prepare")  # the package's `prepare` is the function


def test_writes_the_run_folder(small_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    summary = prepare(small_dir, "llara", run, seed=3, negatives=4)
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        "data/items.json",
        "data/test.jsonl",
        "data/train.jsonl",
        "data/valid.jsonl",
        "manifest.json",
    ]
    digest = hashlib.sha256()
    for split in ("train", "valid", "test"):
        digest.update((run / "data" / f"{split}.jsonl").read_bytes())
    manifest = load_manifest(run)
    assert summary["data_hash"] == manifest["data_hash"] == digest.hexdigest()
    counts = {"users": 35, "items": 40, "interactions": 41, "train": 2, "valid": 2, "test": 2}
    assert {k: summary[k] for k in counts} == counts == manifest["counts"]
    assert (manifest["task"], manifest["seed"], manifest["negatives"], manifest["max_history"]) == ("llara", 3, 4, 10)
    assert manifest["mapping"]["path"].endswith("datasets/ml-100k.toml")  # the folder's files are named ml-100k
    assert manifest["mapping"]["text"] == Path(manifest["mapping"]["path"]).read_text(encoding="utf-8")
    assert manifest["mapping"]["sha256"] == hashlib.sha256(manifest["mapping"]["text"].encode()).hexdigest()
    assert manifest["dataset"]["name"] == "ml-100k" and "ml-100k.inter" in manifest["dataset"]["files"]
    assert manifest["templates"]["history_emb"] == "[HistoryEmb]"
    built = build_llara(load_dataset(small_dir), seed=3, negatives=4)
    assert [*load_instances(run, "train"), *load_instances(run, "valid"), *load_instances(run, "test")] == sorted(
        built, key=lambda i: ("train", "valid", "test").index(i.split)
    )
    assert load_titles(run)["3"] == "The Usual Suspects"
    assert not [p for p in tmp_path.joinpath("runs").iterdir() if p.name != "r1"]  # no staging folder left


def test_same_inputs_same_hash_and_seed_matters(small_dir: Path, tmp_path: Path) -> None:
    a = prepare(small_dir, "llara", tmp_path / "a", seed=0, negatives=4)["data_hash"]
    b = prepare(small_dir, "llara", tmp_path / "b", seed=0, negatives=4)["data_hash"]
    c = prepare(small_dir, "llara", tmp_path / "c", seed=1, negatives=4)["data_hash"]
    assert a == b != c


def test_tallrec_run(small_dir: Path, tmp_path: Path) -> None:
    summary = prepare(small_dir, "tallrec", tmp_path / "t")
    manifest = load_manifest(tmp_path / "t")
    assert (summary["train"], manifest["negatives"], manifest["liked_above"]) == (2, None, 3.0)
    assert [i.label for i in load_instances(tmp_path / "t", "test")] == [1, 1]


def test_refuses_a_non_empty_out_dir(small_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        prepare(small_dir, "llara", run, negatives=4)
    assert [p.name for p in run.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare(small_dir, "llara", empty, negatives=4)["train"] == 2  # an empty folder is fine


def test_leaves_nothing_behind_on_failure(
    small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lastfm_dir: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def broken_rename(src: object, dst: object) -> None:
        raise OSError("disk full")

    import rec_eraser.files as files_module  # where every atomic rename happens

    monkeypatch.setattr(files_module.os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk full"):
        prepare(small_dir, "llara", out / "run", negatives=4)
    monkeypatch.undo()
    with pytest.raises(TaskError, match="explicit ratings"):
        prepare(lastfm_dir, "tallrec", out / "run")
    with pytest.raises(TaskError, match="eligible as negatives"):
        prepare(small_dir, "llara", out / "run", negatives=35)
    with pytest.raises(TaskError, match="unknown task"):
        prepare(small_dir, "sasrec", out / "run")
    assert list(out.iterdir()) == []


def test_max_users_keeps_the_first_users(small_dir: Path, tmp_path: Path) -> None:
    summary = prepare(small_dir, "tallrec", tmp_path / "run", max_users=1)
    assert (summary["users"], summary["interactions"], summary["train"], summary["test"]) == (1, 5, 2, 1)
    assert {i.user for i in load_instances(tmp_path / "run", "train")} == {"1"}
    with pytest.raises(TaskError, match="max_users"):
        prepare(small_dir, "tallrec", tmp_path / "bad", max_users=0)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="unknown split"):
        load_instances(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="prepare"):
        load_instances(tmp_path, "train")
    with pytest.raises(TaskError, match="unknown task"):
        build_instances(None, "x")  # type: ignore[arg-type]


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole wheel not installed")
@pytest.mark.parametrize("task", ["llara", "tallrec"])
def test_real_ml100k_first_20_users(tmp_path: Path, task: str) -> None:
    summary = prepare("ml-100k", task, tmp_path / task, max_users=20)
    assert (summary["users"], summary["valid"], summary["test"]) == (20, 20, 20)
    assert summary["train"] == summary["interactions"] - 3 * 20  # every user has >= 20 ratings
    test = load_instances(tmp_path / task, "test")
    assert len({i.user for i in test}) == 20 and all(len(i.history_items) == 10 for i in test)
    assert json.loads((tmp_path / task / "manifest.json").read_text())["dataset"]["name"] == "ml-100k"
    if task == "llara":
        assert all(len(i.candidates or ()) == 21 for i in test)
