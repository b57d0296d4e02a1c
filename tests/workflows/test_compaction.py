"""``rec-eraser compact``: an exact retraining on what the current version stands for, while requests keep landing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rec_eraser.cli import app
from rec_eraser.core import SolverConfig
from rec_eraser.workflows import Event, Registry, apply_events
from rec_eraser.workflows import compaction as compaction_module
from rec_eraser.workflows.compaction import CompactionError, compact_run
from rec_eraser.workflows.erasure import erasure_status, owed_by_compaction

runner = CliRunner()
SOLVER = SolverConfig(method="fisher", sample_size=8)


def two_users(run) -> list[str]:
    users = sorted({z.user for z in Registry(run).training_set("v0000")})
    return users[:2]


def delete(run, user: str):
    return apply_events(run, [(None, Event(f"del-{user}", "delete_user", user))], solver=SOLVER)


def a_request_lands_during_the_training(run, monkeypatch, user: str) -> None:
    """The next compaction's training deletes ``user`` first: the lock is free while it trains."""
    real_fit = compaction_module.fit_loaded

    def fit_while_a_request_lands(*args, **kwargs):
        delete(run, user)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(compaction_module, "fit_loaded", fit_while_a_request_lands)


def pending_ids(run) -> list[str]:
    return [e["id"] for e in erasure_status(Registry(run), 86400)["pending_approximate"]]


def test_compaction_retrains_on_the_edited_set_compares_and_covers_the_events(run):
    first, _ = two_users(run)
    delete(run, first)
    assert pending_ids(run) == [f"del-{first}"]
    result = runner.invoke(app, ["compact", str(run), "--json", "--eval-prompts", "8"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    registry = Registry(run)
    assert body["version"] == body["current"] == "v0002" and body["compacted"] == "v0001" and body["reapplied"] == []
    record = registry.manifest("v0002")
    assert record["kind"] == "compacted" and record["parent"] == "v0001" and record["events"] == []
    # the exact version stands for exactly the edited training set, and its events are no longer pending
    ids = sorted(z.id for z in registry.training_set("v0002"))
    assert ids == sorted(z.id for z in registry.training_set("v0001")) and record["train_instances"] == len(ids)
    assert all(z.user != first for z in registry.training_set("v0002"))
    assert pending_ids(run) == [] and f"del-{first}" in registry.applied_events("v0002")
    comparison = record["metrics"]["compaction"]
    forgotten = sum(z.user == first for z in registry.training_set("v0000"))
    from rec_eraser.tasks.prepare import load_instances

    assert comparison["forgotten_instances"] == forgotten
    assert comparison["eval_prompts"] == len(load_instances(run, "test")[:8])
    for side in ("approximate", "exact"):
        assert 0.0 <= comparison[side]["membership_auc"] <= 1.0 and comparison[side]["forgotten_loss"] > 0
    assert -1.0 <= comparison["agreement"] <= 1.0
    # compacting again finds nothing approximate to cover
    again = compact_run(run)
    assert again["version"] is None and "no approximately applied event" in again["reason"]


def test_requests_landing_during_the_training_are_applied_once_on_top_and_stay_pending(run, monkeypatch):
    first, second = two_users(run)
    delete(run, first)
    a_request_lands_during_the_training(run, monkeypatch, second)
    result = compact_run(run, eval_prompts=4)
    registry = Registry(run)
    # v0002: the request during the training; v0003: the compaction of v0001; v0004: v0002's event again on top
    assert result["version"] == "v0003" and result["compacted"] == "v0001" and result["current"] == "v0004"
    assert result["reapplied"] == [{"version": "v0004", "events": [f"del-{second}"]}]
    assert registry.manifest("v0004")["parent"] == "v0003"
    applied = registry.applied_events("v0004")
    assert applied == {f"del-{first}": "v0001", f"del-{second}": "v0004"}
    assert pending_ids(run) == [f"del-{second}"]  # approximate again, until the next compaction
    assert all(z.user not in (first, second) for z in registry.training_set("v0004"))


def test_a_failed_training_leaves_the_current_version_current(run, monkeypatch):
    first, _ = two_users(run)
    delete(run, first)

    def crash(*args, **kwargs):
        raise MemoryError("killed")

    monkeypatch.setattr(compaction_module, "fit_loaded", crash)
    with pytest.raises(MemoryError):
        compact_run(run)
    assert Registry(run).versions() == ["v0000", "v0001"] and pending_ids(run) == [f"del-{first}"]


def test_a_rollback_during_the_training_writes_nothing(run, monkeypatch):
    first, second = two_users(run)
    delete(run, first)
    delete(run, second)
    real_fit = compaction_module.fit_loaded

    def fit_while_rolled_back(*args, **kwargs):
        Registry(run).rollback("v0001")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(compaction_module, "fit_loaded", fit_while_rolled_back)
    with pytest.raises(CompactionError, match="no longer on the current version's lineage"):
        compact_run(run, eval_prompts=4)
    assert Registry(run).versions() == ["v0000", "v0001", "v0002", "v0003"]
    assert Registry(run).manifest("v0003")["kind"] == "rollback"


def test_a_failed_re_apply_restores_the_version_that_holds_the_events(run, monkeypatch):
    first, second = two_users(run)
    delete(run, first)
    a_request_lands_during_the_training(run, monkeypatch, second)

    def failing_apply(*args, **kwargs):
        raise RuntimeError("solver diverged")

    monkeypatch.setattr(compaction_module, "apply_locked", failing_apply)
    with pytest.raises(CompactionError, match="restores v0002"):
        compact_run(run, eval_prompts=4)
    registry = Registry(run)
    # v0003: the compaction, kept; v0004: a copy of v0002, current, with both deletions in effect
    assert registry.manifest("v0003")["kind"] == "compacted" and registry.manifest("v0004")["kind"] == "rollback"
    assert set(registry.applied_events("v0004")) == {f"del-{first}", f"del-{second}"}
    assert all(z.user not in (first, second) for z in registry.training_set("v0004"))


def test_the_curvature_cache_of_the_replaced_adapter_is_not_reused(run):
    from rec_eraser.workflows.curvature_cache import CACHE_FILE

    first, second = two_users(run)
    delete(run, first)
    compact_run(run, eval_prompts=4)
    assert (run / CACHE_FILE).is_file()  # written after v0001, for the adapter v0002 retrained
    result = delete(run, second)
    assert result.metrics["curvature_cache"]["verdict"] == "no cache"
    # the drift of the approximate requests below the compaction is gone too
    assert result.metrics["drift"]["requests"] == 1


def killed_after_writing_the_compacted_version(run, monkeypatch, second: str) -> None:
    """The state a kill leaves between writing the compacted version and re-applying on top of it."""
    a_request_lands_during_the_training(run, monkeypatch, second)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies here: neither the re-apply nor the rollback happens

    monkeypatch.setattr(compaction_module, "apply_locked", killed)
    monkeypatch.setattr(Registry, "rollback_locked", killed)
    with pytest.raises(KeyboardInterrupt):
        compact_run(run, eval_prompts=4)
    monkeypatch.undo()


def test_an_interrupted_compaction_shows_the_events_out_of_effect_and_compact_finishes_it(run, monkeypatch):
    first, second = two_users(run)
    delete(run, first)
    killed_after_writing_the_compacted_version(run, monkeypatch, second)
    registry = Registry(run)
    assert registry.current() == "v0003" and registry.manifest("v0003")["kind"] == "compacted"
    assert f"del-{second}" not in registry.applied_events("v0003")  # the deletion is undone: the bug being repaired
    status = erasure_status(registry, 86400)
    assert status["out_of_effect"] == [{"id": f"del-{second}", "type": "delete_user", "user": second}]
    assert status["overdue"]
    shown = runner.invoke(app, ["status", str(run)])
    assert shown.exit_code == 6 and "out of effect" in shown.stderr

    def no_training(*args, **kwargs):
        raise AssertionError("finishing an interrupted compaction must not retrain")

    monkeypatch.setattr(compaction_module, "fit_loaded", no_training)
    result = compact_run(run, eval_prompts=4)
    assert result["finished_interrupted"] and result["version"] == "v0003" and result["current"] == "v0004"
    assert result["reapplied"] == [{"version": "v0004", "events": [f"del-{second}"]}]
    assert Registry(run).applied_events("v0004") == {f"del-{first}": "v0001", f"del-{second}": "v0004"}
    assert all(z.user not in (first, second) for z in Registry(run).training_set("v0004"))
    after = erasure_status(Registry(run), 86400)
    assert after["out_of_effect"] == [] and [e["id"] for e in after["pending_approximate"]] == [f"del-{second}"]
    assert owed_by_compaction(Registry(run)) == []  # nothing owed any more: the next compaction retrains


def test_the_next_request_after_an_interrupted_compaction_re_applies_the_owed_events_first(run, monkeypatch):
    first, second = two_users(run)
    delete(run, first)
    killed_after_writing_the_compacted_version(run, monkeypatch, second)
    third = sorted({z.user for z in Registry(run).training_set("v0000")})[2]
    result = delete(run, third)  # another user's request pays what the compaction owes, first
    assert [e["id"] for e in result.applied] == [f"del-{second}", f"del-{third}"] and result.version == "v0004"
    assert set(Registry(run).applied_events("v0004")) == {f"del-{first}", f"del-{second}", f"del-{third}"}
    assert owed_by_compaction(Registry(run)) == []


def test_a_retried_owed_event_is_applied_once(run, monkeypatch):
    first, second = two_users(run)
    delete(run, first)
    killed_after_writing_the_compacted_version(run, monkeypatch, second)
    result = delete(run, second)  # the very event that is owed, sent again
    assert [e["id"] for e in result.applied] == [f"del-{second}"] and result.version == "v0004"
    assert Registry(run).manifest("v0004")["events"][0]["id"] == f"del-{second}"


def test_a_rollback_to_a_compacted_version_owes_nothing(run, monkeypatch):
    first, second = two_users(run)
    delete(run, first)
    a_request_lands_during_the_training(run, monkeypatch, second)
    assert compact_run(run, eval_prompts=4)["current"] == "v0004"
    Registry(run).rollback("v0003")  # a deliberate undo of the re-applied deletion, not an interruption
    registry = Registry(run)
    assert registry.manifest("v0005")["kind"] == "rollback" and f"del-{second}" not in registry.applied_events("v0005")
    assert owed_by_compaction(registry) == [] and erasure_status(registry, 86400)["out_of_effect"] == []
