"""Which requests a run has honoured only approximately, and for how long: ``rec-eraser status``.

An influence update is fast and approximate; a training from scratch on the edited data is
exact and slow. A team that receives an account deletion has to be able to say when it will
be covered exactly. Every version records how its events were applied (its ``kind``: a
``trained`` version is a training from scratch, so exact; an ``unlearned`` one applied its
events by an approximate method); an event in effect is **pending** while the version that
applied it is approximate and no exact version has been trained on top of it since. Its age
counts from when rec-eraser applied it (the version's ``created`` time), so it is a lower bound
on the time since the user asked; a deadline (GDPR's one month, say) is a bound on that age.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass
from itertools import takewhile
from typing import Any

from rec_eraser.errors import RecEraserError
from rec_eraser.workflows.registry import Registry

#: version kinds whose events are covered exactly: a training from scratch on the training set
#: they stand for (``trained``: v0000; ``compacted``: :mod:`rec_eraser.workflows.compaction`)
EXACT_KINDS = ("trained", "compacted")
#: the default deadline: a month of 30 days
DEFAULT_DEADLINE = "30d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DeadlineError(RecEraserError, ValueError):
    """A deadline that is not a duration such as ``30d``, ``12h``, ``90m`` or ``3600s``."""


def parse_duration(text: str) -> float:
    """Seconds in a duration: a number with a unit (``30d``, ``12h``, ``90m``, ``3600s``) or plain seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", str(text))
    if not match:
        raise DeadlineError(f"deadline {text!r}: expected a duration such as 30d, 12h, 90m or 3600s")
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not value > 0:
        raise DeadlineError(f"deadline {text!r}: must be longer than zero")
    return value


@dataclass(frozen=True)
class PendingEvent:
    """An event in effect that only an approximate update applied."""

    id: str
    type: str
    user: str
    version: str  # the version that applied it
    applied: str  # when (ISO 8601, UTC)
    age_seconds: float


def approximate_versions(registry: Registry, version: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The manifests of ``version``'s lineage above its newest exact version (whose events are
    applied approximately), by name, and that exact version (None if the lineage has none)."""
    lineage = registry.lineage(version)  # newest first
    above = list(takewhile(lambda record: record["kind"] not in EXACT_KINDS, lineage))
    exact = lineage[len(above)]["version"] if len(above) < len(lineage) else None
    return {record["version"]: record for record in above}, exact


def owed_by_compaction(registry: Registry) -> list[dict[str, Any]]:
    """The events an interrupted compaction left out of effect, as the version before it
    recorded them (oldest first); empty in every other state.

    A compaction writes its exact version, then re-applies on top of it the events that landed
    while it trained (its manifest's ``landed_during``). Killed in between, the exact version is
    current and those events, though applied before it, are in effect nowhere. They are owed
    until any writer re-applies them: the next request does so before its own events, and
    ``rec-eraser compact`` does so without retraining.
    """
    versions = registry.versions()
    if len(versions) < 2:
        return []
    record = registry.manifest(versions[-1])
    if record.get("kind") != "compacted" or not record.get("landed_during"):
        return []
    in_effect = registry.applied_events(versions[-1])
    # the compaction took the lock to write, so the version just before it was current, holding them
    held = registry.applied_event_records(versions[-2])
    return [held[i][1] for i in record["landed_during"] if i not in in_effect and i in held]


def owed_encoder_choice(registry: Registry) -> str:
    """How the events :func:`owed_by_compaction` lists must treat the item encoder: ``"retrain"``
    when one of the requests that landed during that compaction retrained it (its manifest's
    ``reapply_item_encoder``), else ``"keep"``."""
    versions = registry.versions()
    return registry.manifest(versions[-1]).get("reapply_item_encoder", "keep") if versions else "keep"


def erasure_status(registry: Registry, deadline_seconds: float, now: _dt.datetime | None = None) -> dict[str, Any]:
    """The run's current version, its pending approximate events (oldest first) with their ages,
    the oldest age, the deadline and whether it is past (``overdue``)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    current = registry.current()
    approximate, exact = approximate_versions(registry, current)
    pending = []
    for event_id, (version, event) in registry.applied_event_records(current).items():
        record = approximate.get(version)
        if record is None:
            continue
        applied = _dt.datetime.fromisoformat(record["created"])
        if applied.tzinfo is None:  # written without a zone: rec-eraser writes UTC
            applied = applied.replace(tzinfo=_dt.timezone.utc)
        pending.append(
            PendingEvent(
                id=event_id,
                type=event.get("type", "?"),
                user=event.get("user", "?"),
                version=version,
                applied=record["created"],
                age_seconds=max(0.0, (now - applied).total_seconds()),
            )
        )
    pending.sort(key=lambda e: -e.age_seconds)
    oldest = pending[0].age_seconds if pending else None
    owed = owed_by_compaction(registry)
    return {
        "run": str(registry.run_dir),
        "current": current,
        "exact_version": exact,
        "pending_approximate": [asdict(e) for e in pending],
        "oldest_pending_seconds": oldest,
        "deadline_seconds": deadline_seconds,
        # events that no version in effect applies: worse than late, so the run counts as overdue
        "out_of_effect": [{k: e.get(k) for k in ("id", "type", "user")} for e in owed],
        "overdue": bool(owed) or (oldest is not None and oldest > deadline_seconds),
    }
