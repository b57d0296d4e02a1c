"""rec-eraser: unlearning for LLM-based recommenders by influence functions on LoRA adapters.

The Python API (:mod:`rec_eraser.api`) is at the package root::

    import rec_eraser as rx

    run = rx.Run("runs/demo")
    run.apply([rx.delete_user("42")])

It is imported on first use, so that ``import rec_eraser`` (and every ``rec-eraser --help``)
does not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("Run", "delete_user", "remove_interactions", "correct_label", "correct_target", "influence_update")
__all__ = ["USER_ERRORS", "RecEraserError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from rec_eraser import api

        return getattr(api, name)
    if name in ("RecEraserError", "USER_ERRORS"):
        from rec_eraser import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'rec_eraser' has no attribute {name!r}")
