"""The seam every task implements: how an adapter is scored and judged on the task's prompts.

A task is one folder, ``tasks/<name>/``: its prompts (``prompts.py``, used to prepare a run)
and a :class:`Task` (``evaluation.py``) that the registry (:mod:`rec_eraser.tasks.registry`)
holds under its name. Evaluation, the benchmark and its reports ask the registry, so none of
them names a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rec_eraser.tasks.instance import Instance

Tick = Callable[[int], None]


class Task(ABC):
    """How a task's adapter is measured. ``loaded`` is a :class:`rec_eraser.training.train.LoadedModel`."""

    name: ClassVar[str]
    #: the utility figure the baseline condition and the utility gap compare (a key of :meth:`utility`)
    main_metric: ClassVar[str]
    #: how two models' test scores are compared: the JSON name and the words a report uses
    agreement_kind: ClassVar[str]
    agreement_words: ClassVar[str]
    #: whether the scorer needs the run's item titles (``titles.json``)
    uses_titles: ClassVar[bool] = False

    @abstractmethod
    def scores_and_losses(self, loaded: Any, instances: Sequence[Instance], titles: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """The test scores (the input of :meth:`utility` and :meth:`agreement`) and each instance's loss."""

    def answers(self, loaded: Any, instances: Sequence[Instance]) -> list[str] | None:
        """Generated answers, for tasks whose utility includes generation; ``None`` otherwise."""
        return None

    @abstractmethod
    def utility(self, scores: np.ndarray, instances: Sequence[Instance], titles: dict[str, str],
                answers: list[str] | None = None) -> dict[str, float | None]:
        """The utility figures of ``scores`` (and ``answers``) on ``instances``; holds :attr:`main_metric`."""

    @abstractmethod
    def agreement(self, a: np.ndarray, b: np.ndarray) -> float:
        """How alike two models' test scores are (1 = the same)."""

    @abstractmethod
    def simple_baseline(self, train: Sequence[Instance], test: Sequence[Instance]) -> dict[str, Any]:
        """``{"name", "value"}``: the simple baseline an adapter must beat on :attr:`main_metric`."""

    @abstractmethod
    def evaluate(self, run_dir: Path, loaded: Any, instances: Sequence[Instance], train: Sequence[Instance],
                 generate: bool = True, rank: bool = True, tick: Tick | None = None) -> dict[str, Any]:
        """``rec-eraser evaluate``'s figures and its ``baselines`` on ``instances``."""
