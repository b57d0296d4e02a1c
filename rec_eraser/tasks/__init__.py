"""Tasks and prompts: LLaRA (next item among seeded candidates) and TALLRec (Yes/No), with provenance;
more are registered through :mod:`rec_eraser.tasks.prompt_registry` (see :mod:`rec_eraser.tasks.base`)."""

from rec_eraser.tasks.instance import Instance, Source, TaskError, instance_id, sources
from rec_eraser.tasks.llara import build_llara, candidate_rng, draw_candidates, eligible_negatives, llara_instance
from rec_eraser.tasks.prepare import (
    build_instances,
    first_users,
    load_instances,
    load_manifest,
    load_titles,
    prepare,
)
from rec_eraser.tasks.prompt_registry import prompts_of, register_prompts, task_names
from rec_eraser.tasks.tallrec import build_tallrec, liked_threshold, tallrec_instance
from rec_eraser.tasks.templates import (
    CANS_EMB,
    HISTORY_EMB,
    USER_EMB,
    llara_prompt,
    llara_response,
    tallrec_prompt,
    tallrec_response,
)
from rec_eraser.tasks.titles import item_titles, readable_title

__all__ = [
    "CANS_EMB",
    "HISTORY_EMB",
    "USER_EMB",
    "Instance",
    "Source",
    "TaskError",
    "build_instances",
    "build_llara",
    "build_tallrec",
    "candidate_rng",
    "draw_candidates",
    "eligible_negatives",
    "first_users",
    "instance_id",
    "item_titles",
    "liked_threshold",
    "llara_instance",
    "llara_prompt",
    "llara_response",
    "load_instances",
    "load_manifest",
    "load_titles",
    "prepare",
    "prompts_of",
    "readable_title",
    "register_prompts",
    "sources",
    "tallrec_instance",
    "tallrec_prompt",
    "tallrec_response",
    "task_names",
]
