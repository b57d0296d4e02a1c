"""``rec-eraser status``: the requests a run honours only approximately, their ages, the deadline."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
from typer.testing import CliRunner

from rec_eraser.cli import app
from rec_eraser.training.train import train_run
from rec_eraser.workflows import Registry
from rec_eraser.workflows.erasure import DeadlineError, erasure_status, parse_duration

from .test_cli_workflows import FAST, one_line_error
from .test_unlearn import a_trained_user, tiny_recipe

runner = CliRunner()


def status(run, *args):
    result = runner.invoke(app, ["status", str(run), "--json", *args])
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def test_a_freshly_trained_run_has_nothing_pending(run):
    result, body = status(run)
    assert result.exit_code == 0, result.output
    assert body["current"] == body["exact_version"] == "v0000"
    assert body["pending_approximate"] == [] and body["oldest_pending_seconds"] is None and body["overdue"] is False
    assert body["deadline_seconds"] == 30 * 86400


def test_approximate_requests_are_pending_until_rolled_back_and_overdue_past_the_deadline(run):
    first, second = a_trained_user(run), None
    assert runner.invoke(app, ["forget-user", str(run), "--user", first, *FAST]).exit_code == 0
    users = [z.user for z in Registry(run).training_set("v0001")]
    second = max(set(users), key=users.count)
    assert runner.invoke(app, ["forget-user", str(run), "--user", second, *FAST]).exit_code == 0

    result, body = status(run)
    assert result.exit_code == 0 and body["current"] == "v0002" and body["exact_version"] == "v0000"
    pending = body["pending_approximate"]
    assert [(e["user"], e["version"], e["type"]) for e in pending] == [
        (first, "v0001", "delete_user"),
        (second, "v0002", "delete_user"),
    ]  # oldest first
    assert pending[0]["age_seconds"] >= pending[1]["age_seconds"] >= 0
    assert body["oldest_pending_seconds"] == pending[0]["age_seconds"] and body["overdue"] is False

    # a month and a day later: overdue, by the library's clock and by the command's exit code
    registry = Registry(run)
    later = dt.datetime.fromisoformat(registry.manifest("v0001")["created"]) + dt.timedelta(days=31)
    late = erasure_status(registry, parse_duration("30d"), now=later)
    assert late["overdue"] is True and late["oldest_pending_seconds"] >= 31 * 86400
    overdue, body = status(run, "--deadline", "0.001s")
    assert overdue.exit_code == 6 and body["overdue"] is True  # the status is printed all the same
    plain = runner.invoke(app, ["status", str(run), "--deadline", "0.001s"])
    assert plain.exit_code == 6 and "overdue" in plain.stderr and first in plain.stdout

    # a rollback to the exact version leaves nothing applied approximately
    assert runner.invoke(app, ["adapters", "rollback", str(run), "v0000"]).exit_code == 0
    result, body = status(run)
    assert result.exit_code == 0 and body["pending_approximate"] == [] and body["current"] == "v0003"


@pytest.mark.parametrize(
    "text,seconds", [("30d", 2592000), ("12h", 43200), ("90m", 5400), ("3600", 3600), ("1.5s", 1.5)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1d", "0s", "3w", "1e9"])
def test_a_bad_deadline_is_one_line(run, text):
    with pytest.raises(DeadlineError):
        parse_duration(text)
    one_line_error(runner.invoke(app, ["status", str(run), "--deadline", text]), "deadline")


def test_an_unknown_run_is_one_line(tmp_path):
    one_line_error(runner.invoke(app, ["status", str(tmp_path / "nothing")]), "no run folder")


def test_the_audit_of_a_forgotten_user_follows_their_instances_through_the_versions(run, tmp_path):
    user = a_trained_user(run)
    mine = [z.id for z in Registry(run).training_set("v0000") if z.user == user]  # checked by hand: the user's own
    assert mine and all(i.split("-")[1] == user for i in mine)
    before = runner.invoke(app, ["audit", str(run), "--user", user, "--json"])
    body = json.loads(before.stdout)
    assert [i["id"] for i in body["instances"]] == mine and body["present_in_current"] == len(mine)
    assert body["events"] == [] and body["exact"] is None

    assert runner.invoke(app, ["forget-user", str(run), "--user", user, *FAST]).exit_code == 0
    report = tmp_path / "audit.md"
    result = runner.invoke(app, ["audit", str(run), "--user", user, "--json", "--out", str(report)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["current"] == "v0001" and body["present_in_current"] == 0
    assert [(v["version"], v["present"]) for v in body["versions"]] == [("v0000", len(mine)), ("v0001", 0)]
    (event,) = body["events"]
    assert (event["type"], event["version"], event["method"], event["removed"]) == (
        "delete_user",
        "v0001",
        "fisher",
        len(mine),
    )
    assert event["relative_residual"] < 1e-6 and body["exact"] is False
    m = body["membership"]
    assert m["version"] == "v0001" and m["former_instances"] == len(mine) and m["reference_instances"] > 0
    assert 0 <= m["auc"] <= 1 and 0 < m["p_value"] <= 1
    text = report.read_text()
    assert f"Audit of user {user}" in text and "approximate (influence) update only" in text and "p-value" in text
    assert event["in_effect"] is True

    # rolled back: the event stays in the record, marked as undone, and the data is back
    assert runner.invoke(app, ["adapters", "rollback", str(run), "v0000"]).exit_code == 0
    body = json.loads(runner.invoke(app, ["audit", str(run), "--user", user, "--json"]).stdout)
    assert body["present_in_current"] == len(mine) and body["exact"] is None
    assert [(e["version"], e["in_effect"]) for e in body["events"]] == [("v0001", False)]
    assert "undone by a rollback" in runner.invoke(app, ["audit", str(run), "--user", user]).stdout

    one_line_error(runner.invoke(app, ["audit", str(run), "--user", "no-such-user"]), "has no data in")


def test_a_user_never_trained_on_gets_a_clear_answer(tmp_path, tallrec_run, tiny_model_dir):
    from rec_eraser.tasks.prepare import load_instances

    small = shutil.copytree(tallrec_run, tmp_path / "small")
    train_run(small, tiny_recipe(tiny_model_dir, max_train=4))  # most users' data is left out of training
    trained_users = {z.user for z in Registry(small).training_set("v0000")}
    never = next(z.user for z in load_instances(small, "train") if z.user not in trained_users)
    plain = runner.invoke(app, ["audit", str(small), "--user", never])
    assert plain.exit_code == 0 and "none of it was in the training set" in plain.stdout
    body = json.loads(runner.invoke(app, ["audit", str(small), "--user", never, "--json"]).stdout)
    assert body["instances"] == [] and body["present_in_current"] == 0 and body["membership"] is None


def test_the_permutation_p_value_separates_a_clear_difference_from_none():
    import numpy as np

    from rec_eraser.workflows.audit import permutation_p_value

    rng = np.random.default_rng(0)
    others = rng.normal(1.0, 0.1, 60)
    assert permutation_p_value(rng.normal(0.5, 0.1, 8), others, 500, 0) < 0.01  # members' loss far lower
    assert permutation_p_value(rng.normal(1.0, 0.1, 8), others, 500, 0) > 0.05
