"""The adapter registry of a run folder: versions, their lineage, the training set each stands for, the ledger.

A run folder (by default under the top-level ``adapters/``) holds::

    manifest.json, data/        the prepared data (``rec-eraser prepare``)
    item_encoder/               LLaRA: the SASRec item embeddings
    v0000/                      the trained adapter: PEFT folder, projector, manifest.json (with the recipe)
    v0001/, v0002/, ...         edited versions; each also holds edited.jsonl
    ledger.jsonl                append-only log of every apply and rollback

Truth lives in the version folders: a version's ``manifest.json`` names its parent and the
events it applied, so the events in effect are those along its lineage, and its
``edited.jsonl`` holds every training instance edited since ``v0000`` (its new form, or
``null`` when removed). A version folder is written under a temporary name and renamed
when complete, so a crash leaves the previous version current and never half a version.
The ledger is written after the rename; a version that a crash kept out of the ledger is
added to it (marked ``recovered``) the next time the registry is opened for writing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rec_eraser.core import distributed
from rec_eraser.errors import RecEraserError, RunBusy  # noqa: F401  (RunBusy: where the registry's callers look)
from rec_eraser.files import run_lock
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prepare import load_instances
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.train import training_instances
from rec_eraser.training.versions import (
    PROJECTOR_FILE,
    TRAIN_IDS,
    VERSION_MANIFEST,
    VersionIntegrityError,
    VersionRecord,
    instance_ids_hash,
    list_versions,
    sha256_of,
    verified_file,
    verify_version,
    version_name,
    version_record,
    write_version_folder,
)

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("adapters")
LEDGER = "ledger.jsonl"
EDITED = "edited.jsonl"
ADAPTER_FILE = "adapter_model.safetensors"


class RegistryError(RecEraserError, RuntimeError):
    """The run folder or a version is missing, or another job holds the run."""


def resolve_run(run: str | Path, root: Path | str = DEFAULT_ROOT) -> Path:
    """A run folder given as a path, or as a name under the registry root (``adapters/``)."""
    if not str(run).strip():
        raise RegistryError("no run given: name a run folder, or a run under adapters/")
    for candidate in (Path(run), Path(root) / str(run)):
        try:
            if (candidate / "manifest.json").is_file():
                return candidate
        except OSError as exc:  # a name too long for the file system, and the like
            raise RegistryError(f"no run folder {str(run)[:80]!r}: {exc.strerror}") from None
    raise RegistryError(
        f"no run folder {str(run)!r} (looked for {run}/manifest.json and {Path(root) / str(run)}/manifest.json); "
        "create one with `rec-eraser prepare`"
    )


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Registry:
    """Read and write access to one run folder's versions and ledger."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "manifest.json").is_file():
            raise RegistryError(f"{self.run_dir}: not a prepared run folder (run `rec-eraser prepare` first)")

    # -- versions --------------------------------------------------------------------------
    def versions(self) -> list[str]:
        return list_versions(self.run_dir)

    def current(self) -> str:
        """The newest complete version (rollbacks create a new version, so newest = current)."""
        versions = self.versions()
        if not versions:
            raise RegistryError(f"{self.run_dir}: no trained adapter yet (run `rec-eraser train {self.run_dir}`)")
        return versions[-1]

    def check(self, version: str) -> str:
        if version not in self.versions():
            raise RegistryError(
                f"{self.run_dir}: no adapter version {version!r} (have: {', '.join(self.versions()) or 'none'})"
            )
        return version

    def record(self, version: str) -> VersionRecord:
        """``version``'s typed manifest (a version folder that is a link, or a manifest unreadable,
        of the wrong shape or edited after it was written, is refused)."""
        return version_record(self.run_dir / self.check(version))

    def manifest(self, version: str) -> dict[str, Any]:
        """``version``'s manifest as a JSON object (see :meth:`record`)."""
        return self.record(version).to_dict()

    def verified(self, version: str, name: str) -> Path:
        """``version``'s file ``name``, once it matches the hash its manifest recorded."""
        return verified_file(self.run_dir / self.check(version), name)

    def lineage(self, version: str) -> list[dict[str, Any]]:
        """Manifests from ``version`` back to the trained root (parent links)."""
        chain, seen = [], set()
        name: str | None = version
        while name is not None:
            if name in seen:
                raise RegistryError(f"{self.run_dir}: the parent links of {version} form a cycle at {name}")
            seen.add(name)
            record = self.record(name)
            chain.append(record.to_dict())
            name = record.parent
        return chain

    def applied_events(self, version: str) -> dict[str, str]:
        """Event id -> the version that applied it, for every event in effect in ``version``."""
        return {event_id: applied_in for event_id, (applied_in, _) in self.applied_event_records(version).items()}

    def applied_event_records(self, version: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """Event id -> (the version that applied it, the event as applied: its fields without the
        counts of what it edited), for every event in effect in ``version``."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for record in reversed(self.lineage(version)):  # oldest first: the first application is the one in effect
            for event in record.get("events", []):
                content = {k: v for k, v in event.items() if k not in ("removed", "modified")}
                out.setdefault(event["id"], (record["version"], content))
        return out

    def next_version(self) -> str:
        return version_name(max((int(v[1:]) for v in self.versions()), default=-1) + 1)

    # -- the training set a version stands for -------------------------------------------------
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.lineage(self.current())[-1]["recipe"])

    def edited(self, version: str) -> dict[str, Instance | None]:
        """Instance id -> its form in ``version``'s training set (None: removed), for every edited instance."""
        path = self.verified(version, EDITED)
        if not path.is_file():
            return {}
        out: dict[str, Instance | None] = {}
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                row = json.loads(line)
                out[row["id"]] = None if row["instance"] is None else Instance.from_dict(row["instance"])
        return out

    def training_set(self, version: str, train_split: list[Instance] | None = None) -> list[Instance]:
        """The training instances ``version`` stands for: v0000's, with every edit of its lineage applied.

        ``train_split``: the run's training split when the caller has read it already.
        """
        root = self.lineage(version)[-1]
        base = self._trained_instances(root, train_split)
        edited = self.edited(version)
        return [edited[z.id] if z.id in edited else z for z in base if edited.get(z.id, z) is not None]

    def _trained_instances(self, root: dict[str, Any], train_split: list[Instance] | None) -> list[Instance]:
        """The instances the trained root of a lineage was trained on: read from its
        :data:`TRAIN_IDS`; a root written before that file existed re-derives them from its recipe
        and checks them against the hash of their ids it recorded, so a changed random stream or
        training split is an error, never a silently different training set."""
        name = root["version"]
        train_split = load_instances(self.run_dir, "train") if train_split is None else train_split
        ids_file = self.verified(name, TRAIN_IDS)
        if ids_file.is_file():
            try:
                ids = json.loads(ids_file.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RegistryError(f"{ids_file}: unreadable ({exc}); the run's training set is unknown") from exc
            by_id = {z.id: z for z in train_split}
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise RegistryError(f"{ids_file}: not a list of instance ids; the run's training set is unknown")
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise RegistryError(
                    f"{ids_file}: {len(missing)} training ids are not in the run's training split "
                    f"(first: {missing[0]!r}); the data changed after {name} was trained"
                )
            return [by_id[i] for i in ids]
        base = training_instances(self.run_dir, Recipe.from_dict(root["recipe"]), train_split)
        recorded = root.get("train_ids_sha256")
        if recorded and recorded != instance_ids_hash(base):
            raise RegistryError(
                f"{self.run_dir / name}: its training set cannot be re-derived (the recipe's draw now gives other "
                "instances than the ids hash it recorded); retrain the run"
            )
        return base

    @staticmethod
    def edited_jsonl(edited: dict[str, Instance | None]) -> bytes:
        lines = [
            json.dumps({"id": k, "instance": None if v is None else v.to_dict()}, ensure_ascii=True)
            for k, v in sorted(edited.items())
        ]
        return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[Registry]:
        """Exclusive write access (an advisory lock on ``RUN/.lock``), ledger reconciled first."""
        # under torch.distributed rank 0 holds the lock and tidies; every rank works inside it
        with distributed.entered_by_main(lambda: self._locked_and_tidied(wait)):
            yield self

    @contextlib.contextmanager
    def _locked_and_tidied(self, wait: float) -> Iterator[None]:
        with run_lock(self.run_dir, wait):
            self._remove_stale_staging()
            self._repair_ledger()
            self.reconcile_ledger()
            yield

    def _remove_stale_staging(self) -> None:
        """Temporary version folders a crashed job left (never versions: they lack the rename)."""
        for path in self.run_dir.glob(".v[0-9][0-9][0-9][0-9]*-*"):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed the unfinished version folder %s", path.name)

    def ledger(self) -> list[dict[str, Any]]:
        """The ledger's records. It is a log (the versions are the truth), so a line that cannot be
        read (a torn last line after a crash mid-append, or damage) is left out with a warning,
        never fatal; the next writer cuts a torn last line off (:meth:`_repair_ledger`)."""
        path = self.run_dir / LEDGER
        if not path.is_file():
            return []
        records = []
        # split on "\n" only: str.splitlines also splits at U+2028, U+0085 and the like
        for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                record = None
            if not isinstance(record, dict):
                logger.warning("%s: line %d is not a ledger record; left out", path, number)
                continue
            records.append(record)
        return records

    def append_ledger(self, record: dict[str, Any]) -> None:
        # ASCII-only JSON: no character of an id or a message can break the one-record-per-line framing
        with (self.run_dir / LEDGER).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _repair_ledger(self) -> None:
        """Cut off a torn last line (a crash in the middle of an append), so that the next append
        starts on a line of its own; the writer holds the lock, so no append is in flight."""
        path = self.run_dir / LEDGER
        if not path.is_file():
            return
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        try:
            whole = isinstance(json.loads(data[keep:]), dict)  # only its newline was lost
        except (ValueError, RecursionError):
            whole = False
        with path.open("r+b") as f:
            if whole:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                logger.warning("%s: its last line was cut off by a crash (%d bytes); removed", path, len(data) - keep)
                f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())

    def reconcile_ledger(self) -> None:
        """Add to the ledger every version a crash kept out of it."""
        logged = {r.get("version") for r in self.ledger()}
        for version in self.versions():
            if version not in logged:
                record = self.record(version)
                self.append_ledger(
                    {
                        "time": now(),
                        "action": "recovered" if record.parent else "trained",
                        "version": version,
                        "parent": record.parent,
                        "events": [e["id"] for e in record.events],
                    }
                )

    def copy_version(self, name: str, source: str, record: dict[str, Any], files: dict[str, bytes]) -> Path:
        """Version ``name`` holding ``source``'s model files, ``files`` and ``record`` (atomically)."""

        # the copies are checked, not the originals before copying: a file changed between a check
        # and its copy would otherwise be carried over with a fresh, matching hash
        source_record = verify_version(self.run_dir / source)

        def fill(folder: Path) -> None:
            for path in (self.run_dir / source).iterdir():
                if path.is_file() and path.name not in (VERSION_MANIFEST, EDITED):
                    shutil.copy2(path, folder / path.name)
            for rel, data in files.items():
                (folder / rel).write_bytes(data)
            for copied in folder.iterdir():  # what the new version holds, as the source recorded it
                if copied.name in source_record.hashes and sha256_of(copied) != source_record.hashes[copied.name]:
                    raise VersionIntegrityError(
                        f"{self.run_dir / source / copied.name}: changed while it was being copied (its SHA-256 "
                        f"differs from the one {source}'s manifest recorded); nothing was written, and {source} "
                        "needs restoring before it can be copied"
                    )

        return write_version_folder(self.run_dir / name, fill, record)

    def rollback(self, to: str) -> dict[str, Any]:
        """Make ``to`` current again, as a new version that copies it (history is never rewritten).

        Returns the new version and the events the rollback undoes (in effect before, not after):
        their data is back in the adapter, and they may be applied again.
        """
        with self.writing():
            return self.rollback_locked(to)

    def rollback_locked(self, to: str) -> dict[str, Any]:
        """:meth:`rollback` for a caller that holds the lock already (``writing()``)."""
        self.check(to)
        previous = self.current()
        if to == previous:
            raise RegistryError(f"{to} is the current version already")
        undone = sorted(set(self.applied_events(previous)) - set(self.applied_events(to)))
        source = self.manifest(to)
        name = self.next_version()
        record = {k: v for k, v in source.items() if k not in ("hashes", "events", "solver", "metrics", "item_encoder")}
        if source.get("item_encoder"):  # it reads the encoder `to` read, retrained (if at all) by an older version
            record["item_encoder"] = {"version": source["item_encoder"]["version"], "retrained": False}
        record.update(
            version=name,
            parent=to,
            kind="rollback",
            created=now(),
            rolled_back_from=previous,
            events=[],
            undone_events=undone,
        )
        edited = self.run_dir / to / EDITED
        files = {EDITED: edited.read_bytes()} if edited.is_file() else {}
        self.copy_version(name, to, record, files)  # checks these bytes against the hash `to` recorded
        self.append_ledger(
            {
                "time": now(),
                "action": "rollback",
                "version": name,
                "parent": to,
                "from": previous,
                "undone_events": undone,
            }
        )
        return {"version": name, "to": to, "from": previous, "undone_events": undone}

    # -- reading for people ---------------------------------------------------------------------
    def summary(self, version: str) -> dict[str, Any]:
        record = self.record(version)
        solver = record.details.get("solver") or {}
        return {
            "version": version,
            "parent": record.parent,
            "kind": record.kind,
            "created": record.created,
            "events": len(record.events),
            "train_instances": record.details.get("train_instances"),
            "method": solver.get("method"),
            "seconds": solver.get("seconds", (record.details.get("training") or {}).get("seconds")),
            "current": version == self.current(),
        }

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """How two versions differ: events in effect, training-set size and (as information) parameter distance."""
        from safetensors.torch import load_file

        ev_a, ev_b = self.applied_events(a), self.applied_events(b)

        def weights(v: str) -> dict[str, Any]:
            out = {}
            for name in (ADAPTER_FILE, PROJECTOR_FILE):
                path = self.verified(v, name)
                if path.is_file():
                    out.update({f"{name}:{k}": t.double() for k, t in load_file(str(path)).items()})
            return out

        wa, wb = weights(a), weights(b)
        if wa.keys() != wb.keys():
            raise RegistryError(f"{a} and {b} hold different parameters (not versions of one adapter)")
        sq_diff = sum(float((wa[k] - wb[k]).pow(2).sum()) for k in wa)
        sq_a = sum(float(wa[k].pow(2).sum()) for k in wa)
        changed = sum(1 for k in wa if not bool((wa[k] == wb[k]).all()))
        return {
            "a": a,
            "b": b,
            "events_only_in_a": sorted(set(ev_a) - set(ev_b)),
            "events_only_in_b": sorted(set(ev_b) - set(ev_a)),
            "train_instances": {a: self.manifest(a).get("train_instances"), b: self.manifest(b).get("train_instances")},
            "parameter_distance": sq_diff**0.5,
            "relative_parameter_distance": (sq_diff / sq_a) ** 0.5 if sq_a else None,
            "tensors_changed": changed,
            "tensors": len(wa),
        }
