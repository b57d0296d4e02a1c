"""The command line: JSON contracts and one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rec_eraser.cli import app

runner = CliRunner()


def test_bench_solvers_json_schema():
    result = runner.invoke(app, ["bench", "solvers", "--json", "--methods", "cg,sqp", "--n-train", "16"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["p"] == 2048 and data["grad_seconds"] > 0 and data["hvp_seconds"] > 0
    assert set(data["solvers"]) == {"cg", "sqp"}
    for row in data["solvers"].values():
        assert set(row) >= {"relative_error", "relative_residual", "hvps", "seconds"}
        assert row["relative_error"] < 1e-2 and row["hvps"] > 0


def test_unknown_benchmark_is_one_line_error():
    result = runner.invoke(app, ["bench", "nonsense"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown benchmark" in result.stderr


def test_unknown_solver_is_one_line_error():
    result = runner.invoke(app, ["bench", "solvers", "--methods", "newton"])
    assert result.exit_code == 1 and "unknown solver" in result.stderr


def test_demo_quick_json_contract_and_cached_rerun(tmp_path, tiny_model_dir):
    run = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(run), "--base-model", str(tiny_model_dir), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for name in ("original", "unlearned", "retrained"):
        assert set(data[name]["metrics"]) >= {"hit@1", "valid_ratio", "forgotten_loss", "unseen_loss"} and data[name]["seconds"] >= 0
        assert 0 <= data[name]["metrics"]["hit@1"] <= 1
    assert len(data["forgotten_users"]) == 3 and data["forgotten_instances"] > 0
    assert data["unlearned"]["version"] == "v0001" and data["retrained"]["version"] == "retrained-v0001"
    assert data["unlearned"]["metrics"]["forgotten_loss"] != data["original"]["metrics"]["forgotten_loss"]
    record = json.loads((run / "v0001" / "manifest.json").read_text())
    assert {e["user"] for e in record["events"] if e["type"] == "delete_user"} == set(data["forgotten_users"])
    again = runner.invoke(app, args)  # everything cached: the same versions, no new one
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["unlearned"]["version"] == "v0001" and sorted(p.name for p in run.glob("v0*")) == ["v0000", "v0001"]


def test_prepare_json_and_refusal_to_overwrite(tmp_path):
    run = tmp_path / "run"
    args = ["prepare", "--dataset", "ml-100k", "--task", "tallrec", "--out", str(run), "--max-users", "5", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"users", "items", "interactions", "train", "valid", "test", "data_hash"}
    assert data["users"] == 5 and data["valid"] == 5 and data["test"] == 5
    before = (run / "manifest.json").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "not an empty folder" in again.stderr
    assert (run / "manifest.json").read_bytes() == before


def test_prepare_unknown_dataset_is_one_line_error(tmp_path):
    result = runner.invoke(app, ["prepare", "--dataset", "nope", "--task", "llara", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and not (tmp_path / "r").exists()
