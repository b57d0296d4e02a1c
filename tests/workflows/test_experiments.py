"""Benchmark recipes, the corruptions they train on, and the events that undo them."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from rec_eraser.data import load_dataset
from rec_eraser.data.split import chronological
from rec_eraser.tasks.prepare import first_users, load_instances, prepare
from rec_eraser.tasks.rewrite import PromptContext
from rec_eraser.training.recipe import RecipeError
from rec_eraser.workflows.experiments import TIERS, corrupt_targets, experiment_events, inject_items, load_experiment
from rec_eraser.workflows.plan import RunIndex, plan_edits

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def small():
    return first_users(load_dataset("ml-100k"), 12)


def test_every_shipped_benchmark_recipe_loads_with_its_quick_and_medium_tiers():
    paths = sorted(glob.glob(str(RECIPES / "ml100k-*-*.toml")))
    names = {Path(p).stem for p in paths}
    assert {f"ml100k-{t}-{e}" for t in ("tallrec", "llara") for e in ("ir", "qm", "rc")} <= names
    for path in paths:
        full, recipe = load_experiment(path)
        quick, quick_recipe = load_experiment(path, "quick")
        medium, medium_recipe = load_experiment(path, "medium")
        assert quick_recipe.max_train < medium_recipe.max_train and medium.eval_prompts >= 200
        assert (medium.task, medium.edit) == (full.task, full.edit)
        # the name says the experiment; a variant (a suffix after it) says what it changes
        variant = (
            "holdout" if medium_recipe.holdout_users else ("10" if full.fraction == 0.1 and full.edit == "ir" else "")
        )
        forget_set = f"-set{full.forget_seed}" if full.forget_seed is not None else ""
        bucketed = "-bucketed" if medium_recipe.length_bucketing else ""
        assert (
            Path(path).stem
            == f"ml100k-{full.task}-{full.edit}"
            + ("-" if variant == "holdout" else "")
            + variant
            + bucketed
            + forget_set
        )
        assert quick_recipe.max_train < recipe.max_train and quick.eval_prompts < full.eval_prompts
        assert (full.task, full.edit) == (quick.task, quick.edit)
        # qm's quick variant corrupts more users, more heavily: at 48 trained instances the full
        # variant's 2 items in 10% of the histories touched no trained instance at all; rc's
        # corrupts fewer targets, since one corrupted interaction changes up to 10 later prompts
        assert (
            full.fraction == quick.fraction
            or (full.edit == "qm" and quick.fraction > full.fraction)
            or (full.edit == "rc" and quick.fraction < full.fraction)
        )


@pytest.mark.parametrize(
    "text,message",
    [
        ("[train]\nlr = 1e-3\n", "needs an \\[experiment\\] section"),
        ("[experiment]\nedit = 'xx'\n", "\\[experiment\\] edit must be one of"),
        ("[experiment]\nfraction = 'a lot'\n", "\\[experiment\\] fraction must be a number, got 'a lot'"),
        ("[experiment]\nfraction = 2\n", "r.toml: recipe: \\[experiment\\] fraction must be in \\(0, 1\\), got 2"),
        ("[experiment]\n[lora]\nrank = 0\n", "r.toml: recipe: \\[lora\\] rank must be >= 1, got 0"),
        ("[experiment]\nretrain_seeds = [0, 1.5]\n", "retrain_seeds must be a list of integers"),
        ("[experiment]\nfrobnicate = 1\n", "unknown experiment setting 'frobnicate'"),
        ("[experiment]\nretrain_seeds = [0]\n", "at least two distinct seeds"),
        ("[experiment]\nretrain_seeds = [1, 1]\n", "at least two distinct seeds"),
        ("[experiment]\n[bogus]\n", "unknown section \\[bogus\\]"),
        ("[experiment]\nmethods = ['rec_eraser_reference']\n", "was renamed: the reference target is the default now"),
        ("[experiment]\nmethods = ['rec_eraser_auto']\n", "was renamed: row weights auto are the default now"),
    ],
)
def test_bad_benchmark_recipes_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_experiment(path)


@pytest.mark.parametrize(
    "setting,message",
    [
        ("max_train = 0", "\\[medium\\] max_train must be >= 1, got 0"),
        ("sample_size = 0", "\\[medium\\] sample_size must be >= 1, got 0"),
        ("dropout = 'x'", "\\[medium\\] dropout must be a number"),
    ],
)
def test_a_bad_value_set_by_a_tier_is_named_in_the_tiers_section(tmp_path, setting, message):
    """A value the [medium] section overrides is reported there, where the file holds it."""
    path = tmp_path / "r.toml"
    path.write_text(f"[experiment]\ntask = 'tallrec'\nedit = 'ir'\n[medium]\n{setting}\n")
    load_experiment(path)  # the full tier does not read [medium]
    with pytest.raises(RecipeError, match=message):
        load_experiment(path, "medium")


def test_a_bad_value_outside_the_tier_keeps_its_own_section(tmp_path):
    """seed is both an experiment and a training setting: a tier's seed goes to the experiment, so
    a bad [train] seed is still named in [train]."""
    path = tmp_path / "r.toml"
    path.write_text("[experiment]\ntask = 'tallrec'\nedit = 'ir'\n[train]\nseed = -1\n[medium]\nseed = 3\n")
    with pytest.raises(RecipeError, match="\\[train\\] seed must be >= 0, got -1"):
        load_experiment(path, "medium")


def test_a_tier_needs_its_section(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[experiment]\ntask = 'tallrec'\nedit = 'ir'\n[medium]\nmax_train = 64\n")
    load_experiment(path)
    assert load_experiment(path, "medium")[1].max_train == 64
    with pytest.raises(RecipeError, match="no \\[quick\\] section"):
        load_experiment(path, "quick")
    with pytest.raises(RecipeError, match="unknown tier"):
        load_experiment(path, "huge")


def test_injected_items_land_in_the_training_span_of_the_chosen_users(small):
    corrupted, record = inject_items(small, fraction=0.25, per_user=2, seed=0)
    rows = record["injected"]
    assert len(rows) == 2 * 3  # 25% of 12 users, 2 items each
    sequences = chronological(corrupted.interactions)
    before = chronological(small.interactions)
    for row in rows:
        seq = sequences[row["user"]]
        position = [x.line for x in seq].index(row["line"])
        assert 1 <= position < len(seq) - 2  # a training target or history item, never valid/test
        assert row["item"] not in {x.item for x in before[row["user"]]}
    assert len(corrupted.interactions) == len(small.interactions) + len(rows)


def test_flipped_labels_cross_the_threshold_on_training_targets_only(small):
    corrupted, record = corrupt_targets(small, "tallrec", fraction=0.2, seed=0)
    original = {x.line: x for x in small.interactions}
    changed = {x.line: x for x in corrupted.interactions if x != original[x.line]}
    assert {r["line"] for r in record["corrupted"]} == set(changed)
    for row in record["corrupted"]:
        was, now = original[row["line"]].rating, changed[row["line"]].rating
        assert (was > 3) != (now > 3) and row["label"] == ("Yes" if was > 3 else "No")
    sequences = chronological(corrupted.interactions)
    for seq in sequences.values():
        assert all(x.line not in changed for x in seq[-2:])


def _runs(tmp_path, task: str, transform):
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    prepare("ml-100k", task, clean, max_users=10, negatives=4)
    prepare("ml-100k", task, dirty, max_users=10, negatives=4, transform=transform)
    return clean, dirty


@pytest.mark.parametrize("task", ["tallrec", "llara"])
def test_correction_events_restore_the_clean_training_set_rc(tmp_path, task):
    clean, dirty = _runs(tmp_path, task, lambda d: corrupt_targets(d, task, 0.2, seed=1))
    from rec_eraser.tasks.prepare import load_manifest

    experiment = load_experiment_for(tmp_path, task, "rc")
    events = experiment_events(experiment, load_manifest(dirty)["transform"], [])
    train = load_instances(dirty, "train")
    ctx = PromptContext.of_run(dirty)
    index = RunIndex.build(task, [train], dict(ctx.titles))
    for e in events:
        index.validate(e)
    plan = plan_edits(events, train, ctx)
    assert plan.changed
    fixed = {z.id: z for z in train} | {i: plan.after[i] for i in plan.changed}
    expected = {z.id: z for z in load_instances(clean, "train")}
    assert fixed.keys() == expected.keys()
    for i, z in fixed.items():
        if task == "tallrec":
            assert (z.prompt, z.response) == (expected[i].prompt, expected[i].response), i
        else:
            # the runs' seeded negatives differ (they are drawn from different data), so the
            # candidate lists do too; history, target and response must be the clean ones
            assert (z.history_items, z.target_item, z.response) == (
                expected[i].history_items,
                expected[i].target_item,
                expected[i].response,
            ), i
            assert z.target_item in z.candidates and len(z.candidates) == len(expected[i].candidates)
    if task == "llara":  # where the target was corrected, the true item took the wrong one's place
        retargeted = [i for i in plan.modified if plan.before[i].target_item != fixed[i].target_item]
        assert retargeted
        for i in retargeted:
            if fixed[i].target_item not in plan.before[i].candidates:  # else it was a negative already and stays
                assert fixed[i].candidates == tuple(
                    fixed[i].target_item if c == plan.before[i].target_item else c for c in plan.before[i].candidates
                )


def test_qm_events_remove_every_injected_item_from_the_training_set(tmp_path):
    _, dirty = _runs(tmp_path, "llara", lambda d: inject_items(d, 0.3, 2, seed=0))
    from rec_eraser.tasks.prepare import load_manifest

    record = load_manifest(dirty)["transform"]
    events = experiment_events(load_experiment_for(tmp_path, "llara", "qm"), record, [])
    train = load_instances(dirty, "train")
    plan = plan_edits(events, train, PromptContext.of_run(dirty))
    injected = {(r["user"], r["item"]) for r in record["injected"]}
    after = [plan.after.get(z.id, z) for z in train]
    kept = [z for z in after if z is not None]
    assert all(
        (z.user, z.target_item) not in injected and not {(z.user, i) for i in z.history_items} & injected for z in kept
    )
    touched = [
        z for z in train if (z.user, z.target_item) in injected or {(z.user, i) for i in z.history_items} & injected
    ]
    assert sorted(plan.changed) == sorted(z.id for z in touched)
    assert set(plan.removed) == {z.id for z in train if (z.user, z.target_item) in injected}


def test_ir_events_delete_a_seeded_share_of_the_trained_users(tmp_path):
    experiment = load_experiment_for(tmp_path, "tallrec", "ir", fraction=0.25)
    users = [str(u) for u in range(1, 21)]
    events = experiment_events(experiment, None, users)
    assert len(events) == 5 and {e.type for e in events} == {"delete_user"}
    assert events == experiment_events(experiment, None, list(reversed(users)))  # order-independent, seeded


def test_forget_seed_draws_another_forget_set_on_the_same_data(tmp_path):
    import dataclasses

    from rec_eraser.workflows.study import DATA_SETTINGS

    default = load_experiment_for(tmp_path, "tallrec", "ir", fraction=0.25)
    other = dataclasses.replace(default, forget_seed=1)
    users = [str(u) for u in range(1, 41)]
    assert experiment_events(other, None, users) != experiment_events(default, None, users)
    same = dataclasses.replace(default, forget_seed=default.seed)
    assert experiment_events(same, None, users) == experiment_events(default, None, users)
    # not a data setting: the run folder (data and v0000) of the default is reused
    assert {k: other.to_dict()[k] for k in DATA_SETTINGS} == {k: default.to_dict()[k] for k in DATA_SETTINGS}
    with pytest.raises(RecipeError, match="forget_seed applies to the ir edit only"):
        dataclasses.replace(load_experiment_for(tmp_path, "tallrec", "qm"), forget_seed=1)


def load_experiment_for(tmp_path: Path, task: str, edit: str, fraction: float = 0.2):
    path = tmp_path / f"{task}-{edit}.toml"
    path.write_text(f"[experiment]\ntask = '{task}'\nedit = '{edit}'\nfraction = {fraction}\n")
    return load_experiment(path)[0]


def test_a_runs_interactions_are_read_back_from_provenance(tmp_path, small):
    from rec_eraser.tasks.prepare import run_interactions

    dirty = tmp_path / "dirty"
    prepare("ml-100k", "tallrec", dirty, max_users=12, transform=lambda d: inject_items(d, 0.25, 2, seed=0))
    corrupted, _ = inject_items(small, 0.25, 2, seed=0)
    counts = chronological(corrupted.interactions)
    expected = sorted((x for x in corrupted.interactions if len(counts[x.user]) >= 2), key=lambda x: x.line)
    assert list(run_interactions(dirty)) == expected


def test_qm_needs_timestamps(small):
    import dataclasses

    untimed = dataclasses.replace(
        small, interactions=tuple(dataclasses.replace(x, timestamp=None) for x in small.interactions)
    )
    with pytest.raises(RecipeError, match="has none"):
        inject_items(untimed, 0.25, 2, seed=0)


def test_a_recipe_extends_another_section_by_section(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(
        "[experiment]\ntask = 'tallrec'\nfraction = 0.1\nmethods = ['retrain', 'rec_eraser']\n"
        "[medium]\nmax_train = 64\nepochs = 3\n[lora]\nrank = 4\n"
    )
    child = tmp_path / "child.toml"
    child.write_text("extends = 'base'\n[experiment]\nedit = 'ir'\nmethods = ['retrain']\n[medium]\nepochs = 2\n")
    experiment, recipe = load_experiment(child, "medium")
    assert (experiment.task, experiment.edit, experiment.fraction, experiment.methods) == (
        "tallrec",
        "ir",
        0.1,
        ("retrain",),
    )
    assert (recipe.max_train, recipe.epochs, recipe.rank) == (64, 2, 4)  # the base's, the child's, the base's

    # the shipped experiments are their bases plus a few lines: one rebuilt here resolves alike
    rebuilt = tmp_path / "ir.toml"
    rebuilt.write_text("extends = 'base-ml100k-tallrec'\n[experiment]\nedit = 'ir'\nfraction = 0.05\n")
    for tier in TIERS:
        assert load_experiment(rebuilt, tier) == load_experiment("ml100k-tallrec-ir", tier)


@pytest.mark.parametrize(
    "files,message",
    [
        (
            {"a": "extends = 'b'\n[experiment]\ntask = 'tallrec'\nedit = 'ir'\n", "b": "extends = 'a'\n"},
            "cycle \\(a.toml -> b.toml -> a.toml\\)",
        ),
        ({"a": "extends = 'no-such-base'\n[experiment]\n"}, "extends 'no-such-base': no-such-base: no such recipe"),
        ({"a": "extends = ['b']\n[experiment]\n"}, "extends must name one recipe"),
        (
            {"a": "extends = 'b'\n[experiment]\ntask = 'tallrec'\nedit = 'ir'\n", "b": "[lora]\nlr = 1e-3\n"},
            "lr belongs in \\[train\\], not \\[lora\\]",
        ),
        ({"a": "extends = 'base-ml100k-tallrec'\n"}, "names no edit, so it is not a benchmark"),
    ],
)
def test_bad_extends_is_refused_with_the_reason(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_experiment(tmp_path / "a.toml")


def test_a_base_recipe_is_not_a_benchmark():
    for name in ("base-ml100k", "base-ml100k-tallrec", "base-ml100k-llara"):
        with pytest.raises(RecipeError, match="not a benchmark"):
            load_experiment(name)
