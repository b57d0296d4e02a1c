"""The registered tasks, by name. Adding a task is a folder ``tasks/<name>/`` with its prompts
and a :class:`~rec_eraser.tasks.base.Task`, plus one :func:`register_task` call below.

Imported by evaluation and the workflows, never by the task packages or the model layer: the
tasks' evaluation modules need the model layer, which needs the tasks' prompts.
"""

from __future__ import annotations

from rec_eraser.tasks.base import Task
from rec_eraser.tasks.instance import TaskError
from rec_eraser.tasks.llara.evaluation import LLaRA
from rec_eraser.tasks.tallrec.evaluation import TallRec

TASK_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> None:
    if task.name in TASK_REGISTRY:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASK_REGISTRY[task.name] = task


def task_of(name: str) -> Task:
    """The registered task ``name``; a :class:`TaskError` naming the known ones otherwise."""
    try:
        return TASK_REGISTRY[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; known: {', '.join(TASK_REGISTRY)}") from None


register_task(TallRec())
register_task(LLaRA())
