"""LLaRA: which of the candidates comes next? Its prompts (``prompts``) and how an adapter is
scored and judged on them (``evaluation``, imported by the task registry only: it needs the
model layer, which imports this package's prompts)."""

from rec_eraser.tasks.llara.prompts import (
    TASK,
    build_llara,
    candidate_rng,
    draw_candidates,
    eligible_negatives,
    llara_instance,
)

__all__ = ["TASK", "build_llara", "candidate_rng", "draw_candidates", "eligible_negatives", "llara_instance"]
