"""A deletion killed with SIGKILL at a random moment leaves the run as it was or as it will be:
the current version loads (every file matching its recorded hash), no half-written version is
current, the next run of the same request completes, and its event is in effect exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rec_eraser.training.train import load_version, train_run
from rec_eraser.workflows.registry import Registry

from .test_unlearn import a_trained_user, tiny_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tallrec_run, tiny_model_dir) -> Path:
    run = tmp_path_factory.mktemp("crash") / "run"
    shutil.copytree(tallrec_run, run)
    train_run(run, tiny_recipe(tiny_model_dir, max_train=16))
    return run


def _forget(run: Path, user: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "rec_eraser.cli", "forget-user", str(run), "--user", user, "--sample-size", "8", "-q"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _check_after_kill(run: Path, user: str) -> None:
    registry = Registry(run)
    current = registry.current()
    assert current in ("v0000", "v0001") and not (run / "v0002").exists()
    load_version(run, current)  # every file of the current version as its manifest recorded it
    rerun = _forget(run, user)
    assert rerun.wait(120) == 0, rerun.stderr.read().decode()
    registry = Registry(run)
    assert registry.versions() == ["v0000", "v0001"] and not list(run.glob(".v0*"))
    applied = [e["id"] for v in registry.versions() for e in registry.manifest(v).get("events", [])]
    assert applied == [f"cli:delete_user:{user}"]  # in effect exactly once
    assert [r["version"] for r in registry.ledger()].count("v0001") == 1


def _trials(trained: Path, tmp_path: Path, count: int, seed: int) -> None:
    user = a_trained_user(trained)
    # how long a whole request takes here, so that the kills land anywhere inside it
    timing = shutil.copytree(trained, tmp_path / "timing")
    start = time.monotonic()
    assert _forget(timing, user).wait(120) == 0
    duration = time.monotonic() - start
    rng = np.random.default_rng(seed)
    for trial in range(count):
        run = shutil.copytree(trained, tmp_path / f"trial{trial}")
        job = _forget(run, user)
        time.sleep(float(rng.uniform(0.3, duration)))
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        _check_after_kill(run, user)


def test_a_deletion_killed_at_random_moments_leaves_a_consistent_run(trained, tmp_path):
    _trials(trained, tmp_path, count=3, seed=0)


@pytest.mark.slow
def test_many_kills(trained, tmp_path):
    _trials(trained, tmp_path, count=25, seed=1)
