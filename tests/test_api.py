"""The Python API at the package root: the documented example runs as written, and bad
requests are refused before anything is written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

import rec_eraser as rx
from rec_eraser.workflows.events import EventError

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
BASE_LINE = "BASE_MODEL = None  # None: the embedded SmolLM2-135M; or a local Hugging Face causal-LM folder"


def test_the_documented_example_runs_as_written(tmp_path, monkeypatch, capsys, tiny_model_dir):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1 and BASE_LINE in blocks[0]
    # the one change: a tiny random model instead of the embedded SmolLM2 (minutes, not seconds)
    code = blocks[0].replace(BASE_LINE, f"BASE_MODEL = {str(tiny_model_dir)!r}")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    run, result = namespace["run"], namespace["result"]
    assert isinstance(run, rx.Run) and run.versions == ["v0000", "v0001"] == [*run.versions[:1], result.version]
    assert result.removed == 17 and run.current == "v0001"
    assert [line["action"] for line in run.ledger()] == ["trained", "apply"]
    assert "v0001 removed 17 instances" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir) -> rx.Run:
    """Trained once for the module (its gap measured, so requests reuse it); a test that writes copies it."""
    run = rx.Run.prepare("ml-100k", task="tallrec", out=tmp_path_factory.mktemp("api") / "run", max_users=2)
    run.train("demo-tallrec", base_model=tiny_model_dir)
    return run


def test_one_bad_event_refuses_the_request_and_writes_nothing(trained_run):
    user = _lightest_user(trained_run)
    for events, message in (
        ([rx.delete_user(user), rx.delete_user("no-such-user")], "unknown user 'no-such-user'"),
        ([rx.correct_target(user, "1", "2")], "correct_target needs the llara task"),
        ([], "non-empty list of events"),
        (rx.delete_user(user), "non-empty list of events"),
    ):
        with pytest.raises(EventError, match=message):
            trained_run.apply(events)
    assert trained_run.versions == ["v0000"] and [line["action"] for line in trained_run.ledger()] == ["trained"]
    with pytest.raises(EventError, match="label must be Yes or No"):
        rx.correct_label(user, "1", "maybe")
    with pytest.raises(EventError, match="a list of item ids, got the string '50'"):
        rx.remove_interactions(user, "50")
    assert issubclass(EventError, rx.RecEraserError) and rx.RecEraserError in rx.USER_ERRORS


def test_preview_writes_nothing_and_matches_apply(trained_run, tmp_path):
    run = rx.Run(shutil.copytree(trained_run.path, tmp_path / "run"))
    user = _lightest_user(run)
    model, previewed = run.preview([rx.delete_user(user)])
    assert model is not None and previewed.version is None and run.versions == ["v0000"]
    applied = run.apply([rx.delete_user(user)])
    assert (applied.removed, applied.train_instances) == (previewed.removed, previewed.train_instances)
    assert applied.metrics["after"]["forgotten_loss"] == pytest.approx(
        previewed.metrics["after"]["forgotten_loss"], rel=1e-5
    )
    # the request is pending exactness, and the user's audit says so (as `status` and `audit` do)
    status = run.status()
    assert [e["user"] for e in status["pending_approximate"]] == [user] and status["overdue"] is False
    audit = run.audit(user)
    assert audit["present_in_current"] == 0 and audit["exact"] is False and audit["events"][0]["in_effect"]


def test_the_api_is_loaded_on_first_use_only():
    import subprocess
    import sys

    code = "import sys, rec_eraser; print('torch' in sys.modules, 'rec_eraser.api' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False",
        "False",
    ]
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        rx.Nothing  # noqa: B018


def _lightest_user(run: rx.Run) -> str:
    """The user with the fewest training instances (the cheapest request)."""
    from collections import Counter

    from rec_eraser.tasks.prepare import load_instances

    return min(Counter(z.user for z in load_instances(run.path, "train")).items(), key=lambda kv: (kv[1], kv[0]))[0]


def test_influence_update_needs_no_run_folder_and_equals_the_workflows_update(trained_run, tmp_path):
    """A peft model, its training instances and the ones to forget give the update the workflow
    writes for the same deletion (same solver and damping rule, no calibration)."""
    from safetensors.torch import load_file

    from rec_eraser.workflows.registry import Registry

    run = rx.Run(shutil.copytree(trained_run.path, tmp_path / "run"))
    user = _lightest_user(run)
    training_set = Registry(run.path).training_set("v0000")
    peft_model = run.load("v0000").model.lm  # a plain peft model from here on
    tokenizer = run.load("v0000").tokenizer
    forgotten = [z for z in training_set if z.user == user]
    update = rx.influence_update(peft_model, tokenizer, training_set, removed=forgotten)
    assert update.report.method == "fisher" and set(update.delta) <= {n for n, _ in peft_model.named_parameters()}

    applied = run.apply([rx.delete_user(user)], calibrate=False)
    assert applied.version == "v0001" and applied.removed == len(forgotten)
    before, after = (load_file(str(run.path / v / "adapter_model.safetensors")) for v in ("v0000", "v0001"))
    params = dict(peft_model.named_parameters())
    assert len(update.delta) == len(after) and sum(float(d.norm()) for d in update.delta.values()) > 0
    for name, delta in update.delta.items():
        saved = name.replace(".default", "")  # peft saves an adapter's tensors without its name
        assert torch.allclose(after[saved] - before[saved], delta.to(after[saved].dtype), atol=1e-6, rtol=1e-4), name
        assert params[name].shape == delta.shape

    with pytest.raises(ValueError, match="not in the training set"):
        rx.influence_update(peft_model, tokenizer, training_set[1:], removed=training_set[:1])
    with pytest.raises(ValueError, match="nothing to remove or correct"):
        rx.influence_update(peft_model, tokenizer, training_set)


def test_one_id_for_two_different_events_in_one_request_is_refused(trained_run):
    from rec_eraser.workflows.events import Event

    user = _lightest_user(trained_run)
    twins = [Event("ticket-1", "delete_user", user), Event("ticket-1", "remove_interactions", user, items=("1",))]
    with pytest.raises(EventError, match="'ticket-1' names two different events in this request"):
        trained_run.apply(twins)
    assert trained_run.versions == ["v0000"]
