"""The comparison baselines' mechanics on a tiny model: each moves the loss it should."""

from __future__ import annotations

import numpy as np
import pytest

from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import load_version
from rec_eraser.workflows import Registry
from rec_eraser.workflows.baselines import run_baseline
from rec_eraser.workflows.experiments import ExperimentError

from .test_unlearn import a_trained_user


def split(run):
    train = Registry(run).training_set("v0000")
    user = a_trained_user(run)
    return [z for z in train if z.user == user], [z for z in train if z.user != user]


@pytest.mark.parametrize("method", ["gradient_ascent", "graddiff", "npo"])
def test_forgetting_baselines_raise_the_forget_loss(trained, method):
    forget, retain = split(trained)
    loaded = load_version(trained, "v0000")
    before = float(np.mean(instance_losses(loaded, forget)))
    report = run_baseline(method, loaded, forget=forget, retain=retain, steps=5, lr=1e-2)
    assert float(np.mean(instance_losses(loaded, forget))) > before
    assert report.steps == 5 and report.gradient_passes == (10 if method == "graddiff" else 5) and report.seconds > 0


def test_finetune_lowers_the_corrected_loss(trained):
    forget, _ = split(trained)
    loaded = load_version(trained, "v0000")
    before = float(np.mean(instance_losses(loaded, forget)))
    run_baseline("finetune", loaded, corrected=forget, steps=5, lr=1e-2)
    assert float(np.mean(instance_losses(loaded, forget))) < before


def test_bad_requests_are_refused(trained):
    loaded = load_version(trained, "v0000")
    with pytest.raises(ExperimentError, match="unknown baseline"):
        run_baseline("retrain-lite", loaded, forget=split(trained)[0])
    with pytest.raises(ExperimentError, match="needs forget"):
        run_baseline("gradient_ascent", loaded)
    with pytest.raises(ExperimentError, match="needs retained"):
        run_baseline("graddiff", loaded, forget=split(trained)[0])


def test_a_registered_baseline_runs_without_editing_the_loop(trained):
    from rec_eraser.workflows.baselines import BASELINES, Baseline, register_baseline

    # a made-up baseline: ascend the forget set's loss, but only on its instances above the batch mean
    def ascend_the_hard_ones(step):
        return -(step.losses * (step.losses >= step.losses.mean())).sum() / len(step.losses)

    register_baseline(Baseline("hard_ascent", "forget", ascend_the_hard_ones))
    try:
        forget, _ = split(trained)
        loaded = load_version(trained, "v0000")
        before = float(np.mean(instance_losses(loaded, forget)))
        report = run_baseline("hard_ascent", loaded, forget=forget, steps=5, lr=1e-2)
        assert report.method == "hard_ascent" and report.gradient_passes == 5
        assert float(np.mean(instance_losses(loaded, forget))) > before
        with pytest.raises(ValueError, match="registered already"):
            register_baseline(Baseline("npo", "forget", ascend_the_hard_ones))
    finally:
        del BASELINES["hard_ascent"]
