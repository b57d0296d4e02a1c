"""A request's item-encoder choice (LLaRA): the interactions a retrained encoder drops, checked by
hand; and end to end on a tiny run: the version holds and reads its own encoder, later versions
inherit it, a changed encoder file is refused, compaction and the audit follow it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rec_eraser.data import Interaction
from rec_eraser.encoders.sasrec import ItemEncoder
from rec_eraser.errors import RecEraserError
from rec_eraser.training.train import ENCODER_DIR, encoder_dataset, load_version, train_run
from rec_eraser.training.versions import VersionIntegrityError
from rec_eraser.workflows import Event, Registry, apply_events
from rec_eraser.workflows.item_encoder import erase_interactions
from tests.workflows.test_unlearn import FAST, a_trained_user, tiny_recipe


def test_events_drop_and_correct_exactly_the_interactions_they_name() -> None:
    rows = [
        Interaction("a", "i1", 5.0, 1.0, 2),
        Interaction("a", "i2", 4.0, 2.0, 3),
        Interaction("b", "i1", 3.0, 1.0, 4),
        Interaction("b", "i3", 1.0, 2.0, 5),
        Interaction("c", "i2", 2.0, 1.0, 6),
    ]
    events = [
        Event("e1", "delete_user", "a"),
        Event("e2", "remove_interactions", "b", items=("i3",)),
        Event("e3", "correct_target", "c", item="i2", target="i9"),
        Event("e4", "correct_label", "b", item="i1", label="No"),  # SASRec reads no label
    ]
    kept, counts = erase_interactions(rows, events)
    assert [(x.user, x.item, x.line) for x in kept] == [("b", "i1", 4), ("c", "i9", 6)]
    assert counts == {"dropped": 3, "corrected": 1}
    assert erase_interactions(rows, [])[0] == tuple(rows)


@pytest.fixture(scope="module")
def trained_llara(tmp_path_factory, llara_run, learnable_model_dir) -> Path:
    run = tmp_path_factory.mktemp("encoder") / "run"
    shutil.copytree(llara_run, run)
    train_run(run, tiny_recipe(learnable_model_dir, max_train=24, epochs=2, lr=1e-2, sasrec_epochs=2))
    return run


def test_a_retrained_encoder_is_written_read_inherited_and_checked(tmp_path, trained_llara, monkeypatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_llara, run)
    user = a_trained_user(run)
    run_encoder = ItemEncoder.load(run / ENCODER_DIR)
    users_rows = sum(x.user == user for x in encoder_dataset(run).interactions)

    result = apply_events(run, [(None, Event("e1", "delete_user", user))], solver=FAST, item_encoder="retrain")
    entry = Registry(run).manifest(result.version)["item_encoder"]
    assert result.item_encoder == entry and entry["version"] == result.version and entry["retrained"]
    assert entry["dropped"] == users_rows > 0 and entry["corrected"] == 0 and entry["events"] == 1
    fit = entry["alignment"]
    assert 0 < fit["relative_residual"] < 1 and fit["items"] == len(run_encoder)
    assert 0 < fit["items_residual"] < 1 and 0 < fit["user_states_residual"] and fit["user_states"] > 0
    assert entry["after"]["forgotten_loss"] > 0
    hashes = Registry(run).manifest(result.version)["hashes"]
    assert {"item_encoder.safetensors", "item_encoder.json"} <= hashes.keys()

    # the version reads its own encoder: trained without the user, same rows, another table
    own = ItemEncoder.load(run / result.version)
    assert own.item_ids == run_encoder.item_ids
    assert own.config["train_transitions"] < run_encoder.config["train_transitions"]
    model = load_version(run, result.version).model
    assert torch.equal(model.item_embeddings, own.embeddings)
    # evaluation's SASRec baseline reads the encoder the version reads, not the run's
    import rec_eraser.tasks.llara.evaluation as llara_evaluation
    from rec_eraser.tasks.registry import task_of

    assert load_version(run, "v0000").item_encoder is None
    read: list[ItemEncoder] = []
    baseline = llara_evaluation.encoder_baseline
    monkeypatch.setattr(llara_evaluation, "encoder_baseline", lambda enc, *a: read.append(enc) or baseline(enc, *a))
    test = Registry(run).training_set(result.version)[:4]
    for version in (result.version, "v0000"):
        task_of("llara").evaluate(run, load_version(run, version), test, test, generate=False, rank=False)
    assert torch.equal(read[0].embeddings, own.embeddings) and torch.equal(read[1].embeddings, run_encoder.embeddings)
    assert not torch.allclose(own.embeddings, run_encoder.embeddings)
    # and its losses with it are the ones the manifest recorded with the new encoder
    from rec_eraser.training.scoring import instance_losses

    loaded = load_version(run, result.version)
    forgotten = [z for z in Registry(run).training_set("v0000") if z.user == user]
    assert float(instance_losses(loaded, forgotten).mean()) == pytest.approx(entry["after"]["forgotten_loss"], rel=1e-4)

    # a later request that keeps the encoder keeps reading that one
    other = next(u for u in (z.user for z in Registry(run).training_set(result.version)) if u != user)
    later = apply_events(run, [(None, Event("e2", "delete_user", other))], solver=FAST)
    assert Registry(run).manifest(later.version)["item_encoder"] == {"version": result.version, "retrained": False}
    assert torch.equal(load_version(run, later.version).model.item_embeddings, own.embeddings)

    # the audit says which encoder the current version reads, per user
    from rec_eraser.workflows.audit import audit_user, render_markdown

    first = audit_user(run, user, losses_of=lambda zs: torch.zeros(len(zs)).numpy())
    assert first["item_encoder"] == {
        "retrained_in": result.version,
        "events_excluded": ["e1"],
        "events_in_effect": ["e1"],
        "covers_events": True,
    }
    assert f"retrained in `{result.version}` without the interactions" in render_markdown(first)
    second = audit_user(run, other, losses_of=lambda zs: torch.zeros(len(zs)).numpy())
    assert second["item_encoder"]["covers_events"] is False and second["item_encoder"]["events_in_effect"] == ["e2"]
    assert "it still holds those interactions" in render_markdown(second)

    # a rollback reads the encoder the version it returns to reads, and says it retrained nothing
    back = Registry(run).rollback(result.version)
    assert Registry(run).manifest(back["version"])["item_encoder"] == {"version": result.version, "retrained": False}
    assert torch.equal(load_version(run, back["version"]).model.item_embeddings, own.embeddings)

    # a changed encoder file is refused by every version that reads it
    weights = run / result.version / "item_encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    with pytest.raises(VersionIntegrityError):
        load_version(run, later.version)


def test_compaction_trains_on_the_retrained_encoder_and_retrains_again_for_a_request_landing_meanwhile(
    tmp_path, trained_llara, monkeypatch
) -> None:
    from rec_eraser.training import train as train_module
    from rec_eraser.workflows import compaction as compaction_module
    from rec_eraser.workflows.compaction import compact_run

    run = tmp_path / "run"
    shutil.copytree(trained_llara, run)
    users = sorted({z.user for z in Registry(run).training_set("v0000")})
    first = apply_events(run, [(None, Event("e1", "delete_user", users[0]))], solver=FAST, item_encoder="retrain")
    real_fit = compaction_module.fit_loaded

    def fit_while_a_retraining_request_lands(*args, **kwargs):
        apply_events(run, [(None, Event("e2", "delete_user", users[1]))], solver=FAST, item_encoder="retrain")
        return real_fit(*args, **kwargs)

    def no_run_encoder(*args, **kwargs):
        raise AssertionError("the exact adapter must be trained on the encoder in use, not the run's")

    monkeypatch.setattr(compaction_module, "fit_loaded", fit_while_a_retraining_request_lands)
    monkeypatch.setattr(train_module, "ensure_item_encoder", no_run_encoder)
    compacted = compact_run(run, eval_prompts=4)
    registry = Registry(run)
    record = registry.manifest(compacted["version"])
    assert record["item_encoder"] == {"version": first.version, "retrained": False}
    assert record["reapply_item_encoder"] == "retrain"
    # the request that landed meanwhile is re-applied on top, and its encoder retrained again without both users
    current = registry.manifest(compacted["current"])
    assert current["item_encoder"]["retrained"] and current["item_encoder"]["events"] == 2
    assert registry.manifest(compacted["current"])["item_encoder"]["version"] == compacted["current"]


def test_curvature_rows_from_before_an_encoder_change_are_not_reused(tmp_path, trained_llara) -> None:
    from rec_eraser.workflows.curvature_cache import CACHE_FILE

    run = tmp_path / "run"
    shutil.copytree(trained_llara, run)
    users = sorted({z.user for z in Registry(run).training_set("v0000")}, key=str)
    apply_events(run, [(None, Event("e1", "delete_user", users[0]))], solver=FAST)  # writes the run's cache
    assert (run / CACHE_FILE).is_file()
    retrained = apply_events(run, [(None, Event("e2", "delete_user", users[1]))], solver=FAST, item_encoder="retrain")
    assert "sha256" not in Registry(run).manifest(retrained.version)["metrics"].get("curvature_cache", {})
    later = apply_events(run, [(None, Event("e3", "delete_user", users[2]))], solver=FAST)
    report = Registry(run).manifest(later.version)["metrics"]["curvature_cache"]
    assert report["verdict"] == "no cache" and report["reused"] == 0


def test_a_dataset_file_changed_since_prepare_is_refused_before_retraining(tmp_path, llara_run) -> None:
    run = tmp_path / "run"
    shutil.copytree(llara_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    name = next(iter(manifest["dataset"]["files"]))
    manifest["dataset"]["files"][name] = "0" * 64  # as if the file had other bytes when the run was prepared
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecEraserError, match=f"the dataset's {name} changed since the run was prepared"):
        encoder_dataset(run)


def test_an_encoder_that_is_an_affine_image_of_the_old_one_leaves_every_item_token_as_it_was() -> None:
    from torch import nn

    from rec_eraser.encoders.projector import ItemProjector
    from rec_eraser.training.model import RecModel
    from rec_eraser.workflows.item_encoder import swap_item_encoder

    torch.manual_seed(0)
    items = [f"i{k}" for k in range(30)]
    old = ItemEncoder(items, torch.randn(30, 8))
    new = ItemEncoder(items, old.embeddings @ torch.randn(8, 8) + torch.randn(8))  # the same space, turned and moved
    model = RecModel(nn.Identity(), old.embeddings, ItemProjector(8, 16))
    with torch.no_grad():
        before = model.projector(model.item_embeddings)
        figures = swap_item_encoder(model, old, new)
        after = model.projector(model.item_embeddings)
    assert torch.equal(model.item_embeddings, new.embeddings)
    assert torch.allclose(after, before, atol=1e-4) and figures["relative_residual"] < 1e-5
    with pytest.raises(ValueError, match="other item rows"):
        swap_item_encoder(model, old, ItemEncoder(items[::-1], new.embeddings))


def test_a_run_without_item_tokens_or_an_unknown_choice_is_refused_before_any_work(
    tmp_path, tallrec_run, tiny_model_dir
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tallrec_run, run)
    train_run(run, tiny_recipe(tiny_model_dir, max_train=8))
    user = a_trained_user(run)
    with pytest.raises(RecEraserError, match="not one of keep, retrain"):
        apply_events(run, [(None, Event("e1", "delete_user", user))], item_encoder="refit")
    with pytest.raises(RecEraserError, match="reads no item encoder"):
        apply_events(run, [(None, Event("e1", "delete_user", user))], item_encoder="retrain")
    assert Registry(run).versions() == ["v0000"]


def test_the_cli_retrains_on_request_and_says_so(tmp_path, trained_llara) -> None:
    from typer.testing import CliRunner

    from rec_eraser.cli import app

    run = tmp_path / "run"
    shutil.copytree(trained_llara, run)
    user = a_trained_user(run)
    args = ["forget-user", str(run), "--user", user, "--item-encoder", "retrain", "--sample-size", "16"]
    printed = CliRunner().invoke(app, args)
    assert printed.exit_code == 0, printed.output
    assert "item encoder retrained without what the events in effect (1) erase" in printed.stdout
    assert json.loads((run / "v0001" / "manifest.json").read_text())["item_encoder"]["retrained"] is True


def test_a_retraining_whose_projector_map_cannot_be_fitted_is_refused_before_any_work(
    tmp_path, trained_llara, monkeypatch
) -> None:
    from rec_eraser.encoders.sasrec_train import training_sequences
    from rec_eraser.workflows import unlearn
    from rec_eraser.workflows.item_encoder import check_alignment_rows

    run = tmp_path / "run"
    shutil.copytree(trained_llara, run)
    user = a_trained_user(run)
    encoder = ItemEncoder.load(run / ENCODER_DIR)
    sequences = training_sequences(encoder_dataset(run))
    assert sequences[user]  # the user has a training history, so deleting them removes one user state
    rows = len(encoder.item_ids) + sum(1 for s in sequences.values() if s)

    def widened(width: int) -> ItemEncoder:  # the run's items and SASRec under an embedding `width` wide
        return ItemEncoder(encoder.item_ids, torch.zeros(len(encoder.item_ids), width), model=encoder.model)

    deletion = Event("e1", "delete_user", user)
    check_alignment_rows(run, [], widened(rows - 1))  # one row more than the width: fits
    with pytest.raises(RecEraserError, match=f"needs more than {rows} .* this run has {rows}"):
        check_alignment_rows(run, [], widened(rows))
    with pytest.raises(RecEraserError, match=f"this run has {rows - 1};"):
        check_alignment_rows(run, [deletion], widened(rows - 1))
    without_sasrec = ItemEncoder(encoder.item_ids, torch.zeros(len(encoder.item_ids), len(encoder.item_ids)))
    with pytest.raises(RecEraserError, match=f"this run has {len(encoder.item_ids)};"):  # items only, no user states
        check_alignment_rows(run, [], without_sasrec)

    monkeypatch.setattr(unlearn, "version_item_encoder", lambda *_: widened(rows))
    monkeypatch.setattr(unlearn, "_compute", lambda *_, **__: pytest.fail("the update was computed"))
    with pytest.raises(RecEraserError, match="keep the encoder instead"):
        apply_events(run, [(None, deletion)], solver=FAST, item_encoder="retrain")
    assert Registry(run).versions() == ["v0000"]

    # the events in effect count too: after the deletion lands (encoder kept), a request that
    # erases nothing from the encoder sees one history fewer
    monkeypatch.undo()
    apply_events(run, [(None, deletion)], solver=FAST)
    monkeypatch.setattr(unlearn, "version_item_encoder", lambda *_: widened(rows - 1))
    monkeypatch.setattr(unlearn, "_compute", lambda *_, **__: pytest.fail("the update was computed"))
    label = Event("e2", "correct_label", user, item=sequences[user][0], label="No")
    with pytest.raises(RecEraserError, match=f"this run has {rows - 1};"):
        apply_events(run, [(None, label)], solver=FAST, item_encoder="retrain")
    assert Registry(run).versions() == ["v0000", "v0001"]
