"""The same commands under ``torchrun --nproc-per-node 2`` (gloo, CPU) as in one process:
train, forget a user, evaluate. Rank 0 alone writes and prints; the versions and figures
equal one process's within float tolerance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import rec_eraser
from rec_eraser.workflows import Registry

RECIPE = "[train]\nmax_train = 9\nbatch_size = 3\nepochs = 2\n\n[lora]\ndropout = 0.0\n"


def _env() -> dict[str, str]:
    root = str(Path(rec_eraser.__file__).resolve().parents[1])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def _cli(args: list[str], ranks: int) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "-m"]
        if ranks > 1
        else [sys.executable, "-m"]
    )
    return subprocess.run([*launcher, "rec_eraser.cli", *args], capture_output=True, text=True, env=_env(), timeout=600)


def _session(run: Path, recipe: Path, model: Path, ranks: int) -> dict:
    out = {}
    trained = _cli(["train", str(run), "--recipe", str(recipe), "--base-model", str(model), "--json"], ranks)
    assert trained.returncode == 0, trained.stderr
    out["train"] = json.loads(trained.stdout)  # one JSON object: rank 0's alone
    users = [z.user for z in Registry(run).training_set("v0000")]
    user = max(sorted(set(users)), key=users.count)
    forgot = _cli(["forget-user", str(run), "--user", user, "--sample-size", "6", "--json"], ranks)
    assert forgot.returncode == 0, forgot.stderr
    out["forget"] = json.loads(forgot.stdout)
    other = max(sorted(set(users) - {user}), key=users.count)
    events = run.parent / f"events-{ranks}.jsonl"
    events.write_text(json.dumps({"id": "e1", "type": "delete_user", "user": other}) + "\n")
    drained = _cli(["apply-events", str(run), str(events), "--sample-size", "6", "--json"], ranks)
    assert drained.returncode == 0, drained.stderr
    out["apply"] = json.loads(drained.stdout)
    evaluated = _cli(["evaluate", str(run), "--json"], ranks)
    assert evaluated.returncode == 0, evaluated.stderr
    out["evaluate"] = json.loads(evaluated.stdout)
    out["ledger"] = (run / "ledger.jsonl").read_text().splitlines()
    out["adapters"] = {v: load_file(run / v / "adapter_model.safetensors") for v in ("v0000", "v0001", "v0002")}
    return out


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, tallrec_run, tiny_model_dir) -> tuple[dict, dict]:
    folder = tmp_path_factory.mktemp("torchrun")
    recipe = folder / "recipe.toml"
    recipe.write_text(RECIPE)
    runs = {}
    for ranks in (2, 1):
        runs[ranks] = shutil.copytree(tallrec_run, folder / f"run-{ranks}")
    return _session(runs[2], recipe, tiny_model_dir, 2), _session(runs[1], recipe, tiny_model_dir, 1)


def test_torchrun_writes_each_version_and_ledger_line_once(sessions):
    two, one = sessions
    assert two["train"]["version"] == "v0000" and two["forget"]["version"] == "v0001"
    assert two["apply"]["version"] == "v0002" and [e["id"] for e in two["apply"]["applied"]] == ["e1"]
    assert len(two["ledger"]) == len(one["ledger"])  # no rank but 0 appended a line


def test_torchrun_versions_equal_one_process(sessions):
    import torch

    two, one = sessions
    for version, weights in one["adapters"].items():
        assert weights.keys() == two["adapters"][version].keys()
        for name, tensor in weights.items():
            torch.testing.assert_close(two["adapters"][version][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    assert two["train"]["final_loss"] == pytest.approx(one["train"]["final_loss"], rel=1e-5)
    assert two["train"]["memorisation_gap"]["gap"] == pytest.approx(one["train"]["memorisation_gap"]["gap"], abs=1e-5)
    assert two["forget"]["solver"]["damping"] == pytest.approx(one["forget"]["solver"]["damping"], rel=1e-4)
    assert two["evaluate"]["n"] == one["evaluate"]["n"]
    assert two["evaluate"]["auc"] == pytest.approx(one["evaluate"]["auc"], abs=1e-9)


def test_a_command_that_does_not_split_its_work_is_refused_under_torchrun(tmp_path, tallrec_run):
    refused = _cli(["status", str(tallrec_run)], 2)
    assert refused.returncode != 0
    assert "runs in one process; run it without torchrun" in refused.stderr
