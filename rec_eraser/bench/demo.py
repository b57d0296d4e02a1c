"""The placeholder demo: forget instances of the tiny Llama's adapter and compare losses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rec_eraser.bench.toy import ToyTask, make_toy_task
from rec_eraser.core import InfluenceEngine, Removal, SolverConfig
from rec_eraser.core.curvature import deterministic_mode


def mean_loss(task: ToyTask, samples: list) -> float:
    with torch.no_grad(), deterministic_mode(task.model):
        return float(task.loss_fn(task.model, ToyTask.collate(samples)))


def run_placeholder_demo(forget: int = 4, on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = on_progress or (lambda _msg: None)
    say("training a LoRA adapter on the tiny Llama")
    task = make_toy_task(n_train=32, train_steps=60)
    forgotten, kept = task.train[:forget], task.train[forget:]

    def metrics() -> dict[str, float]:
        return {"forgotten_loss": mean_loss(task, forgotten), "unseen_loss": mean_loss(task, task.test), "kept_loss": mean_loss(task, kept)}

    original = metrics()
    say("computing the influence update")
    engine = InfluenceEngine(task.model, task.loss_fn, task.train, ToyTask.collate, curvature="ggn", solver=SolverConfig(method="cg", tol=1e-4))
    update = engine.compute([Removal(z) for z in forgotten])
    update.apply(task.model)
    return {
        "forgotten": forget,
        "original": {"metrics": original},
        "unlearned": {"metrics": metrics(), "seconds": update.report.seconds},
        "report": update.report.to_dict(),
    }
