"""The shipped files (dataset mappings, named recipes): found in a checkout and in a plain,
non-editable install run from another folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rec_eraser.data.mapping import MAPPINGS_DIR, known_datasets
from rec_eraser.shipped import shipped_dir, shipped_names
from rec_eraser.training.recipe import RecipeError, find_recipe, load_recipe
from rec_eraser.workflows.experiments import load_experiment

REPO = Path(__file__).resolve().parents[1]


def test_a_checkout_reads_the_top_level_folders():
    assert shipped_dir("recipes") == REPO / "recipes" and shipped_dir("datasets") == REPO / "datasets" == MAPPINGS_DIR
    assert shipped_names("recipes") == sorted(p.stem for p in (REPO / "recipes").glob("*.toml"))
    assert known_datasets() == ["lastfm", "ml-100k", "steam"]
    with pytest.raises(ValueError, match="unknown kind"):
        shipped_dir("models")  # type: ignore[arg-type]


def test_a_recipe_is_found_by_path_or_by_its_shipped_name(tmp_path, monkeypatch):
    shipped = REPO / "recipes" / "demo-tallrec.toml"
    assert find_recipe("demo-tallrec") == find_recipe("demo-tallrec.toml") == shipped
    assert load_recipe("demo-tallrec") == load_recipe(shipped)
    assert load_experiment("ml100k-tallrec-ir", "quick") == load_experiment(
        REPO / "recipes" / "ml100k-tallrec-ir.toml", "quick"
    )
    # a file of that name in the working folder is the user's own recipe and wins
    own = tmp_path / "demo-tallrec.toml"
    own.write_text("[train]\nepochs = 3\n")
    monkeypatch.chdir(tmp_path)
    assert (
        find_recipe("demo-tallrec.toml") == Path("demo-tallrec.toml") and load_recipe("demo-tallrec.toml").epochs == 3
    )
    assert find_recipe("demo-tallrec") == shipped  # no such file here: the name


def test_every_shipped_training_recipe_loads_by_name():
    names = [n for n in shipped_names("recipes") if n.startswith("demo-")]
    assert {"demo-tallrec", "demo-llara"} <= set(names)
    for name in names:
        assert load_recipe(name) == load_recipe(REPO / "recipes" / f"{name}.toml")


@pytest.mark.parametrize("missing", ["no-such-recipe", "elsewhere/demo-tallrec.toml", ""])
def test_an_unknown_recipe_is_refused_with_the_shipped_names(missing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match="no such recipe file.*shipped: base-ml100k, .*demo-llara, demo-tallrec"):
        find_recipe(missing)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A wheel of this checkout, installed (without dependencies) into a folder of its own."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"  # a copy, so that the build leaves nothing in the repository
    for name in ("rec_eraser", "datasets", "recipes"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "wheels"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((work / "wheels").glob("rec_eraser-*.whl"))
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "--target", str(work / "site"), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return work / "site"


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # -S: no site hooks, so the editable install of this checkout (a .pth hook) stays out of it;
    # the dependencies come from this environment's site-packages, after the installed copy
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sorted(deps)])}
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_plain_install_works_from_another_folder(installed, tmp_path, tiny_model_dir):
    where = run_installed(
        installed,
        tmp_path,
        "-c",
        "import json, rec_eraser.shipped as s; "
        "print(json.dumps([s.__file__, str(s.shipped_dir('recipes')), s.shipped_names('datasets')]))",
    )
    assert where.returncode == 0, where.stderr
    module, recipes, datasets = json.loads(where.stdout)
    assert Path(module).is_relative_to(installed) and Path(recipes) == installed / "rec_eraser" / "recipes"
    assert datasets == ["lastfm", "ml-100k", "steam"]

    cli = ("-m", "rec_eraser.cli")
    prepared = run_installed(
        installed,
        tmp_path,
        *cli,
        "prepare",
        "--dataset",
        "ml-100k",
        "--task",
        "tallrec",
        "--out",
        "r",
        "--max-users",
        "2",
        "--json",
    )
    assert prepared.returncode == 0, prepared.stderr
    trained = run_installed(
        installed,
        tmp_path,
        *cli,
        "train",
        "r",
        "--recipe",
        "demo-tallrec",
        "--base-model",
        str(tiny_model_dir),
        "--no-measure-gap",
        "--json",
    )
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((tmp_path / "r" / "v0000" / "manifest.json").read_text())
    assert manifest["recipe"]["max_train"] == load_recipe("demo-tallrec").max_train
    unknown = run_installed(installed, tmp_path, *cli, "train", "r", "--recipe", "demo-nothing")
    assert unknown.returncode != 0 and re.search("shipped: base-ml100k, .*demo-llara, demo-tallrec", unknown.stderr)


def test_train_reads_the_tasks_shipped_demo_recipe_by_default(tallrec_run, monkeypatch):
    from typer.testing import CliRunner

    import rec_eraser.training.train as train
    from rec_eraser.cli import app

    used = []

    def read_recipe_only(run, recipe, **_kwargs):
        used.append(recipe)
        raise FileExistsError("stopped after reading the recipe")

    monkeypatch.setattr(train, "train_run", read_recipe_only)
    result = CliRunner().invoke(app, ["train", str(tallrec_run), "--no-measure-gap"])
    assert "stopped after reading the recipe" in result.stderr
    assert used == [load_recipe(REPO / "recipes" / "demo-tallrec.toml")]
