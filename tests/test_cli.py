"""The command line: JSON contracts and one-line errors."""

from __future__ import annotations

import json

import pytest
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


def test_bench_data_size_prepares_the_first_users_of_a_synthetic_dataset(tmp_path):
    result = runner.invoke(
        app,
        ["bench", "data-size", "--interactions", "6000", "--max-users", "5", "--out", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    load, prep = data["load"], data["prepare"]
    assert load["users"] == prep["users"] == 5 and load["interactions"] == prep["interactions"]
    # every kept user has >= 2 interactions; each but the first is a target (train, valid or test)
    assert prep["instances"] == prep["interactions"] - prep["users"]
    assert data["every_user_estimate"]["instances"] == 6000 - 42  # ML-20M's ratio: 42 users for 6,000
    assert list(tmp_path.iterdir()) == []  # the synthetic files and the run are removed
    from rec_eraser.workflows.data_scale import markdown

    assert f"| {prep['instances']:,} |" in markdown(data)
    every = runner.invoke(app, ["bench", "data-size", "--interactions", "2000", "--max-users", "0", "--json"])
    assert every.exit_code == 0, every.output
    whole = json.loads(every.stdout)  # 0: every user (14 for 2,000 interactions at ML-20M's ratio)
    assert whole["max_users"] is None and whole["prepare"]["users"] == 14
    assert whole["prepare"]["instances"] == whole["every_user_estimate"]["instances"] == 2000 - 14


def test_unknown_benchmark_is_one_line_error():
    result = runner.invoke(app, ["bench", "nonsense"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown benchmark" in result.stderr


def test_python_dash_m_runs_the_same_command():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "rec_eraser.cli", "bench", "nonsense"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "unknown benchmark 'nonsense'" in done.stderr


def test_unknown_solver_is_one_line_error():
    result = runner.invoke(app, ["bench", "solvers", "--methods", "newton"])
    assert result.exit_code == 1 and "unknown solver" in result.stderr


def test_demo_quick_json_contract_and_cached_rerun(tmp_path, tiny_model_dir):
    from rec_eraser.workflows.demo import render_markdown

    run = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(run), "--base-model", str(tiny_model_dir), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["task"], data["main_metric"], data["baseline"]["name"]) == ("tallrec", "auc", "like_rate")
    for name in ("original", "unlearned", "retrained"):
        metrics = data[name]["metrics"]
        assert set(metrics) >= {"auc", "agreement_with_retrained", "forgotten_loss", "unseen_loss", "membership_auc"}
        assert 0 <= metrics["auc"] <= 1 and data[name]["seconds"] >= 0
    assert data["retrained"]["metrics"]["agreement_with_retrained"] == pytest.approx(1.0)
    assert len(data["forgotten_users"]) == 3 and data["forgotten_instances"] > 0
    assert data["unlearned"]["version"] == "v0001" and data["retrained"]["version"] == "retrained-v0001"
    assert data["unlearned"]["metrics"]["forgotten_loss"] != data["original"]["metrics"]["forgotten_loss"]
    record = json.loads((run / "v0001" / "manifest.json").read_text())
    assert {e["user"] for e in record["events"] if e["type"] == "delete_user"} == set(data["forgotten_users"])
    # progress went to the log too (no terminal here), training steps included
    log = (run / "demo.log").read_text()
    assert "training v0000: step" in log and "retraining: step" in log and "evaluating retrained-v0001" in log
    # the rendered table and sentences come from the result's figures
    text = render_markdown(data)
    assert f"| original (v0000) | {data['original']['metrics']['auc']:.3f} |" in text
    assert f"the update moved it to {data['unlearned']['metrics']['forgotten_loss']:.3f}" in text

    again = runner.invoke(app, args[:-1])  # everything cached: the same versions, no new one; the table as text
    assert again.exit_code == 0, again.output
    assert "| retrained from scratch (oracle) |" in again.stdout and "Forgetting: retraining moved" in again.stdout
    assert sorted(p.name for p in run.glob("v0*")) == ["v0000", "v0001"]


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


#: exception classes that are not a user's to fix: internal signals and the engine's
#: refusal of a model it cannot capture (a programming error of the caller)
NOT_USER_ERRORS = {"UnknownItemError", "UnsupportedCurvatureError", "_IncompleteCapture"}


def test_every_error_class_of_the_package_has_the_common_base():
    import importlib
    import inspect
    import pkgutil

    import rec_eraser
    from rec_eraser.cli import USER_ERRORS
    from rec_eraser.errors import RecEraserError

    found = {}
    for info in pkgutil.walk_packages(rec_eraser.__path__, "rec_eraser."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        found.update(
            {
                name: obj
                for name, obj in vars(module).items()
                if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == module.__name__
            }
        )
    assert {"DatasetError", "RegistryError", "SolverError", "TrainingDiverged"} <= set(
        found
    )  # the walk saw the package
    for name, error in found.items():
        if name not in NOT_USER_ERRORS:
            assert issubclass(error, RecEraserError) and issubclass(error, USER_ERRORS), name
    # each keeps the builtin it stood for, so callers' existing except clauses still work
    assert issubclass(found["DatasetError"], ValueError) and issubclass(found["RegistryError"], RuntimeError)
    assert issubclass(found["TrainingDiverged"], FloatingPointError)


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import rec_eraser.workflows.demo as demo
    from rec_eraser.workflows import RegistryError

    def refused(*_args, **_kwargs):
        raise RegistryError("another job holds\nthe run")

    monkeypatch.setattr(demo, "run_demo", refused)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and result.stderr == "error: another job holds the run\n"

    def bug(*_args, **_kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(demo, "run_demo", bug)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert isinstance(result.exception, KeyError)


def test_the_unlearning_options_default_to_the_library_default_solver():
    from rec_eraser.cli.unlearn import BATCH_OPT, SAMPLE_OPT, SOLVER_OPT, _solver
    from rec_eraser.workflows.unlearn import DEFAULT_SOLVER

    built = _solver(SOLVER_OPT.default, SAMPLE_OPT.default, BATCH_OPT.default)
    assert built == DEFAULT_SOLVER
    from rec_eraser.cli.unlearn import REUSE_OPT
    from rec_eraser.workflows.curvature_cache import DEFAULT_CACHE

    assert REUSE_OPT.default == DEFAULT_CACHE.enabled


def test_the_calibration_target_option_defaults_to_the_library_default_and_refuses_unknown_targets(tmp_path):
    from rec_eraser.cli.unlearn import CALIBRATION_TARGET_OPT
    from rec_eraser.workflows.unlearn import DEFAULT_CALIBRATION

    assert CALIBRATION_TARGET_OPT.default == DEFAULT_CALIBRATION.target
    result = CliRunner().invoke(
        app, ["forget-user", str(tmp_path / "no-run"), "--user", "1", "--calibration-target", "retrain"]
    )
    assert result.exit_code == 2 and "unknown calibration target 'retrain'" in result.output


def test_the_row_weights_option_defaults_to_the_library_default_and_refuses_unknown_or_misplaced_weights(tmp_path):
    from rec_eraser.cli.unlearn import ROW_WEIGHTS_OPT
    from rec_eraser.core import SolverConfig

    assert ROW_WEIGHTS_OPT.default == SolverConfig().row_weights
    base = ["forget-user", str(tmp_path / "no-run"), "--user", "1"]
    result = CliRunner().invoke(app, [*base, "--row-weights", "heavy"])
    assert result.exit_code == 2 and "unknown row_weights 'heavy'" in result.output
    # uniform is not the default, and cg reads no row weights
    result = CliRunner().invoke(app, [*base, "--solver", "cg", "--row-weights", "uniform"])
    assert result.exit_code == 2 and "row_weights" in result.output


def test_the_item_encoder_option_defaults_to_the_library_default_and_refuses_unknown_choices(tmp_path):
    from rec_eraser.cli.unlearn import ITEM_ENCODER_OPT
    from rec_eraser.workflows.item_encoder import DEFAULT_ENCODER_CHOICE

    assert ITEM_ENCODER_OPT.default == DEFAULT_ENCODER_CHOICE
    result = CliRunner().invoke(
        app, ["forget-user", str(tmp_path / "no-run"), "--user", "1", "--item-encoder", "refit"]
    )
    assert result.exit_code == 2 and "item encoder: 'refit' is not one of keep, retrain" in result.output


def test_a_bug_ends_in_its_traceback_and_exit_code_70_and_debug_shows_a_user_errors_trace(
    tmp_path, monkeypatch, capsys
):
    import sys

    import rec_eraser.workflows.demo as demo
    from rec_eraser.cli import main
    from rec_eraser.workflows import RegistryError

    def bug(*_args, **_kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(demo, "run_demo", bug)
    monkeypatch.setattr(sys, "argv", ["rec-eraser", "demo", "--out", str(tmp_path / "d")])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 70 and "KeyError: 'a bug'" in capsys.readouterr().err

    def refused(*_args, **_kwargs):
        raise RegistryError("no such run")

    monkeypatch.setattr(demo, "run_demo", refused)
    result = runner.invoke(app, ["--debug", "demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "Traceback" in result.stderr and result.stderr.endswith("error: no such run\n")
    plain = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert plain.stderr == "error: no such run\n"
