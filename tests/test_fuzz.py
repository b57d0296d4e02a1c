"""Malformed input never reaches a traceback and never writes: every case below (events lines,
recipes, run names, base-model folders) ends in exactly one error line, a non-zero exit code,
and a run folder left byte for byte as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rec_eraser.cli import app

runner = CliRunner()


def snapshot(run: Path) -> list[tuple[str, int, int]]:
    """Every file of the run with its size and modification time (the lock file is not data)."""
    return sorted(
        (str(p.relative_to(run)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in run.rglob("*")
        if p.is_file() and p.name != ".lock"
    )


def refused(args: list[str], run: Path) -> str:
    """Run the command; assert one error line, a non-zero exit and no write; return the line."""
    before = snapshot(run)
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code not in (0, 70) and len(lines) == 1, (result.exit_code, result.stderr)
    assert snapshot(run) == before
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tallrec_run, tiny_model_dir) -> Path:
    from rec_eraser.training.train import train_run
    from rec_eraser.workflows.registry import Registry

    from .workflows.test_unlearn import tiny_recipe

    run = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(tallrec_run, run)
    train_run(run, tiny_recipe(tiny_model_dir, max_train=8))
    with Registry(run).writing():  # the ledger exists from the start, so "no write" covers it too
        pass
    return run


USER = "1"
EVENT_LINES = [
    "not json",
    "[1, 2]",
    "42",
    "null",
    '"a string"',
    "{}",
    '{"type": "delete_user", "user": "1"}',
    '{"id": "", "type": "delete_user", "user": "1"}',
    '{"id": "   ", "type": "delete_user", "user": "1"}',
    json.dumps({"id": "x" * 201, "type": "delete_user", "user": "1"}),
    json.dumps({"id": "a\u2028b", "type": "delete_user", "user": "1"}),
    json.dumps({"id": "a\u0085b", "type": "delete_user", "user": "1"}),
    json.dumps({"id": "a\x00b", "type": "delete_user", "user": "1"}),
    json.dumps({"id": " lead", "type": "delete_user", "user": "1"}),
    '{"id": true, "type": "delete_user", "user": "1"}',
    '{"id": [1], "type": "delete_user", "user": "1"}',
    '{"id": {"a": 1}, "type": "delete_user", "user": "1"}',
    '{"id": "e", "type": "rename_user", "user": "1"}',
    '{"id": "e", "user": "1"}',
    '{"id": "e", "type": null, "user": "1"}',
    '{"id": "e", "type": "delete_user"}',
    '{"id": "e", "type": "delete_user", "user": ""}',
    '{"id": "e", "type": "delete_user", "user": null}',
    '{"id": "e", "type": "delete_user", "user": ["1"]}',
    '{"id": "e", "type": "delete_user", "user": false}',
    '{"id": "e", "type": "delete_user", "user": "no-such-user"}',
    '{"id": "e", "type": "delete_user", "user": "1", "extra": 1}',
    '{"id": "e", "type": "remove_interactions", "user": "1"}',
    '{"id": "e", "type": "remove_interactions", "user": "1", "items": []}',
    '{"id": "e", "type": "remove_interactions", "user": "1", "items": "50"}',
    '{"id": "e", "type": "remove_interactions", "user": "1", "items": [null]}',
    '{"id": "e", "type": "remove_interactions", "user": "1", "items": [["50"]]}',
    '{"id": "e", "type": "remove_interactions", "user": "1", "items": ["no-such-item"]}',
    '{"id": "e", "type": "correct_label", "user": "1", "item": "1"}',
    '{"id": "e", "type": "correct_label", "user": "1", "item": "1", "label": "maybe"}',
    '{"id": "e", "type": "correct_label", "user": "1", "label": "Yes"}',
    '{"id": "e", "type": "correct_label", "user": "1", "item": "no-such-item", "label": "Yes"}',
    '{"id": "e", "type": "correct_target", "user": "1", "item": "1", "target": "2"}',
    '{"id": "e", "type": "correct_target", "user": "1", "item": "1"}',
    "[" * 30_000 + "]" * 30_000,
    '{"a":' * 5_000 + "1" + "}" * 5_000,
    json.dumps({"id": "e", "type": "delete_user", "user": "1", "pad": "x" * 70_000}),
    '{"id": "e", "type": "delete_user", "user": "1"',
    "\ufeff\ufeff{}",
]


@pytest.mark.parametrize("line", EVENT_LINES, ids=range(len(EVENT_LINES)))
def test_a_malformed_events_line(run, tmp_path, line):
    events = tmp_path / "events.jsonl"
    events.write_text(line + "\n", encoding="utf-8")
    assert refused(["apply-events", str(run), str(events)], run).startswith("error: line 1")


@pytest.mark.parametrize(
    "content",
    [b"", b"\n\n  \n", b"\xff\xfe\x00garbage", b"\x80\x81\x82"],
    ids=["empty", "blank", "utf16-ish", "not-utf8"],
)
def test_an_events_file_that_is_not_json_lines(run, tmp_path, content):
    events = tmp_path / "events.jsonl"
    events.write_bytes(content)
    refused(["apply-events", str(run), str(events)], run)


RECIPES = [
    "this is not toml",
    "[bogus]\nx = 1\n",
    "[lora]\nfrobnicate = 1\n",
    "[lora]\nlr = 1e-3\n",
    "rank = 8\n",
    "[lora]\nrank = 2.5\n",
    "[lora]\nrank = 0\n",
    "[lora]\nrank = -1\n",
    '[lora]\nrank = "8"\n',
    "[lora]\nalpha = true\n",
    "[lora]\ndropout = 2\n",
    "[lora]\ndropout = -0.1\n",
    '[lora]\ntarget_modules = "q_proj"\n',
    "[lora]\ntarget_modules = []\n",
    "[lora]\ntarget_modules = [1, 2]\n",
    "[train]\nbatch_size = 8.0\n",
    "[train]\nepochs = true\n",
    "[train]\nepochs = 0\n",
    "[train]\nlr = 0\n",
    "[train]\nlr = 2\n",
    '[train]\nlr = "fast"\n',
    "[train]\nseed = -1\n",
    "[train]\nmax_length = 1\n",
    '[train]\nschedule = "weekly"\n',
    '[train]\nprecision = "float8"\n',
    "[train]\nwarmup = 1.5\n",
    "[train]\nmax_train = 0\n",
    "[train]\nholdout_users = -1\n",
    "[train]\nholdout_users = 1000000\n",
    '[model]\nprojector_init = "zeros"\n',
    "[model]\nbase_model = 3\n",
    "[model]\nsasrec_epochs = 0\n",
    "[train]\nbatch_size = 0\n",
    "[lora]\nalpha = 0\n",
    "[train]\nprojector_lr = 5\n",
    '[train]\nmax_length = "long"\n',
    'extends = "no-such-base"\n',
    "extends = 7\n",
    'extends = "self"\n',
]


@pytest.mark.parametrize("text", RECIPES, ids=range(len(RECIPES)))
def test_a_malformed_recipe(run, tmp_path, text):
    recipe = tmp_path / "self.toml"
    recipe.write_text(text)
    fresh = shutil.copytree(run, tmp_path / "fresh", ignore=shutil.ignore_patterns("v0*", "ledger.jsonl"))
    refused(["train", str(fresh), "--recipe", str(recipe), "--no-measure-gap"], fresh)


@pytest.mark.parametrize(
    "name", ["no-such-run", "", "../../..", "x" * 300, "adapters/nothing", "manifest.json"], ids=range(6)
)
def test_a_run_that_does_not_exist(run, name, monkeypatch):
    monkeypatch.chdir(run)  # "manifest.json" is a file here, not a run
    refused(["adapters", "list", name], run)
    refused(["forget-user", name, "--user", USER], run)


def _model_folder(tmp_path: Path, tiny_model_dir: Path, kind: str) -> Path:
    folder = tmp_path / "model"
    if kind == "missing":
        return folder
    if kind == "a file":
        folder.write_text("not a folder")
        return folder
    folder.mkdir()
    if kind == "garbage config":
        (folder / "config.json").write_text("{not json")
    elif kind == "list config":
        (folder / "config.json").write_text("[1, 2]")
    elif kind == "unknown model type":
        (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    elif kind == "no weights":
        for p in tiny_model_dir.iterdir():
            if p.suffix != ".safetensors":
                shutil.copy(p, folder / p.name)
    elif kind == "damaged weights":
        for p in tiny_model_dir.iterdir():
            shutil.copy(p, folder / p.name)
        (weights,) = folder.glob("*.safetensors")
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    return folder


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "a file",
        "empty",
        "garbage config",
        "list config",
        "unknown model type",
        "no weights",
        "damaged weights",
    ],
)
def test_a_broken_base_model_folder(run, tmp_path, tiny_model_dir, kind):
    model = _model_folder(tmp_path, tiny_model_dir, kind)
    fresh = shutil.copytree(run, tmp_path / "fresh", ignore=shutil.ignore_patterns("v0*", "ledger.jsonl"))
    refused(["train", str(fresh), "--base-model", str(model), "--no-measure-gap"], fresh)
