"""Unlearning events: what a recommender team's systems report (account deletions, noise, wrong labels).

An events file is JSON Lines, one event per line::

    {"id": "e1", "type": "delete_user", "user": "42"}
    {"id": "e2", "type": "remove_interactions", "user": "42", "items": ["50"]}
    {"id": "e3", "type": "correct_label", "user": "7", "item": "9", "label": "No"}
    {"id": "e4", "type": "correct_target", "user": "7", "item": "9", "target": "12"}

``id`` makes an event idempotent: an event applied once is never applied again. Ids and
user/item values are strings (numbers are accepted and turned into strings, as RecBole's
tokens are). Reading never stops at a bad line: each bad line becomes an
:class:`EventProblem` with its line number, and the good events are kept.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rec_eraser.errors import RecEraserError

TYPES = ("delete_user", "remove_interactions", "correct_label", "correct_target")
LABELS = {"yes": True, "no": False}
#: an event id is an idempotency key that logs and terminals print: bounded, one line, printable
MAX_ID_LENGTH = 200
#: a line of an events file longer than this is refused (an event is a few hundred bytes)
MAX_LINE_BYTES = 64 * 1024
# control and format characters, line and paragraph separators, surrogates, private and unassigned code points
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class EventError(RecEraserError, ValueError):
    """An event is malformed or does not fit the run (unknown user or item, wrong task)."""


@dataclass(frozen=True)
class Event:
    """One event. ``items`` for remove_interactions; ``item`` + ``label`` (correct_label) or ``item`` + ``target`` (correct_target)."""

    id: str
    type: str
    user: str
    items: tuple[str, ...] = ()
    item: str | None = None
    label: str | None = None
    target: str | None = None

    @property
    def liked(self) -> bool:
        """correct_label: whether the corrected label is Yes."""
        return LABELS[str(self.label).lower()]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v not in (None, ())}
        if self.items:
            d["items"] = list(self.items)
        return d

    def same_request(self, recorded: dict[str, Any]) -> bool:
        """Whether ``recorded`` (an event as a version's manifest holds it) asks for what this
        event asks for: the same fields, the items in any order."""

        def canonical(d: dict[str, Any]) -> dict[str, Any]:
            fields = {k: v for k, v in d.items() if k not in ("removed", "modified")}
            return {**fields, "items": sorted(fields["items"])} if "items" in fields else fields

        return canonical(recorded) == canonical(self.to_dict())


@dataclass(frozen=True)
class EventProblem:
    """Why one event was not applied; ``line`` is its line in the events file (0 for an event given on the command line)."""

    line: int
    message: str
    event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else f"event {self.event_id}" if self.event_id else "event"
        return f"{where}: {self.message}"


def _token(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise EventError(f"field {key!r} must be a non-empty string, got {value!r}")
    return str(value)


def _event_id(obj: dict[str, Any]) -> str:
    event_id = _token(obj, "id")
    if (
        len(event_id) > MAX_ID_LENGTH
        or event_id != event_id.strip()
        or any(unicodedata.category(c) in _UNPRINTABLE for c in event_id)
    ):
        raise EventError(
            f"field 'id' must be at most {MAX_ID_LENGTH} printable characters, with no line break, control "
            f"character or surrounding space; got {ascii(event_id[:60])}{'...' if len(event_id) > 60 else ''}"
        )
    return event_id


def parse_event(obj: Any) -> Event:
    """An :class:`Event` from one decoded JSON value; :class:`EventError` says what is wrong."""
    if not isinstance(obj, dict):
        raise EventError(f"an event must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind not in TYPES:
        raise EventError(f"unknown event type {kind!r} (known: {', '.join(TYPES)})")
    allowed = {
        "delete_user": {"id", "type", "user"},
        "remove_interactions": {"id", "type", "user", "items"},
        "correct_label": {"id", "type", "user", "item", "label"},
        "correct_target": {"id", "type", "user", "item", "target"},
    }[kind]
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise EventError(f"{kind} events have no field {unknown[0]!r} (fields: {', '.join(sorted(allowed))})")
    event_id, user = _event_id(obj), _token(obj, "user")
    if kind == "delete_user":
        return Event(event_id, kind, user)
    if kind == "remove_interactions":
        items = obj.get("items")
        if not isinstance(items, list) or not items:
            raise EventError("field 'items' must be a non-empty list of item ids")
        return Event(event_id, kind, user, items=tuple(_token({"item": i}, "item") for i in items))
    item = _token(obj, "item")
    if kind == "correct_label":
        label = _token(obj, "label")
        if label.lower() not in LABELS:
            raise EventError(f"label must be Yes or No, got {label!r}")
        return Event(event_id, kind, user, item=item, label="Yes" if LABELS[label.lower()] else "No")
    return Event(event_id, kind, user, item=item, target=_token(obj, "target"))


def request_event(
    kind: str,
    user: str,
    *,
    items: Sequence[str] = (),
    item: str | None = None,
    label: str | None = None,
    target: str | None = None,
    source: str = "cli",
) -> Event:
    """An event asked for directly (a command's options, a Python call) rather than read from a
    file. Its id is made from its content (``source:type:user[:detail]``), so that asking for
    the same thing twice applies it once. :class:`EventError` says what is wrong with it."""
    details = {
        "delete_user": (),
        "remove_interactions": (",".join(sorted(map(str, items))),),
        "correct_label": (item, label),
        "correct_target": (item, target),
    }
    if kind not in details:
        raise EventError(f"unknown event type {kind!r} (known: {', '.join(TYPES)})")
    if isinstance(items, str):  # a lone id would be split into its characters
        raise EventError(f"items must be a list of item ids, got the string {items!r}")
    fields = {"items": list(items) or None, "item": item, "label": label, "target": target}
    event_id = ":".join(str(part) for part in (source, kind, user, *details[kind]))
    if len(event_id) > MAX_ID_LENGTH:  # many items: their list becomes its digest (a short id keeps its old form)
        digest = hashlib.sha256(":".join(str(part) for part in details[kind]).encode("utf-8")).hexdigest()[:32]
        event_id = f"{source}:{kind}:{user}:sha256={digest}"
    obj = {
        "id": event_id,
        "type": kind,
        "user": user,
        **{name: value for name, value in fields.items() if value is not None},
    }
    return parse_event(obj)


def read_events(path: Path | str) -> tuple[list[tuple[int, Event]], list[EventProblem]]:
    """The events of a JSONL file with their line numbers, and the problems of its bad lines.

    A repeated id within the file is a problem on its second line (ids are idempotency keys).

    Raises:
        EventError: the file is missing, unreadable, or not text.
    """
    path = Path(path)
    if not path.is_file():
        raise EventError(f"{path}: no such events file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise EventError(f"{path}: cannot be read as UTF-8 JSON Lines ({exc})") from exc
    events: list[tuple[int, Event]] = []
    problems: list[EventProblem] = []
    seen: dict[str, int] = {}
    # split on newlines only: str.splitlines would also split inside JSON strings at U+2028 and the like
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line.encode("utf-8")) > MAX_LINE_BYTES:
            problems.append(
                EventProblem(number, f"longer than {MAX_LINE_BYTES} bytes; an event is one short JSON object")
            )
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(EventProblem(number, f"not a JSON object ({exc.msg}); the file must be JSON Lines"))
            continue
        except RecursionError:
            problems.append(EventProblem(number, "nested too deeply to be an event; an event is one flat JSON object"))
            continue
        try:
            event = parse_event(obj)
        except EventError as exc:
            problems.append(EventProblem(number, str(exc), obj.get("id") if isinstance(obj, dict) else None))
            continue
        if event.id in seen:
            problems.append(EventProblem(number, f"event id {event.id!r} repeats line {seen[event.id]}", event.id))
            continue
        seen[event.id] = number
        events.append((number, event))
    if not events and not problems:
        raise EventError(f"{path}: holds no events")
    return events, problems
