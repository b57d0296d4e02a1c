"""``rec-eraser suggest-noise``: a ranking of the training interactions, its events file, its precision against known noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rec_eraser.cli import app
from rec_eraser.core import EmpiricalFisher, InfluenceEngine
from rec_eraser.core.curvature import deterministic_mode
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.model import rec_loss
from rec_eraser.training.train import load_version
from rec_eraser.workflows import Registry
from rec_eraser.workflows.noise import interactions_of, precision_recall, self_influence
from rec_eraser.workflows.unlearn import DEFAULT_SOLVER

runner = CliRunner()


def test_precision_and_recall_at_k_count_the_reachable_noise():
    ranking = [("u", "a"), ("u", "b"), ("v", "c"), ("v", "d")]
    truth = {("u", "b"), ("v", "d"), ("w", "never-trained")}  # the last is not among the ranked pairs
    figures = precision_recall(ranking, truth, [1, 2, 4])
    assert figures["1"] == {"precision": 0.0, "recall": 0.0}
    assert figures["2"] == {"precision": 0.5, "recall": 0.5}
    assert figures["4"] == {"precision": 0.5, "recall": 1.0}


def test_self_influence_equals_a_dense_leave_one_out_solve(trained):
    # 6 instances, fewer than the Fisher's 64-instance sample: every one is in the sample, and is
    # scored against the Fisher of the other five (plus the damping the rule picks for all six)
    loaded = load_version(trained, "v0000")
    training_set = Registry(trained).training_set("v0000")[:6]
    values = self_influence(loaded, training_set, lambda _m: None)
    encoded = [encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length) for z in training_set]
    engine = InfluenceEngine(loaded.model, rec_loss(), encoded, collate, curvature="ggn", solver=DEFAULT_SOLVER)
    with deterministic_mode(loaded.model):
        fisher = EmpiricalFisher.from_samples(loaded.model, rec_loss(), engine.space, encoded, collate)
    damping, _, _ = engine.fisher_damping(fisher)
    g, m = fisher.gradients, fisher.size
    expected = []
    for i in range(m):
        others = torch.cat([g[:i], g[i + 1 :]])
        dense = others.T @ others / m + float(damping) * torch.eye(g.shape[1], dtype=torch.float64)
        expected.append(float(g[i] @ torch.linalg.solve(dense, g[i])))
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert (values > 0).all()


def test_suggested_removals_apply_cleanly_and_are_measured_against_known_noise(run, tmp_path):
    training_set = Registry(run).training_set("v0000")
    pairs = sorted(interactions_of(training_set))
    noisy = pairs[:3]
    truth = tmp_path / "truth.jsonl"
    truth.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "type": "remove_interactions", "user": u, "items": [item]}) + "\n"
            for i, (u, item) in enumerate(noisy)
        )
    )
    out = tmp_path / "suggested.jsonl"
    result = runner.invoke(
        app,
        [
            "suggest-noise",
            str(run),
            "--top",
            "5",
            "--score",
            "loss",
            "--out",
            str(out),
            "--truth",
            str(truth),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert len(body["suggested"]) == 5 and body["interactions"] == len(pairs)
    scores = [s["score"] for s in body["suggested"]]
    assert scores == sorted(scores, reverse=True)
    # every ranking is measured, the random one included, against the 3 reachable noisy pairs
    assert body["truth"]["noisy_interactions"] == 3 and set(body["truth"]) >= {
        "loss",
        "self_influence",
        "leave_out",
        "random",
    }
    assert body["truth"]["base_rate"] == pytest.approx(3 / len(pairs))
    for name in ("loss", "self_influence", "leave_out", "random"):
        for k, figures in body["truth"][name].items():  # hits counted once: precision and recall agree
            assert figures["precision"] * int(k) == pytest.approx(figures["recall"] * 3)
            assert figures["recall"] == 1.0 or int(k) < len(pairs)
    assert sum(len(e["items"]) for e in body["events"]) == 5
    applied = runner.invoke(app, ["apply-events", str(run), str(out), "--sample-size", "8", "--json"])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["version"] == "v0001"


def test_suggested_label_corrections_flip_the_target_labels(run, tmp_path):
    out = tmp_path / "corrections.jsonl"
    result = runner.invoke(
        app, ["suggest-noise", str(run), "--top", "20", "--score", "loss", "--correct", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    targets = {(z.user, z.target_item): z.label for z in Registry(run).training_set("v0000")}
    assert events and all(e["type"] == "correct_label" for e in events)
    assert all(e["label"] == ("No" if targets[(e["user"], e["item"])] else "Yes") for e in events)
    assert runner.invoke(app, ["apply-events", str(run), str(out), "--sample-size", "8"]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--score", "magic"], "unknown score 'magic'"), (["--version", "v0042"], "no adapter version 'v0042'")],
)
def test_bad_requests_get_one_line(run, args, message):
    result = runner.invoke(app, ["suggest-noise", str(run), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_leave_out_is_the_mean_loss_fall_of_the_instances_whose_history_holds_the_item(trained):
    from rec_eraser.tasks.rewrite import PromptContext, without_items
    from rec_eraser.training.scoring import instance_losses
    from rec_eraser.training.train import load_version
    from rec_eraser.workflows.noise import leave_out

    training_set = Registry(trained).training_set("v0000")
    loaded = load_version(trained, "v0000")
    ctx = PromptContext.of_run(trained)
    falls = leave_out(loaded, training_set, ctx, lambda _m: None)
    user, item = next(iter(sorted(falls)))
    holders = [z for z in training_set if z.user == user and item in {s.item for s in z.interactions[:-1]}]
    holders = [z for z in holders if z.target_item != item]
    before = instance_losses(loaded, holders)
    after = instance_losses(loaded, [without_items(z, {item}, ctx) for z in holders])
    assert holders and falls[(user, item)] == pytest.approx(float((before - after).mean()), rel=1e-5, abs=1e-7)
    # a pair that is only ever a target has no history to leave it out of
    only_targets = {(z.user, z.target_item) for z in training_set} - {
        (z.user, s.item) for z in training_set for s in z.interactions[:-1]
    }
    assert not only_targets & set(falls)
