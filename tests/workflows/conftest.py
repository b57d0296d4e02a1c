"""The workflow tests' shared run: one tiny TALLRec adapter, trained once per session, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rec_eraser.training.train import train_run

from .test_unlearn import tiny_recipe


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tallrec_run, tiny_model_dir) -> Path:
    """A trained run kept pristine; tests work on copies."""
    run = tmp_path_factory.mktemp("trained") / "run"
    shutil.copytree(tallrec_run, run)
    train_run(run, tiny_recipe(tiny_model_dir))
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained, target)
    return target
