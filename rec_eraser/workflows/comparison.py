"""One model's figures in function space, as the demo and a compaction compare an update with a retraining.

Utility on unseen test prompts (the task's own figures), the mean loss of the forgotten
instances and of the corrected forms, the unseen prompts' mean loss, and a membership AUC (the
forgotten instances against the unseen prompts by loss; 0.5: indistinguishable). The scores are
returned too, so that two models' agreement (:meth:`Task.agreement`) can be computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rec_eraser.evaluation.unlearning import membership_inference_auc
from rec_eraser.tasks.base import Task
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.scoring import instance_losses


def function_space_figures(
    loaded: Any,
    task: Task,
    unseen: Sequence[Instance],
    titles: dict[str, str],
    forgotten: Sequence[Instance] = (),
    corrected: Sequence[Instance] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """``loaded``'s test scores and its figures (``forgotten_loss``, ``corrected_loss`` and
    ``membership_auc`` are None without such instances)."""
    scores, unseen_losses = task.scores_and_losses(loaded, unseen, titles)
    forgotten_losses = instance_losses(loaded, list(forgotten)) if forgotten else None
    corrected_losses = instance_losses(loaded, list(corrected)) if corrected else None
    return scores, {
        **task.utility(scores, unseen, titles),
        "forgotten_loss": None if forgotten_losses is None else float(np.mean(forgotten_losses)),
        "corrected_loss": None if corrected_losses is None else float(np.mean(corrected_losses)),
        "unseen_loss": float(np.mean(unseen_losses)),
        "membership_auc": None
        if forgotten_losses is None
        else membership_inference_auc(forgotten_losses, unseen_losses),
    }
