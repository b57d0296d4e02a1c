"""Tasks are registered, and evaluation and the benchmark's figures ask the registry: a third
task needs no change to either."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rec_eraser.tasks.base import Task
from rec_eraser.tasks.instance import TaskError
from rec_eraser.tasks.registry import TASK_REGISTRY, register_task, task_of


class Parity(Task):
    """A made-up task: the score is the instance's position, utility the share of even scores."""

    name = "parity"
    main_metric = "even_share"
    agreement_kind = "equal_share"
    agreement_words = "share of equal scores"

    def scores_and_losses(self, loaded, instances, titles):
        return np.array([z.position for z in instances], dtype=float), np.ones(len(instances))

    def utility(self, scores, instances, titles, answers=None):
        return {"even_share": float(np.mean(scores % 2 == 0))}

    def agreement(self, a, b):
        return float(np.mean(a == b))

    def simple_baseline(self, train, test):
        return {"name": "half", "value": 0.5}

    def evaluate(self, run_dir, loaded, instances, train, generate=True, rank=True, tick=None):
        scores, _ = self.scores_and_losses(loaded, instances, {})
        return {**self.utility(scores, instances, {}), "baselines": {"half": {"even_share": 0.5}}}


@pytest.fixture
def parity():
    task = Parity()
    register_task(task)
    yield task
    del TASK_REGISTRY["parity"]


def test_the_two_tasks_are_registered_and_an_unknown_one_is_refused():
    assert {"tallrec", "llara"} <= set(TASK_REGISTRY)
    assert task_of("tallrec").main_metric == "auc" and task_of("llara").main_metric == "hit@1"
    with pytest.raises(TaskError, match="unknown task 'rating'; known: tallrec, llara"):
        task_of("rating")
    with pytest.raises(ValueError, match="registered twice"):
        register_task(task_of("tallrec"))


def test_evaluate_uses_the_registered_task(tmp_path, tallrec_run, parity):
    from rec_eraser.evaluation.evaluate import evaluate_version
    from rec_eraser.tasks.prepare import load_instances

    run = shutil.copytree(tallrec_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "task": "parity"}))
    test = load_instances(run, "test")[:5]
    result = evaluate_version(run, "v0000", limit=5, loaded=object())  # the task never touches the model
    assert result["task"] == "parity" and result["n"] == 5
    assert result["even_share"] == pytest.approx(np.mean([z.position % 2 == 0 for z in test]))
    assert result["baselines"] == {"half": {"even_share": 0.5}}


def test_the_benchmark_figures_use_the_registered_task(tallrec_run, parity):
    from rec_eraser.tasks.prepare import load_instances
    from rec_eraser.training.recipe import Recipe
    from rec_eraser.workflows.experiments import Experiment
    from rec_eraser.workflows.study import BenchContext, Outcome, metrics_of, task_baseline

    test = load_instances(tallrec_run, "test")[:6]
    ctx = BenchContext(
        run=tallrec_run,
        experiment=Experiment(),
        recipe=Recipe(),
        task="parity",
        before=[],
        after=[],
        forget=[],
        corrected=[],
        test=test,
        titles={},
        events=[],
    )

    def outcome(scores):
        return Outcome(
            test_scores=np.array(scores, dtype=float),
            forget_losses=None,
            unseen_losses=np.ones(6),
            corrected_losses=None,
            answers=None,
            seconds=1.0,
        )

    m = metrics_of(ctx, outcome([0, 2, 4, 1, 3, 5]), outcome([0, 2, 1, 1, 3, 5]), outcome([0, 0, 0, 0, 0, 0]))
    assert m["even_share"] == 0.5 and m["utility_gap"] == pytest.approx(0.5 - 2 / 6)
    assert m["agreement_with_retrain"] == pytest.approx(5 / 6) and m["agreement_kind"] == "equal_share"
    assert task_baseline(ctx) == {"name": "half", "value": 0.5}
