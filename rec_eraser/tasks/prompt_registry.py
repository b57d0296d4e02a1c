"""The registered tasks' prompt builders, by name (see :mod:`rec_eraser.tasks.base`).

Below the model layer, unlike the evaluation registry (:mod:`rec_eraser.tasks.registry`):
preparing a run and planning its edits need no model. Adding a task registers its
:class:`~rec_eraser.tasks.base.TaskPrompts` here and its :class:`~rec_eraser.tasks.base.Task`
there.
"""

from __future__ import annotations

from rec_eraser.tasks.base import TaskPrompts
from rec_eraser.tasks.instance import TaskError
from rec_eraser.tasks.llara.prompts import LlaraPrompts
from rec_eraser.tasks.tallrec.prompts import TallrecPrompts

PROMPT_REGISTRY: dict[str, TaskPrompts] = {}


def register_prompts(prompts: TaskPrompts) -> None:
    if prompts.name in PROMPT_REGISTRY:
        raise ValueError(f"task {prompts.name!r} is registered twice")
    PROMPT_REGISTRY[prompts.name] = prompts


def prompts_of(name: str) -> TaskPrompts:
    """The registered prompt builder of task ``name``; a :class:`TaskError` naming the known tasks otherwise."""
    try:
        return PROMPT_REGISTRY[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; known: {', '.join(PROMPT_REGISTRY)}") from None


def task_names() -> tuple[str, ...]:
    return tuple(PROMPT_REGISTRY)


def tasks_supporting(correction: str) -> tuple[str, ...]:
    """The registered tasks that can apply ``correction`` (one of ``base.CORRECTIONS``)."""
    return tuple(name for name, prompts in PROMPT_REGISTRY.items() if correction in prompts.corrections)


register_prompts(TallrecPrompts())
register_prompts(LlaraPrompts())
