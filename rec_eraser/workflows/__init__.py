"""Workflows: events to edits, the adapter registry and its ledger, unlearning runs and the demo."""

from rec_eraser.workflows.events import Event, EventError, EventProblem, parse_event, read_events
from rec_eraser.workflows.plan import EditPlan, RunIndex, plan_edits
from rec_eraser.workflows.registry import DEFAULT_ROOT, Registry, RegistryError, resolve_run
from rec_eraser.workflows.unlearn import DEFAULT_CALIBRATION, DEFAULT_SOLVER, ApplyResult, Calibrate, apply_events

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_ROOT",
    "DEFAULT_SOLVER",
    "ApplyResult",
    "Calibrate",
    "EditPlan",
    "Event",
    "EventError",
    "EventProblem",
    "Registry",
    "RegistryError",
    "RunIndex",
    "apply_events",
    "parse_event",
    "plan_edits",
    "read_events",
    "resolve_run",
]
