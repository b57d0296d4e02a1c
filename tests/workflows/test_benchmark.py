"""``rec-eraser bench RECIPE``: the JSON, the report and each method's mechanics, on a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rec_eraser.cli import app
from rec_eraser.workflows.benchmark import METHODS, sisa_shards

SMALL = """
[experiment]
task = "{task}"
edit = "{edit}"
fraction = {fraction}
max_users = 8
eval_prompts = 5
sample_size = 4
sqp_hvp_budget = 2
sisa_shards = 2
baseline_steps = 2
retain_sample = 4

[train]
max_train = 12

[model]
base_model = "{model}"
"""


def write_recipe(tmp_path: Path, model: Path, task: str, edit: str, fraction: float) -> Path:
    path = tmp_path / f"tiny-{task}-{edit}.toml"
    path.write_text(SMALL.format(task=task, edit=edit, fraction=fraction, model=model))
    return path


@pytest.fixture(scope="module")
def ir_bench(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("bench")
    recipe = write_recipe(tmp, tiny_model_dir, "tallrec", "ir", 0.3)
    out = tmp / "out"
    result = CliRunner().invoke(app, ["bench", str(recipe), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def test_the_json_has_every_method_with_metrics_seconds_and_ratio(ir_bench):
    data, _ = ir_bench
    assert set(data["methods"]) == set(METHODS) - {"finetune"}  # finetune corrects; ir has nothing to correct
    for name, row in data["methods"].items():
        assert {"metrics", "seconds", "ratio_to_retrain"} <= set(row), name
        assert row["seconds"] > 0
        m = row["metrics"]
        assert 0 <= m["auc"] <= 1 and 0 <= m["membership_auc"] <= 1
        assert m["forget_loss"] > 0 and m["unseen_loss"] > 0
    assert data["methods"]["retrain"]["ratio_to_retrain"] == 1.0
    assert data["methods"]["retrain"]["metrics"]["agreement_with_retrain"] == pytest.approx(1.0)
    assert data["methods"]["rec_eraser"]["notes"].startswith("v0001; fisher")
    assert data["methods"]["reference_recipe"]["hvps"] >= 20  # its 20 mini-batch steps
    (spread,) = data["retrain_spread"].values()
    assert -1 <= spread["agreement_with_retrain"] <= 1
    assert data["forget_instances"] > 0 and data["edited_train_instances"] == data["train_instances"] - data["forget_instances"]


def test_the_rec_eraser_row_is_the_registry_version_the_workflow_wrote(ir_bench):
    data, out = ir_bench
    ledger = [json.loads(line) for line in (out / "run" / "ledger.jsonl").read_text().splitlines()]
    assert [row["version"] for row in ledger if row["action"] == "apply"] == ["v0001"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == data["events"] and all(e["type"] == "delete_user" for e in events)


def test_sisa_retrains_only_the_shards_that_held_forgotten_users(ir_bench):
    data, out = ir_bench
    from rec_eraser.workflows.registry import Registry

    trained = Registry(out / "run").training_set("v0000")
    shard_of = sisa_shards([z.user for z in trained], 2, seed=0)
    deleted = {json.loads(line)["user"] for line in (out / "events.jsonl").read_text().splitlines()}
    touched = {shard_of[u] for u in deleted if u in shard_of}
    edited = {int(p.name.split("shard")[1].split("-")[0]) for p in (out / "run").glob("bench-sisa-2-shard*-edited")}
    assert edited == touched
    untouched = {int(p.name.split("shard")[1]) for p in (out / "run").glob("bench-sisa-2-shard*") if not p.name.endswith("-edited")}
    assert untouched >= set(range(2)) - touched
    assert f"{len(touched)} retrained" in data["methods"]["sisa"]["notes"]


def test_the_report_folder_holds_the_table_the_csv_and_the_plots(ir_bench):
    data, out = ir_bench
    report = out / "report"
    for name in ("report.md", "results.csv", "result.json", "utility_vs_cost.png", "closeness.png"):
        assert (report / name).stat().st_size > 0, name
    table = (report / "report.md").read_text()
    assert all(f"| {name} |" in table for name in data["methods"])
    lines = (report / "results.csv").read_text().splitlines()
    assert lines[0].startswith("method,utility,utility_gap") and len(lines) == 1 + 1 + len(data["methods"]) + 1


def test_a_second_run_reuses_the_trained_adapters(ir_bench, tiny_model_dir):
    data, out = ir_bench
    stamps = {p.name: (p / "manifest.json").stat().st_mtime for p in (out / "run").glob("bench-*")}
    result = CliRunner().invoke(app, ["bench", data["recipe"], "--out", str(out), "--methods", "retrain,sisa", "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert set(again["methods"]) == {"retrain", "sisa"}
    assert again["methods"]["retrain"]["metrics"]["auc"] == data["methods"]["retrain"]["metrics"]["auc"]
    assert {p.name: (p / "manifest.json").stat().st_mtime for p in (out / "run").glob("bench-*")} == stamps


def test_a_correction_benchmark_reports_recovery_and_finetunes(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, "tallrec", "rc", 0.3)
    result = CliRunner().invoke(app, ["bench", str(recipe), "--out", str(tmp_path / "out"), "--methods", "retrain,finetune,rec_eraser", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["corrected_instances"] > 0
    for name in ("finetune", "rec_eraser"):
        m = data["methods"][name]["metrics"]
        assert "recovery" in m and "recovery_corrected_loss" in m and m["corrected_loss"] > 0


def test_bad_recipes_and_methods_get_one_line_and_exit_1(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment]\nedit = 'forget-everything'\n")
    result = CliRunner().invoke(app, ["bench", str(bad)])
    assert result.exit_code == 1 and "edit must be one of" in result.output
    recipe = write_recipe(tmp_path, tiny_model_dir, "tallrec", "ir", 0.3)
    result = CliRunner().invoke(app, ["bench", str(recipe), "--methods", "magic"])
    assert result.exit_code == 1 and "unknown method 'magic'" in result.output
    result = CliRunner().invoke(app, ["bench", "nonsense"])
    assert result.exit_code == 2


def test_scaling_measures_update_and_retraining_at_each_size(tmp_path, tiny_model_dir):
    from rec_eraser.workflows.scaling import run_scaling

    result = run_scaling([6, 12], out=tmp_path / "scaling", base_model=tiny_model_dir, sample_size=4, max_users=8)
    assert [row["n"] for row in result["sizes"]] == [6, 12]
    for row in result["sizes"]:
        assert row["forgotten_instances"] >= 1 and row["retrain_seconds"] > 0 and row["update_seconds"] > 0
        assert row["update_to_retrain"] == row["update_seconds"] / row["retrain_seconds"]
    with pytest.raises(ValueError, match="at least two sizes"):
        run_scaling([6], out=tmp_path / "x")
