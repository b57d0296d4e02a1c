"""``rec-eraser bench RECIPE``: the JSON, the report and each method's mechanics, on a tiny Llama."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rec_eraser.cli import app
from rec_eraser.training.manifest import MANIFEST_HASH, manifest_digest
from rec_eraser.workflows.bench_methods import sisa_shards
from rec_eraser.workflows.benchmark import METHODS
from rec_eraser.workflows.experiments import ExperimentError
from rec_eraser.workflows.registry import Registry
from tests.data.conftest import LASTFM_INTER, LASTFM_ITEM, STEAM_INTER, STEAM_ITEM, steam_item, write_atomic

SMALL = """
[experiment]
dataset = "{dataset}"
task = "{task}"
edit = "{edit}"
fraction = {fraction}
{extra}max_users = 8
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


def write_recipe(
    tmp_path: Path, model: Path, task: str, edit: str, fraction: float, dataset: str = "ml-100k", extra: str = ""
) -> Path:
    """A tiny benchmark recipe; ``extra``: more ``[experiment]`` lines."""
    path = tmp_path / f"tiny-{task}-{edit}.toml"
    path.write_text(SMALL.format(task=task, edit=edit, fraction=fraction, model=model, dataset=dataset, extra=extra))
    return path


@pytest.fixture(scope="module")
def ir_bench(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("bench")
    recipe = write_recipe(tmp, tiny_model_dir, "tallrec", "ir", 0.3)
    out = tmp / "out"
    # the Gauss–Newton rows cost minutes on the tiny model's 49k-token vocabulary: they run in the slow test below
    result = CliRunner().invoke(
        app, ["bench", str(recipe), "--out", str(out), "--methods", ",".join(FAST_METHODS), "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


FAST_METHODS = [m for m in METHODS if m not in ("rec_eraser_cg", "rec_eraser_sqp", "reference_recipe", "finetune")]


@pytest.mark.slow
def test_every_method_including_the_gauss_newton_rows(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, "tallrec", "ir", 0.3)
    result = CliRunner().invoke(app, ["bench", str(recipe), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["methods"]) == set(METHODS) - {"finetune"}  # finetune corrects; ir has nothing to correct
    assert data["methods"]["reference_recipe"]["hvps"] >= 20  # its 20 mini-batch steps
    assert "low-rank preconditioner" in data["methods"]["rec_eraser_cg"]["notes"]  # whether it was built, and when
    for name in ("rec_eraser_cg", "rec_eraser_sqp", "reference_recipe"):
        assert "automatic" in data["methods"][name]["notes"] or "tr(C^2)/tr(C)" in data["methods"][name]["notes"]


def test_the_json_has_every_method_with_metrics_seconds_and_ratio(ir_bench):
    data, _ = ir_bench
    assert set(data["methods"]) == set(FAST_METHODS)
    assert data["experiment"]["methods"] == FAST_METHODS  # what ran, not the recipe's default set
    for name, row in data["methods"].items():
        assert {"metrics", "seconds", "ratio_to_retrain"} <= set(row), name
        assert row["seconds"] > 0
        m = row["metrics"]
        assert 0 <= m["auc"] <= 1 and 0 <= m["membership_auc"] <= 1
        assert m["forget_loss"] > 0 and m["unseen_loss"] > 0
    assert data["methods"]["retrain"]["ratio_to_retrain"] == 1.0
    assert data["methods"]["retrain"]["metrics"]["agreement_with_retrain"] == pytest.approx(1.0)
    assert data["methods"]["rec_eraser"]["notes"].startswith("v0001; fisher")
    (spread,) = data["retrain_spread"].values()
    assert -1 <= spread["agreement_with_retrain"] <= 1
    assert (
        data["forget_instances"] > 0
        and data["edited_train_instances"] == data["train_instances"] - data["forget_instances"]
    )


def test_progress_goes_to_the_study_log_even_under_json(ir_bench):
    _, out = ir_bench
    lines = (out / "bench.log").read_text().splitlines()
    stamped = [line.split(" ", 1) for line in lines]
    assert all(datetime.fromisoformat(stamp) for stamp, _ in stamped)  # each message carries its time
    messages = [message for _, message in stamped]
    assert messages[0].startswith("preparing ml-100k") and "measuring the original adapter" in messages
    assert [m for m in messages if m.startswith("method ")] == [f"method {name}" for name in FAST_METHODS]


def test_the_json_says_whether_the_run_can_judge_and_which_targets_each_method_meets(ir_bench):
    data, out = ir_bench
    judge = data["can_judge"]
    assert set(judge) == {
        "beats_baselines",
        "memorised",
        "retrain_moves_target",
        "test_prompts",
        "verdict",
        "can_judge_fidelity",
    }
    assert judge["test_prompts"] == {"n": 5, "minimum": 200, "verdict": False} and judge["verdict"] is False
    mem = judge["memorised"]
    assert mem["gap"] == pytest.approx(mem["untrained_loss"] - mem["trained_loss"]) and mem["trained_instances"] >= 2
    assert judge["retrain_moves_target"]["retrain_seed0"] == data["methods"]["retrain"]["metrics"]["forget_loss"]
    for row in data["methods"].values():
        assert set(row["targets"]) == {
            "target_figure",
            "agreement",
            "utility_gap",
            "membership_auc",
            "cost",
            "met",
            "of",
        }
    assert data["methods"]["retrain"]["targets"]["target_figure"]["met"]  # Retrain lies in its own seeds' interval
    # the default update is calibrated; the fixed rule is its own row, computed from v0000 in memory
    assert (
        "calibration: memorisation gap" in data["methods"]["rec_eraser"]["notes"]
        and "rec_eraser_rule" in data["methods"]
    )
    # the "edited" target, computed in memory from v0000 (no version written for it; this
    # tiny adapter memorised nothing, so it takes the smallest step, as the default does)
    edited = data["methods"]["rec_eraser_edited"]
    assert edited["notes"].startswith("in memory") and "calibration: memorisation gap" in edited["notes"]
    assert edited["metrics"]["forget_loss"] is not None
    assert Registry(out / "run").versions() == ["v0000", "v0001"]
    # the request reused v0000's gap, the very figure can_judge prints (measured once, outside the row's seconds)
    record = json.loads((out / "run" / "v0001" / "manifest.json").read_text())
    cal = record["metrics"]["calibration"]
    assert (
        cal["memorisation_gap"] == {k: v for k, v in mem.items() if k != "verdict"} and cal["reference_seconds"] == 0.0
    )
    assert "reused by every request on the lineage" in data["methods"]["rec_eraser"]["notes"]
    text = (out / "report" / "report.md").read_text()
    assert "Can this run judge the methods?" in text and "Targets against Retrain" in text


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
    untouched = {
        int(p.name.split("shard")[1])
        for p in (out / "run").glob("bench-sisa-2-shard*")
        if not p.name.endswith("-edited")
    }
    assert untouched >= set(range(2)) - touched
    assert f"{len(touched)} retrained" in data["methods"]["sisa"]["notes"]
    # each retrained shard learnt exactly its users' remaining instances; forgetting cost only those trainings
    from rec_eraser.training.versions import instance_ids_hash

    seconds = 0.0
    for shard in touched:
        record = json.loads((out / "run" / f"bench-sisa-2-shard{shard}-edited" / "manifest.json").read_text())
        expected = [z for z in trained if shard_of[z.user] == shard and z.user not in deleted]
        assert record["train_ids_sha256"] == instance_ids_hash(expected)
        seconds += record["training"]["seconds"]
    assert data["methods"]["sisa"]["seconds"] == pytest.approx(seconds)


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
    result = CliRunner().invoke(
        app, ["bench", data["recipe"], "--out", str(out), "--methods", "retrain,sisa", "--json"]
    )
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert set(again["methods"]) == {"retrain", "sisa"}
    assert again["methods"]["retrain"]["metrics"]["auc"] == data["methods"]["retrain"]["metrics"]["auc"]
    assert {p.name: (p / "manifest.json").stat().st_mtime for p in (out / "run").glob("bench-*")} == stamps


def test_a_registered_method_runs_by_name_with_no_other_change(ir_bench):
    from rec_eraser.training.train import load_version
    from rec_eraser.workflows.bench_methods import BENCH_METHODS, register_method
    from rec_eraser.workflows.study import observe

    data, out = ir_bench
    seen = []

    def do_nothing(call):  # the original adapter as an "unlearning method": its figures must equal the original's
        seen.append(call.version)
        return observe(call.ctx, load_version(call.ctx.run, "v0000"), 0.0, notes="did nothing")

    register_method("do_nothing", do_nothing)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_method("do_nothing", do_nothing)
        result = CliRunner().invoke(
            app, ["bench", data["recipe"], "--out", str(out), "--methods", "retrain,do_nothing", "--json"]
        )
        assert result.exit_code == 0, result.output
        again = json.loads(result.stdout)
    finally:
        del BENCH_METHODS["do_nothing"]
    assert seen == [data["unlearned_version"]]
    row = again["methods"]["do_nothing"]
    assert row["notes"] == "did nothing" and row["seconds"] == 0.0
    assert row["metrics"]["forget_loss"] == pytest.approx(again["original"]["metrics"]["forget_loss"])
    assert row["metrics"]["auc"] == pytest.approx(again["original"]["metrics"]["auc"])


def test_a_correction_benchmark_reports_recovery_and_finetunes(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, "tallrec", "rc", 0.3)
    result = CliRunner().invoke(
        app,
        ["bench", str(recipe), "--out", str(tmp_path / "out"), "--methods", "retrain,finetune,rec_eraser", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["corrected_instances"] > 0
    for name in ("finetune", "rec_eraser"):
        m = data["methods"][name]["metrics"]
        assert "recovery" in m and "recovery_corrected_loss" in m and m["corrected_loss"] > 0
    # Retrain recovers all of what Retrain recovers, by definition (None only where it changed nothing)
    assert data["methods"]["retrain"]["metrics"]["recovery_corrected_loss"] == pytest.approx(1.0)
    # finetune descends on the corrected forms: their loss falls
    assert data["methods"]["finetune"]["metrics"]["corrected_loss"] < data["original"]["metrics"]["corrected_loss"]


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


def test_a_tier_names_its_default_methods_and_the_command_line_overrides_them(tmp_path, tiny_model_dir):
    from rec_eraser.training.recipe import RecipeError
    from rec_eraser.workflows.benchmark import chosen_methods
    from rec_eraser.workflows.experiments import load_experiment

    recipe = write_recipe(tmp_path, tiny_model_dir, "tallrec", "ir", 0.3)
    recipe.write_text(recipe.read_text() + '\n[medium]\nmethods = ["retrain", "rec_eraser", "finetune"]\n')
    medium, _ = load_experiment(recipe, "medium")
    full, _ = load_experiment(recipe, "full")
    assert medium.methods == ("retrain", "rec_eraser", "finetune") and full.methods is None
    assert chosen_methods(medium) == ["retrain", "rec_eraser"]  # finetune corrects, an IR run has nothing to correct
    assert chosen_methods(medium, ["npo"]) == ["npo"]
    assert chosen_methods(full) == [m for m in METHODS if m != "finetune"]
    with pytest.raises(ExperimentError, match="unknown method 'magic'"):
        chosen_methods(medium, ["magic"])
    recipe.write_text(recipe.read_text().replace('"finetune"]', '"magic"]'))
    with pytest.raises(RecipeError, match="unknown method 'magic' in methods"):
        load_experiment(recipe, "medium")  # refused when the recipe is read, before any training
    recipe.write_text(recipe.read_text().replace('methods = ["retrain", "rec_eraser", "magic"]', 'methods = "retrain"'))
    with pytest.raises(RecipeError, match="methods must be a list"):
        load_experiment(recipe, "medium")
    recipe.write_text(recipe.read_text().replace('methods = "retrain"', "methods = []"))
    result = CliRunner().invoke(app, ["bench", str(recipe), "--tier", "medium"])
    assert result.exit_code == 1 and "methods must name at least one method" in result.output


def test_scaling_measures_update_and_retraining_at_each_size(tmp_path, tiny_model_dir):
    from rec_eraser.workflows.scaling import run_scaling

    result = run_scaling([6, 12], out=tmp_path / "scaling", base_model=tiny_model_dir, sample_size=4, max_users=8)
    assert [row["n"] for row in result["sizes"]] == [6, 12] and result["skipped"] == []
    for row in result["sizes"]:
        first = row["first_request"]
        assert row["forgotten_instances"] >= 1 and row["retrain_seconds"] > 0 and row["update_seconds"] > 0
        assert row["ratio_to_retrain"] == pytest.approx(row["update_seconds"] / row["retrain_seconds"])
        assert row["ratio_to_floor"] == pytest.approx(row["update_seconds"] / row["floor_seconds"])
        # the first request built the rows; the second found them in the cache
        assert first["cache"] == "no cache" and first["rows_reused"] == 0 and row["cache"] != "no cache"
        assert row["update_gradients"] > 0 and first["user"] != row.get("user")
    assert result["ratio_to_retrain_at_largest"] == result["sizes"][-1]["ratio_to_retrain"]
    assert set(result["fit"]) == {"retrain", "update"} and result["fit"]["retrain"]["a"] > 0
    from rec_eraser.workflows.bench_report import scaling_markdown

    table = scaling_markdown(result)
    assert table.count("\n| ") == len(result["sizes"]) and "retrain: seconds ≈" in table  # one line per size
    # the runs are ordinary registries: each size holds its trained and its two unlearned versions
    from rec_eraser.workflows.registry import Registry

    assert [Registry(tmp_path / "scaling" / f"n{n}").versions() for n in (6, 12)] == [["v0000", "v0001", "v0002"]] * 2
    # a size projected past the cap is skipped, not extrapolated into the table; the cap is relative to the
    # machine's own speed (n = 12's training): 10,000 instances project to ~800 times it, 12 to ~2 times n = 6's
    cap = 50 * result["sizes"][-1]["retrain_seconds"]
    capped = run_scaling(
        [6, 12, 10_000],
        out=tmp_path / "scaling",
        base_model=tiny_model_dir,
        sample_size=4,
        max_users=8,
        cap_seconds=cap,
    )
    assert [row["n"] for row in capped["sizes"]] == [6, 12] and [s["n"] for s in capped["skipped"]] == [10_000]
    with pytest.raises(ExperimentError, match="at least two distinct sizes"):
        run_scaling([6], out=tmp_path / "x")
    with pytest.raises(
        ExperimentError, match="another recipe"
    ):  # a cached size trained on another base model is not reused
        run_scaling([6, 12], out=tmp_path / "scaling", sample_size=4, max_users=8)


def test_power_law_fit_recovers_its_exponent():
    from rec_eraser.workflows.scaling import power_law

    fit = power_law([64, 512, 4096], [3.0 * n**1.0 for n in (64, 512, 4096)])
    assert fit["a"] == pytest.approx(3.0) and fit["b"] == pytest.approx(1.0)
    assert power_law([64], [1.0]) is None


def test_a_run_folder_of_another_experiment_is_refused_and_stale_adapters_are_retrained(
    ir_bench, tmp_path, tiny_model_dir
):
    data, out = ir_bench
    changed = write_recipe(tmp_path, tiny_model_dir, "tallrec", "ir", 0.5)
    result = CliRunner().invoke(app, ["bench", str(changed), "--out", str(out), "--methods", "retrain"])
    assert result.exit_code == 1 and "differs in fraction" in result.output


def test_precision_overrides_the_recipe_and_a_run_folder_keeps_one(ir_bench, tmp_path):
    data, out = ir_bench
    assert data["training_recipe"]["precision"] == "float32"
    # the override is part of the recipe v0000 was trained with: the cached float32 run refuses a bfloat16 study
    result = CliRunner().invoke(
        app, ["bench", data["recipe"], "--out", str(out), "--methods", "retrain", "--precision", "bfloat16"]
    )
    assert result.exit_code == 1 and "trained with another recipe" in result.output
    result = CliRunner().invoke(
        app, ["bench", data["recipe"], "--out", str(tmp_path / "new"), "--precision", "float16", "--check"]
    )
    assert result.exit_code == 1 and "precision must be one of" in result.output and not (tmp_path / "new").exists()


def test_a_cached_adapter_trained_on_other_instances_is_trained_again(tmp_path, tiny_model_dir):
    from rec_eraser.tasks.prepare import load_instances, prepare
    from rec_eraser.training.recipe import Recipe
    from rec_eraser.training.versions import instance_ids_hash
    from rec_eraser.workflows.experiments import Experiment
    from rec_eraser.workflows.study import BenchContext, cached_adapter

    run = tmp_path / "run"
    prepare("ml-100k", "tallrec", run, max_users=4)
    train = load_instances(run, "train")
    recipe = Recipe(base_model=str(tiny_model_dir), max_train=None)
    ctx = BenchContext(
        run=run,
        experiment=Experiment(),
        recipe=recipe,
        task="tallrec",
        before=train,
        after=train,
        forget=[],
        corrected=[],
        test=[],
        titles={},
        events=[],
    )
    _, first = cached_adapter(ctx, "bench-x", recipe, train[:4], lambda _m: None, "x")
    _, again = cached_adapter(ctx, "bench-x", recipe, train[:4], lambda _m: None, "x")
    assert again["created"] == first["created"]  # reused
    _, other = cached_adapter(ctx, "bench-x", recipe, train[:3], lambda _m: None, "x")
    assert other["train_ids_sha256"] == instance_ids_hash(train[:3]) != first["train_ids_sha256"]


def test_a_llara_correction_benchmark_trains_its_item_encoder_on_the_corrupted_data(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, "llara", "rc", 0.3)
    recipe.write_text(recipe.read_text() + "item_tokens = true\nsasrec_epochs = 2\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["bench", str(recipe), "--out", str(out), "--methods", "retrain,rec_eraser", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["corrected_instances"] > 0
    for name in ("retrain", "rec_eraser"):
        m = data["methods"][name]["metrics"]
        assert 0 <= m["hit@1"] <= 1 and -1 <= m["agreement_with_retrain"] <= 1
    from rec_eraser.encoders.sasrec import ItemEncoder
    from rec_eraser.tasks.prepare import load_manifest

    replaced = {row["item"] for row in load_manifest(out / "run")["transform"]["corrupted"]}
    assert replaced <= set(ItemEncoder.load(out / "run" / "item_encoder").item_ids)


def synthetic_user_dataset(folder: Path, kind: str) -> Path:
    """10 users with 12 interactions each over 40 items, in the RecBole format of ``kind``
    (``lastfm``: no timestamps, file order; ``steam``: timestamps, no ratings)."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), t) for u in range(1, 11) for t, i in enumerate(rng.choice(40, 12, replace=False))]
    if kind == "lastfm":
        write_atomic(folder / "lastfm.inter", LASTFM_INTER, [[u, 100 + i, 10, ""] for u, i, _ in rows])
        write_atomic(folder / "lastfm.item", LASTFM_ITEM, [[100 + i, f"Artist {i}", "u", "p"] for i in range(40)])
    else:
        write_atomic(
            folder / "steam.inter",
            STEAM_INTER,
            [[u, 1.0, 1, 100 + i, "", 1514764800 + 3600 * t, "False", 1, "", ""] for u, i, t in rows],
        )
        write_atomic(folder / "steam.item", STEAM_ITEM, [steam_item(100 + i, f"Game {i}") for i in range(40)])
    return folder


@pytest.mark.parametrize("kind,edit", [("lastfm", "rc"), ("steam", "qm")])
def test_the_experiments_run_on_lastfm_and_steam_files(tmp_path, tiny_model_dir, kind, edit):
    data_dir = synthetic_user_dataset(tmp_path / kind, kind)
    recipe = write_recipe(
        tmp_path,
        tiny_model_dir,
        "llara",
        edit,
        0.5,
        dataset=str(data_dir),
        extra="injected = 6\n" if edit == "qm" else "",
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["bench", str(recipe), "--out", str(out), "--methods", "retrain,rec_eraser", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["corrected_instances"] > 0 and data["forget_instances"] >= data["corrected_instances"]
    from rec_eraser.tasks.prepare import load_manifest

    manifest = load_manifest(out / "run")
    assert manifest["dataset"]["name"] == kind and manifest["transform"]["kind"] == (
        "corrupt_targets" if edit == "rc" else "inject"
    )
    assert 0 <= data["methods"]["rec_eraser"]["metrics"]["hit@1"] <= 1


def test_profile_times_each_training_variant_on_the_benchmarks_own_run(ir_bench):
    data, out = ir_bench
    manifest = out / "run" / "v0000" / "manifest.json"
    stamp = manifest.read_bytes()
    args = ["bench", data["recipe"], "--out", str(out), "--tier", "full", "--profile", "--steps", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    rows = {row["variant"]: row for row in body["variants"]}
    from rec_eraser.workflows.training_profile import markdown

    assert markdown(body).count("\n| ") == 7  # the header and one row per variant
    assert list(rows) == [
        "eager, float32",
        "eager, bfloat16",
        "sdpa, float32",
        "sdpa, bfloat16",
        "eager, bfloat16, length-bucketed",
        "sdpa, bfloat16, length-bucketed",
    ]
    for row in rows.values():
        assert row["steps"] == 1 and row["instances"] >= 1 and row["seconds_per_instance_step"] > 0
        assert 0.0 <= row["padding_share"] < 1.0 and row["peak_mb"] >= row["step_peak_mb"] >= 0
    # the reference's own difference is zero; the fused kernel computes the same float32 maths
    assert rows["eager, float32"]["max_loss_difference"] == 0.0 and rows["eager, float32"]["speedup"] == 1.0
    assert rows["sdpa, float32"]["max_loss_difference"] < 1e-4
    # bucketing regroups the same instances, so it never pads more
    for kernel in ("eager", "sdpa"):
        bucketed = rows[f"{kernel}, bfloat16, length-bucketed"]["padding_share"]
        assert bucketed <= rows[f"{kernel}, bfloat16"]["padding_share"]
    assert manifest.read_bytes() == stamp  # the benchmark's run is read, not retrained


def test_a_version_made_with_other_solver_settings_is_not_reused(ir_bench, tmp_path, tiny_model_dir):
    data, out = ir_bench
    other = write_recipe(tmp_path, tiny_model_dir, "tallrec", "ir", 0.3, extra="retained_floor = 0.0\n")
    result = CliRunner().invoke(app, ["bench", str(other), "--out", str(out), "--methods", "retrain"])
    assert result.exit_code == 1 and "retained_floor" in result.stderr and "another version" in result.stderr
    bad = write_recipe(tmp_path, tiny_model_dir, "tallrec", "qm", 0.3, extra="retained_floor = 1.5\n")
    refused = CliRunner().invoke(app, ["bench", str(bad), "--out", str(tmp_path / "bad"), "--check"])
    assert refused.exit_code != 0 and "retained_floor must be in [0, 1]" in refused.stderr
    assert not (tmp_path / "bad" / "run").exists()  # refused before anything was prepared or trained


def test_a_cached_version_from_before_row_weights_counts_as_uniform_and_is_not_reused(ir_bench, tmp_path):
    """A v0001 whose solver config predates row_weights weighted its rows uniformly: not the
    default (auto) update, so the benchmark refuses it rather than report it as that."""
    data, out = ir_bench
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    manifest = copy / "run" / data["unlearned_version"] / "manifest.json"
    record = json.loads(manifest.read_text())
    assert record["solver"]["config"].pop("row_weights") == "auto"
    record[MANIFEST_HASH] = manifest_digest(record)  # as a version of that time sealed itself
    manifest.write_text(json.dumps(record))
    result = CliRunner().invoke(app, ["bench", data["recipe"], "--out", str(copy), "--methods", "retrain"])
    assert result.exit_code == 1 and "row_weights" in result.stderr and "another version" in result.stderr


def test_bucketed_order_sorts_each_window_by_length_and_keeps_every_index():
    from rec_eraser.training.batching import bucketed_order

    lengths = [5, 1, 4, 2, 9, 3, 8, 7]
    order = bucketed_order(lengths, batch_size=2, window_batches=2)  # windows of 4 instances
    assert order == [0, 2, 3, 1, 4, 6, 7, 5] and sorted(order) == list(range(8))  # longest first in each


def test_check_measures_the_adapter_as_the_benchmark_does_and_reuses_its_run(ir_bench):
    data, out = ir_bench
    manifest = out / "run" / "v0000" / "manifest.json"
    stamp = manifest.read_bytes()
    result = CliRunner().invoke(app, ["bench", data["recipe"], "--out", str(out), "--check", "--json"])
    judged = json.loads(result.stdout)
    assert result.exit_code == (0 if judged["verdict"] else 1), result.output
    for name in ("beats_baselines", "memorised"):  # the same figures the whole benchmark printed
        expected = data["can_judge"][name]
        assert judged[name].keys() == expected.keys()
        for key, value in expected.items():
            if key != "seconds":  # what measuring took, not a figure
                assert judged[name][key] == (pytest.approx(value) if isinstance(value, float) else value), (name, key)
    assert (
        judged["test_prompts"] == data["test_prompts"]
        and json.loads((out / "report" / "check.json").read_text())["verdict"] == judged["verdict"]
    )
    assert manifest.read_bytes() == stamp  # v0000 reused, not retrained
    result = CliRunner().invoke(app, ["bench", data["recipe"], "--check", "--sequential", "2"])
    assert result.exit_code == 2 and "contradict" in result.output
