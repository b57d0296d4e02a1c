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


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tallrec_run, tiny_model_dir):
    run = tmp_path_factory.mktemp("erasure") / "run"
    shutil.copytree(tallrec_run, run)
    train_run(run, tiny_recipe(tiny_model_dir))
    return run


@pytest.fixture
def run(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


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
