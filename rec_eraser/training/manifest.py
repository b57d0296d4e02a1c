"""A version's manifest, typed: :class:`VersionRecord`, read and written here and nowhere else.

The manifest (``RUN/vNNNN/manifest.json``) is a JSON object. The fields the registry's logic
rests on are typed and checked on every read and every write: the schema, the version's name,
its parent, its kind, the recipe it descends from, the events it applied (each with an id) and
the SHA-256 of its other files. The rest (the training record, the solver report, metrics,
the calibration's figures) differs by kind and by rec-eraser's version, and is kept as written
in :attr:`VersionRecord.details`. The manifest also holds the SHA-256 of its own content
(:data:`MANIFEST_HASH`), so a hand edit is caught where it is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from rec_eraser.errors import EXIT_CODES, RecEraserError

#: The schema of a version's manifest. 1: the typed fields are checked on every read; 2: it also
#: holds the SHA-256 of its own content (:data:`MANIFEST_HASH`), checked on every read. A
#: manifest of an earlier schema was written before that (read as it is); a later one is refused.
MANIFEST_SCHEMA = 2
#: the manifest's field that holds the SHA-256 of the rest of it (see :func:`manifest_digest`)
MANIFEST_HASH = "manifest_sha256"
#: the kinds of version: trained (v0000), unlearned, rollback, compacted (retrained from scratch on
#: what its parent stands for); retrained and bench are the demo's and the benchmark's adapters
#: kept beside the versions
KINDS = ("trained", "unlearned", "rollback", "compacted", "retrained", "bench")
VERSION_NAME = re.compile(r"v[0-9]{4,}")
#: the typed fields, in the order a manifest file lists them (the details follow, then the hashes)
_TYPED = (
    "schema",
    "version",
    "parent",
    "kind",
    "created",
    "base_model",
    "base_model_sha256",
    "base_model_weights_sha256",
    "recipe",
    "events",
)


class ManifestError(RecEraserError, ValueError):
    """A manifest of the wrong shape (the reader adds the file and what to do)."""

    exit_code = EXIT_CODES["integrity"]


@dataclass(frozen=True)
class VersionRecord:
    """A version's manifest: the typed fields every reader relies on, and the rest as written."""

    version: str
    recipe: dict[str, Any]
    parent: str | None = None
    kind: str = "trained"  # manifests written before kinds existed were all trainings
    created: str | None = None
    # the base model's folder, and the SHA-256 of its config.json and of its weight files (versions
    # written before the weights were recorded have none)
    base_model: str | None = None
    base_model_sha256: str | None = None
    base_model_weights_sha256: str | None = None
    events: tuple[dict[str, Any], ...] = ()
    hashes: dict[str, str] = field(default_factory=dict)
    schema: int = MANIFEST_SCHEMA
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ManifestError(problem)

    def _problem(self) -> str | None:
        """Checked in the order a reader can act on: the schema first (a newer rec-eraser wrote it)."""
        if not isinstance(self.schema, int) or isinstance(self.schema, bool) or self.schema > MANIFEST_SCHEMA:
            return (
                f"written with manifest schema {self.schema!r}, and this rec-eraser reads up to "
                f"{MANIFEST_SCHEMA}: upgrade it"
            )
        if not isinstance(self.version, str) or not self.version:
            return f"its version {self.version!r} is not a name"
        if self.parent is not None and not (isinstance(self.parent, str) and VERSION_NAME.fullmatch(self.parent)):
            return f"its parent {self.parent!r} is not a version name"
        if self.kind not in KINDS:
            return f"unknown kind {self.kind!r} (known: {', '.join(KINDS)})"
        if not isinstance(self.recipe, dict):
            return "it has no recipe"
        for name in ("created", "base_model", "base_model_sha256", "base_model_weights_sha256"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                return f"its {name} {getattr(self, name)!r} is not a string"
        if not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in self.events):
            return "its events are not a list of events with ids"
        if not isinstance(self.hashes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.hashes.items()
        ):
            return "its hashes are not a table of file names"
        return None

    @classmethod
    def from_dict(cls, data: Any, folder_name: str | None = None) -> VersionRecord:
        """The record a manifest's parsed JSON holds; a :class:`ManifestError` saying what is
        wrong with its shape otherwise. ``folder_name``: the folder it was read from, whose
        version name it must carry (a benchmark's adapters, named otherwise, are not checked)."""
        if not isinstance(data, dict):
            raise ManifestError("not a JSON object")
        events = data.get("events", [])
        if not isinstance(events, list):
            raise ManifestError("its events are not a list of events with ids")
        record = cls(
            version=data.get("version"),
            recipe=data.get("recipe"),
            parent=data.get("parent"),
            kind=data.get("kind", "trained"),
            created=data.get("created"),
            base_model=data.get("base_model"),
            base_model_sha256=data.get("base_model_sha256"),
            base_model_weights_sha256=data.get("base_model_weights_sha256"),
            events=tuple(events),
            hashes=data.get("hashes", {}),
            schema=data.get("schema", 0),
            details={k: v for k, v in data.items() if k not in (*_TYPED, "hashes", MANIFEST_HASH)},
        )
        if folder_name and VERSION_NAME.fullmatch(folder_name) and record.version != folder_name:
            raise ManifestError(f"it names version {record.version!r}, not its folder's {folder_name!r}")
        return record

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object (without its own hash, which :func:`sealed` adds)."""
        typed = {name: getattr(self, name) for name in _TYPED}
        return {**typed, "events": list(self.events), **self.details, "hashes": dict(self.hashes)}


def manifest_digest(data: dict[str, Any]) -> str:
    """SHA-256 of a manifest's content without :data:`MANIFEST_HASH`, in a canonical JSON form
    (sorted keys, ASCII, no spaces), so that re-indenting the file does not change it and any
    edit of a value does."""
    body = {k: v for k, v in data.items() if k != MANIFEST_HASH}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def sealed(record: VersionRecord) -> str:
    """The text of ``record``'s manifest file at the current schema, with its own hash."""
    # through JSON and back first, so the digest is that of what a reader parses (tuples become
    # lists, keys strings)
    data = json.loads(json.dumps({**record.to_dict(), "schema": MANIFEST_SCHEMA}))
    data[MANIFEST_HASH] = manifest_digest(data)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def unsealed(data: Any, folder_name: str | None = None) -> VersionRecord:
    """The record of a manifest file's parsed JSON: its shape checked first (so a manifest of
    the wrong shape is named for what is wrong), then, from schema 2, its own hash."""
    record = VersionRecord.from_dict(data, folder_name)
    # checked wherever a seal is present, not by the schema number alone, so that lowering the
    # schema does not skip it (a manifest of schema 2 must carry one)
    if (record.schema >= 2 or MANIFEST_HASH in data) and data.get(MANIFEST_HASH) != manifest_digest(data):
        raise ManifestError(
            "its content differs from the SHA-256 it recorded of itself (the manifest was edited "
            "after the version was written)"
        )
    return record
