"""``rec-eraser bench RECIPE --sequential N``: successive deletion batches against Retrain, on a tiny Llama."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rec_eraser.cli import app
from rec_eraser.workflows.experiments import ExperimentError
from rec_eraser.workflows.registry import Registry
from rec_eraser.workflows.sequential import deletion_batches
from tests.workflows.test_benchmark import write_recipe


def test_deletion_batches_are_disjoint_seeded_and_sized_by_the_fraction():
    users = [str(u) for u in range(1, 101)]
    groups = deletion_batches(users, 10, 0.01, seed=0)
    assert [len(g) for g in groups] == [1] * 10 and len({u for g in groups for u in g}) == 10
    assert groups == deletion_batches(list(reversed(users)), 10, 0.01, seed=0)  # depends on the set, not its order
    assert deletion_batches(users, 3, 0.05, seed=1) != deletion_batches(users, 3, 0.05, seed=2)
    with pytest.raises(ExperimentError, match="need 120 users"):
        deletion_batches(users, 4, 0.3, seed=0)


def test_each_batch_is_its_own_version_and_checkpoints_compare_with_retrain(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, "tallrec", "ir", 0.3)
    out = tmp_path / "seq"
    cli = CliRunner().invoke(
        app,
        [
            "bench",
            str(recipe),
            "--tier",
            "full",
            "--sequential",
            "2",
            "--checkpoints",
            "1,2",
            "--batch-fraction",
            "0.2",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert cli.exit_code == 0, cli.output
    data = json.loads(cli.stdout)
    registry = Registry(out / "run")
    assert registry.versions() == ["v0000", "v0001", "v0002"]
    assert [r["version"] for r in data["requests"]] == ["v0001", "v0002"]
    first, second = data["checkpoints"]
    assert (first["batch"], second["batch"]) == (1, 2) and second["forget_instances"] > first["forget_instances"]
    for row in (first, second):
        assert row["train_instances"] + row["forget_instances"] == len(registry.training_set("v0000"))
        assert row["retrain"]["agreement_with_retrain"] == pytest.approx(1.0)
        assert row["retained_drift"] >= 0 and row["update_seconds"] > 0
        # every request reused v0000's gap; the version is trusted while the drift is below it
        gap = data["requests"][0]["memorisation_gap"]
        assert all(r["memorisation_gap"] == gap for r in data["requests"])
        assert row["trusted"] == ((row["retained_drift"] < gap) if gap is not None and gap > 0 else None)
    assert second["update_seconds"] == pytest.approx(sum(r["seconds"] for r in data["requests"]))
    # the benchmark's v0000 measured the gap at training: no request of the lineage paid it
    assert data["gap_seconds_at_training"] == registry.manifest("v0000")["training"]["measure_seconds"] > 0
    assert (out / "report" / "sequential.json").is_file()
    from rec_eraser.workflows.bench_report import SEQUENTIAL_COLUMNS, sequential_markdown

    text = sequential_markdown(json.loads((out / "report" / "sequential.json").read_text()))
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2 + 1 + 2  # header and two checkpoints, header and two requests
    assert all(line.count("|") == len(SEQUENTIAL_COLUMNS) + 1 for line in table[:3])
    # a second call reuses every version and Retrain
    again = CliRunner().invoke(
        app,
        [
            "bench",
            str(recipe),
            "--tier",
            "full",
            "--sequential",
            "2",
            "--checkpoints",
            "1,2",
            "--batch-fraction",
            "0.2",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert again.exit_code == 0, again.output
    assert Registry(out / "run").versions() == ["v0000", "v0001", "v0002"]


def test_a_sequential_study_needs_an_ir_recipe(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, "tallrec", "rc", 0.1)
    cli = CliRunner().invoke(
        app, ["bench", str(recipe), "--tier", "full", "--sequential", "2", "--out", str(tmp_path / "x")]
    )
    assert cli.exit_code == 1 and "needs an ir recipe" in cli.output
    assert not (tmp_path / "x").exists()  # refused before anything is written, the progress log included
