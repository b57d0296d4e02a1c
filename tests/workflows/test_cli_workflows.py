"""The workflow commands: --json contracts, one-line errors, exit codes, nothing written on failure."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from rec_eraser.cli import app
from rec_eraser.workflows import Registry

from .test_unlearn import a_trained_user

runner = CliRunner()
FAST = ["--sample-size", "16"]


def test_forget_user_with_cg_defers_its_preconditioner(run):
    # a large damping keeps this cheap (GGN products over a 49k-token vocabulary): CG is done
    # before a preconditioner could pay, so none is built; tests/core checks the case that builds
    args = [
        "forget-user",
        str(run),
        "--user",
        a_trained_user(run),
        "--solver",
        "cg",
        "--sample-size",
        "4",
        "--damping",
        "1",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    solver = json.loads(result.stdout)["solver"]
    assert solver["method"] == "cg" and solver["preconditioner"] == "auto" and solver["curvature"] == "ggn"
    assert solver["converged"] and solver["relative_residual"] <= solver["config"]["tol"]
    assert (
        solver["preconditioner_built_at"] is None and solver["gradient_passes"] < 16
    )  # a build costs 16 passes or more


def one_line_error(result, text: str) -> None:
    """A non-zero exit and exactly one error line (progress messages may precede it on stderr)."""
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and text in lines[0], result.stderr


def test_forget_user_json_then_adapters_list_show_diff_rollback(run):
    user = a_trained_user(run)
    result = runner.invoke(app, ["forget-user", str(run), "--user", user, "--json", *FAST])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["version"] == "v0001" and data["parent"] == "v0000" and data["removed"] > 0
    assert data["applied"] == [
        {
            "id": f"cli:delete_user:{user}",
            "type": "delete_user",
            "user": user,
            "removed": data["removed"],
            "modified": 0,
        }
    ]
    assert set(data["solver"]) >= {"method", "hvps", "relative_residual", "seconds"}

    again = runner.invoke(app, ["forget-user", str(run), "--user", user, "--json", *FAST])
    assert again.exit_code == 0 and json.loads(again.stdout)["version"] is None  # idempotent

    listed = json.loads(runner.invoke(app, ["adapters", "list", str(run), "--json"]).stdout)
    assert [(v["version"], v["kind"], v["current"]) for v in listed["versions"]] == [
        ("v0000", "trained", False),
        ("v0001", "unlearned", True),
    ]
    shown = json.loads(runner.invoke(app, ["adapters", "show", str(run), "v0001", "--json"]).stdout)
    assert shown["events"][0]["id"] == f"cli:delete_user:{user}" and "hashes" in shown
    diff = json.loads(runner.invoke(app, ["adapters", "diff", str(run), "v0000", "v0001", "--json"]).stdout)
    assert diff["events_only_in_b"] == [f"cli:delete_user:{user}"] and diff["parameter_distance"] > 0
    back = runner.invoke(app, ["adapters", "rollback", str(run), "v0000", "--json"])
    assert back.exit_code == 0 and json.loads(back.stdout)["undone_events"] == [f"cli:delete_user:{user}"]
    assert Registry(run).current() == "v0002"


def test_forget_interactions_and_correct_label(run):
    registry = Registry(run)
    user = a_trained_user(run)
    z = max((x for x in registry.training_set("v0000") if x.user == user), key=lambda x: len(x.history_items))
    result = runner.invoke(
        app, ["forget-interactions", str(run), "--user", user, "--item", z.history_items[0], "--json", *FAST]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["modified"] >= 1
    fixed = runner.invoke(
        app,
        [
            "correct",
            str(run),
            "--user",
            user,
            "--item",
            z.target_item,
            "--label",
            "No" if z.label else "Yes",
            "--json",
            *FAST,
        ],
    )
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["version"] == "v0002"
    wrong_task = runner.invoke(
        app, ["correct", str(run), "--user", user, "--item", z.target_item, "--target", "1", *FAST]
    )
    assert (
        wrong_task.exit_code == 1
        and "needs the llara task" in wrong_task.stderr
        and registry.versions() == ["v0000", "v0001", "v0002"]
    )


@pytest.mark.parametrize(
    "args, text",
    [
        (["forget-user", "RUN", "--user", "no-such-user"], "unknown user 'no-such-user'"),
        (["forget-user", "/no/such/run", "--user", "1"], "no run folder"),
        (["forget-user", "RUN", "--user", "1", "--solver", "newton"], "unknown solver method"),
        (["correct", "RUN", "--user", "1", "--item", "2"], "exactly one of --label"),
        (["apply-events", "RUN", "/no/such/events.jsonl"], "no such events file"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(run, args, text):
    result = runner.invoke(app, [str(run) if a == "RUN" else a for a in args])
    one_line_error(result, text)
    assert Registry(run).versions() == ["v0000"]


def test_apply_events_reports_bad_lines_applies_good_ones_and_exits_nonzero(run, tmp_path):
    user = a_trained_user(run)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                json.dumps({"id": "e1", "type": "delete_user", "user": user}),
                "this is not json",
                json.dumps({"id": "e3", "type": "delete_user", "user": "no-such-user"}),
                json.dumps({"id": "e4", "type": "rename_user", "user": user}),
            ]
        )
        + "\n"
    )
    result = runner.invoke(app, ["apply-events", str(run), str(events), "--json", *FAST])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["version"] == "v0001"
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert [line.split(":")[1].strip() for line in lines] == ["line 2", "line 3", "line 4"], lines
    again = runner.invoke(app, ["apply-events", str(run), str(events), "--skip-invalid", "--json", *FAST])
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == [{"id": "e1", "applied_in": "v0001"}]
    assert Registry(run).versions() == ["v0000", "v0001"]


def test_apply_events_on_a_file_that_is_not_jsonl(run, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("id,type,user\ne1,delete_user,1\n")
    result = runner.invoke(app, ["apply-events", str(run), str(events), "--json"])
    assert result.exit_code == 1 and "line 1: not a JSON object" in result.stderr
    assert json.loads(result.stdout)["version"] is None and len(json.loads(result.stdout)["problems"]) == 2
    assert Registry(run).versions() == ["v0000"]


def test_a_user_given_twice_is_forgotten_once(run):
    user = a_trained_user(run)
    result = runner.invoke(app, ["forget-user", str(run), "--user", user, "--user", user, "--json", *FAST])
    assert result.exit_code == 0, result.output
    assert [e["user"] for e in json.loads(result.stdout)["applied"]] == [user]


def test_a_changed_version_file_is_refused_and_nothing_is_written(run):
    """Every file of a version is checked against the hash its manifest recorded before use:
    flipped bytes in the adapter, a changed edited set, a version folder linked from elsewhere."""
    from rec_eraser.training.versions import verify_version

    user = a_trained_user(run)
    assert runner.invoke(app, ["forget-user", str(run), "--user", user, *FAST]).exit_code == 0
    assert set(verify_version(run / "v0001").hashes) >= {
        "adapter_model.safetensors",
        "adapter_config.json",
        "edited.jsonl",
    }
    adapter = run / "v0001" / "adapter_model.safetensors"
    original = adapter.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    adapter.write_bytes(bytes(flipped))
    other = next(z.user for z in Registry(run).training_set("v0000") if z.user != user)
    for args in (
        ["forget-user", str(run), "--user", other, *FAST],
        ["evaluate", str(run), "--limit", "2"],
        ["adapters", "diff", str(run), "v0000", "v0001"],
    ):
        one_line_error(runner.invoke(app, args), "adapter_model.safetensors: its SHA-256 differs")
    assert Registry(run).versions() == ["v0000", "v0001"]
    adapter.write_bytes(original)

    edited = run / "v0001" / "edited.jsonl"
    edited.write_text(edited.read_text().replace('"id"', '"id" ', 1))
    one_line_error(
        runner.invoke(app, ["forget-user", str(run), "--user", other, *FAST]), "edited.jsonl: its SHA-256 differs"
    )
    with pytest.raises(RuntimeError, match="edited.jsonl: its SHA-256 differs"):
        Registry(run).training_set("v0001")
    assert Registry(run).versions() == ["v0000", "v0001"]

    (run / "v0002").symlink_to(run / "v0001", target_is_directory=True)
    one_line_error(runner.invoke(app, ["adapters", "list", str(run)]), "is a symbolic link")
    one_line_error(runner.invoke(app, ["forget-user", str(run), "--user", other, *FAST]), "is a symbolic link")


def test_exit_codes_tell_a_busy_run_a_failed_solve_and_a_changed_file_apart(run, monkeypatch):
    """1 bad input, 3 busy (retry later), 4 a computation failed, 5 integrity; each one line."""
    import fcntl

    import rec_eraser.workflows.unlearn as unlearn
    from rec_eraser.core.solvers import SolverError

    user = a_trained_user(run)
    bad = runner.invoke(app, ["forget-user", str(run), "--user", "no-such-user", *FAST])
    one_line_error(bad, "unknown user")
    assert bad.exit_code == 1
    with (run / ".lock").open("a+") as held:  # another job writing to the run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = runner.invoke(app, ["forget-user", str(run), "--user", user, *FAST])
    one_line_error(busy, "another rec-eraser job is writing to this run")
    assert busy.exit_code == 3

    def diverging(*_args, **_kwargs):
        raise SolverError("fisher did not solve the system: relative residual 3 > 0.5; nothing was applied")

    monkeypatch.setattr(unlearn, "solve_update", diverging)
    failed = runner.invoke(app, ["forget-user", str(run), "--user", user, *FAST])
    one_line_error(failed, "did not solve the system")
    assert failed.exit_code == 4 and Registry(run).versions() == ["v0000"]
    monkeypatch.undo()

    adapter = run / "v0000" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-1] + b"\0")
    changed = runner.invoke(app, ["forget-user", str(run), "--user", user, *FAST])
    one_line_error(changed, "its SHA-256 differs")
    assert changed.exit_code == 5 and Registry(run).versions() == ["v0000"]


@pytest.mark.parametrize(
    "bad_id", ["a\u2028b", "a\u0085b", "tab\there", " padded", "x" * 201, "zero\u200bwidth", "new\nline"]
)
def test_an_event_id_must_be_one_printable_line(bad_id):
    from rec_eraser.workflows.events import EventError, parse_event

    with pytest.raises(EventError, match="field 'id' must be at most 200 printable characters"):
        parse_event({"id": bad_id, "type": "delete_user", "user": "1"})
    assert (
        parse_event({"id": "crm:ticket/42 [/bold] é", "type": "delete_user", "user": "1"}).id
        == "crm:ticket/42 [/bold] é"
    )


def test_bad_lines_never_block_good_ones_nor_the_run(run, tmp_path):
    """A deep or huge line is a problem of its own line; an id with markup prints as text; an id
    reused for another request is refused, not skipped; the same request with its items in
    another order is skipped."""
    user = a_trained_user(run)
    items = sorted(
        {s.item for z in Registry(run).training_set("v0000") if z.user == user for s in z.interactions[:-1]}
    )[:2]
    events = tmp_path / "events.jsonl"
    lines = [
        json.dumps({"id": "[/bold]e1", "type": "remove_interactions", "user": user, "items": items}),
        "[" * 30_000 + "]" * 30_000,
        json.dumps({"id": "e3", "type": "delete_user", "user": user, "pad": "x" * 70_000}),
    ]
    events.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["apply-events", str(run), str(events), *FAST])
    assert result.exit_code == 1 and "[/bold]e1" in result.stdout  # the good line applied, printed as text
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 2 and "line 2: nested too deeply" in errors[0] and "line 3: longer than 65536 bytes" in errors[1]
    )
    assert Registry(run).versions() == ["v0000", "v0001"]

    same = json.dumps({"id": "[/bold]e1", "type": "remove_interactions", "user": user, "items": items[::-1]})
    other = json.dumps({"id": "[/bold]e1", "type": "delete_user", "user": user})
    events.write_text(same + "\n")
    again = runner.invoke(app, ["apply-events", str(run), str(events), "--json", *FAST])
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == [{"id": "[/bold]e1", "applied_in": "v0001"}]
    events.write_text(other + "\n")
    reused = runner.invoke(app, ["apply-events", str(run), str(events), "--json", *FAST])
    assert reused.exit_code == 1 and json.loads(reused.stdout)["version"] is None
    assert "was applied in v0001 as" in reused.stderr and "give it an id of its own" in reused.stderr
    assert Registry(run).versions() == ["v0000", "v0001"]


def test_a_damaged_ledger_is_read_around_and_repaired_by_the_next_writer(run):
    from rec_eraser.workflows.registry import LEDGER

    ledger = run / LEDGER
    with Registry(run).writing():  # the first writer logs v0000
        pass
    good = ledger.read_bytes()
    # a record an older version wrote with a raw line separator inside a string, then a torn append
    ledger.write_bytes(good + '{"action": "note", "text": "a\u2028b"}\n'.encode() + b'{"time": "2026-12-06", "act')
    registry = Registry(run)
    assert [r["action"] for r in registry.ledger()] == ["trained", "note"]  # the torn line left out, never fatal
    user = a_trained_user(run)
    result = runner.invoke(app, ["forget-user", str(run), "--user", user, *FAST])
    assert result.exit_code == 0, result.output
    text = ledger.read_bytes()
    assert b'"act\n' not in text and text.endswith(b"\n")
    assert [r["action"] for r in Registry(run).ledger()] == ["trained", "note", "apply"]
    assert all(line.isascii() for line in text.decode().split("\n")[-2:])


def test_versions_go_on_past_v9999_in_numeric_order(tmp_path):
    from rec_eraser.training.versions import list_versions

    for name in ("v0002", "v9999", "v10000", "v10001", "v123", "v0003x", ".v10002-abc.partial"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    (tmp_path / "v0004").mkdir()  # no manifest: not a version
    assert list_versions(tmp_path) == ["v0002", "v9999", "v10000", "v10001"]


def test_train_takes_the_runs_lock(tallrec_run, tmp_path, tiny_model_dir):
    import fcntl

    run = shutil.copytree(tallrec_run, tmp_path / "run")
    with (run / ".lock").open("a+") as held:  # a rollback or an apply writing to the run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = runner.invoke(app, ["train", str(run), "--base-model", str(tiny_model_dir), "--no-measure-gap"])
    one_line_error(busy, "another rec-eraser job is writing to this run")
    assert busy.exit_code == 3 and not list(run.glob("v0*")) and not list(run.glob(".v0*"))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"schema": 3}, "manifest schema 3, and this rec-eraser reads up to 2"),
        ({"version": "v0007"}, "it names version 'v0007', not its folder's 'v0001'"),
        ({"parent": "../elsewhere"}, "its parent '../elsewhere' is not a version name"),
        ({"kind": "magic"}, "unknown kind 'magic'"),
        ({"events": [{"type": "delete_user"}]}, "its events are not a list of events with ids"),
        ({"recipe": None}, "it has no recipe"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_refused_on_read(trained, tmp_path, change, message):
    """The manifest holds the other files' hashes but none of itself: its shape is checked where it is read."""
    run = shutil.copytree(trained, tmp_path / "run")
    assert runner.invoke(app, ["forget-user", str(run), "--user", a_trained_user(run), *FAST]).exit_code == 0
    manifest = run / "v0001" / "manifest.json"
    record = json.loads(manifest.read_text())
    assert record["schema"] == 2
    manifest.write_text(json.dumps({**record, **change}))
    result = runner.invoke(app, ["adapters", "list", str(run)])
    one_line_error(result, message)
    assert result.exit_code == 5


@pytest.mark.parametrize("edit", ["value", "key"])
def test_an_edited_manifest_is_refused_on_read(trained, tmp_path, edit):
    """A manifest of the right shape whose content changed after it was written (a hand edit of a
    recorded figure, an event dropped) fails its own hash; re-indenting it does not."""
    run = shutil.copytree(trained, tmp_path / "run")
    assert runner.invoke(app, ["forget-user", str(run), "--user", a_trained_user(run), *FAST]).exit_code == 0
    manifest = run / "v0001" / "manifest.json"
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(record, indent=4))  # the same content, laid out otherwise
    assert runner.invoke(app, ["adapters", "list", str(run)]).exit_code == 0
    if edit == "value":
        record["created"] = "2000-01-01T00:00:00"
    else:
        record["note"] = "added by hand"
    manifest.write_text(json.dumps(record))
    result = runner.invoke(app, ["adapters", "list", str(run)])
    one_line_error(result, "its content differs from the SHA-256 it recorded of itself")
    assert result.exit_code == 5


def test_apply_events_can_wait_for_another_job(run, tmp_path):
    import fcntl
    import threading

    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"id": "e1", "type": "delete_user", "user": a_trained_user(run)}) + "\n")
    held, release = threading.Event(), threading.Event()

    def other_job() -> None:
        with (run / ".lock").open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            held.set()
            release.wait(30)
            fcntl.flock(handle, fcntl.LOCK_UN)

    job = threading.Thread(target=other_job)
    job.start()
    held.wait(10)
    impatient = runner.invoke(app, ["apply-events", str(run), str(events), "--wait", "0.3", *FAST])
    one_line_error(impatient, "another rec-eraser job is writing to this run (waited 0.3 s)")
    assert impatient.exit_code == 3
    for command in (
        ["forget-user", str(run), "--user", a_trained_user(run)],
        ["correct", str(run), "--user", "1", "--item", "1", "--label", "No"],
    ):
        queued = runner.invoke(app, [*command, "--wait", "0.2", *FAST])
        one_line_error(queued, "(waited 0.2 s)")
        assert queued.exit_code == 3
    threading.Timer(1.0, release.set).start()  # the other job ends a second from now
    patient = runner.invoke(app, ["apply-events", str(run), str(events), "--wait", "30", "--json", *FAST])
    job.join()
    assert patient.exit_code == 0, patient.output
    assert json.loads(patient.stdout)["version"] == "v0001"
