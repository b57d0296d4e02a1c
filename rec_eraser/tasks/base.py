"""The two seams every task implements: how its prompts are built, and how an adapter is judged on them.

A task is one folder, ``tasks/<name>/``:

- ``prompts.py`` holds a :class:`TaskPrompts`: building a run's instances from a dataset,
  rebuilding one after its data changed, the corrections it supports. It sits below the model
  layer (training needs prompts), and :mod:`rec_eraser.tasks.prompt_registry` holds it by name:
  ``prepare``, the edit planner and the benchmark's corruptions ask that registry.
- ``evaluation.py`` holds a :class:`Task`: scoring and judging an adapter. It needs the model
  layer, so its registry (:mod:`rec_eraser.tasks.registry`) is imported by evaluation and the
  workflows only.

No module outside a task's folder names a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rec_eraser.tasks.instance import Instance, Source, TaskError

if TYPE_CHECKING:
    from rec_eraser.data import Dataset, Interaction
    from rec_eraser.tasks.rewrite import PromptContext

Tick = Callable[[int], None]

#: The correction events a task may support (every task supports deletions of users and interactions).
CORRECTIONS = ("correct_label", "correct_target")


class TaskPrompts(ABC):
    """How a task's instances are built from a dataset, and rebuilt after their data changed."""

    name: ClassVar[str]
    #: which of :data:`CORRECTIONS` the task can apply (a label needs a rating threshold, a target a candidate set)
    corrections: ClassVar[frozenset[str]] = frozenset()
    #: whether prompts carry item-embedding tokens (LLaRA's hybrid prompt); training then needs an item encoder
    item_tokens: ClassVar[bool] = False

    @abstractmethod
    def build(self, dataset: Dataset, *, seed: int, negatives: int, max_history: int) -> list[Instance]:
        """Every instance of ``dataset`` (users in order of first appearance, then positions)."""

    def manifest_settings(self, dataset: Dataset, *, negatives: int) -> dict[str, Any]:
        """Settings the run's manifest records beside the seed and the history window (e.g. a rating threshold)."""
        return {}

    @abstractmethod
    def templates(self) -> dict[str, str]:
        """The template strings the prompts are built with; a run prepared with others cannot be rebuilt."""

    @abstractmethod
    def rebuild(
        self,
        instance: Instance,
        interactions: tuple[Source, ...],
        ctx: PromptContext,
        candidates: tuple[str, ...] | None = None,
    ) -> Instance:
        """``instance`` rebuilt from ``interactions`` (history oldest first, target last) with the run's words."""

    def corrupt(
        self, dataset: Dataset, picked: Sequence[Interaction], rng: np.random.Generator
    ) -> tuple[dict[int, Interaction], list[dict[str, Any]]]:
        """The benchmark's RC corruption of the training targets ``picked``: the one this task's
        correction undoes. Returns the corrupted interactions by line number, and one record per
        corrupted interaction (``user``, ``item``, ``line`` and what its correction event restores)
        in the dataset's order. ``rng`` is the experiment's stream: draw from it in that order, so
        that a seed gives one corruption. A task without corrections has none."""
        raise TaskError(f"task {self.name!r} takes no correction, so it has no corruption to undo")


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
    def scores_and_losses(
        self, loaded: Any, instances: Sequence[Instance], titles: dict[str, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The test scores (the input of :meth:`utility` and :meth:`agreement`) and each instance's loss."""

    def answers(self, loaded: Any, instances: Sequence[Instance]) -> list[str] | None:
        """Generated answers, for tasks whose utility includes generation; ``None`` otherwise."""
        return None

    @abstractmethod
    def utility(
        self,
        scores: np.ndarray,
        instances: Sequence[Instance],
        titles: dict[str, str],
        answers: list[str] | None = None,
    ) -> dict[str, float | None]:
        """The utility figures of ``scores`` (and ``answers``) on ``instances``; holds :attr:`main_metric`."""

    @abstractmethod
    def agreement(self, a: np.ndarray, b: np.ndarray) -> float:
        """How alike two models' test scores are (1 = the same)."""

    @abstractmethod
    def simple_baseline(self, train: Sequence[Instance], test: Sequence[Instance]) -> dict[str, Any]:
        """``{"name", "value"}``: the simple baseline an adapter must beat on :attr:`main_metric`."""

    @abstractmethod
    def evaluate(
        self,
        run_dir: Path,
        loaded: Any,
        instances: Sequence[Instance],
        train: Sequence[Instance],
        generate: bool = True,
        rank: bool = True,
        tick: Tick | None = None,
    ) -> dict[str, Any]:
        """``rec-eraser evaluate``'s figures and its ``baselines`` on ``instances``."""
