"""TALLRec: will the user like the target item? Yes / No. Its prompts (``prompts``) and how an
adapter is scored and judged on them (``evaluation``, imported by the task registry only: it
needs the model layer, which imports this package's prompts)."""

from rec_eraser.tasks.tallrec.prompts import TASK, build_tallrec, liked_threshold, tallrec_instance

__all__ = ["TASK", "build_tallrec", "liked_threshold", "tallrec_instance"]
