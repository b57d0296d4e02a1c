"""The adapter version folder: its files, their hashes, and their checks on every read.

A version folder (``RUN/vNNNN/``) holds a standard PEFT adapter (``adapter_config.json`` +
``adapter_model.safetensors``), ``projector.safetensors`` when the model has item tokens,
the training ids of a trained version (:data:`TRAIN_IDS`), the edited instances of an edited
one, and ``manifest.json``: the version's record plus the SHA-256 of every other file and of
its own content. The folder is written under a temporary name and renamed into place when
complete.

Every read of a version's files goes through :func:`verified_file`, which compares the file
with the hash its manifest recorded, and every read of a manifest checks the manifest's own
hash: a file changed after the version was written (bit rot, an edit by hand, tampering) is
refused with one line, before anything is built on it. (The hashes detect accidents and edits,
not an attacker who recomputes them: that needs a signature.) A
version folder that is a symbolic link (to another run's version, say) is refused too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rec_eraser.errors import EXIT_CODES, RecEraserError
from rec_eraser.files import write_file_atomically, write_folder_atomically
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.manifest import MANIFEST_SCHEMA, VERSION_NAME, ManifestError, VersionRecord, sealed, unsealed

if TYPE_CHECKING:
    from rec_eraser.training.model import RecModel

PROJECTOR_FILE = "projector.safetensors"
VERSION_MANIFEST = "manifest.json"
#: a trained version's training instance ids (a JSON list, in training order): the training set
#: every later version edits is read from it, never re-derived from the recipe's seeded draw
TRAIN_IDS = "train_ids.json"


class VersionIntegrityError(RecEraserError, RuntimeError):
    """A version's file differs from the hash its manifest recorded, is missing, or the folder is a link."""

    exit_code = EXIT_CODES["integrity"]


class BaseModelMismatch(RecEraserError, RuntimeError):
    """An adapter version is loaded on a base model other than the one it was trained on."""

    exit_code = EXIT_CODES["integrity"]


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def version_record(folder: Path) -> VersionRecord:
    """The typed manifest of the version folder ``folder`` (a link, an unreadable manifest, one of
    the wrong shape or one edited after it was written is refused with one line)."""
    if folder.is_symlink():
        raise VersionIntegrityError(
            f"{folder} is a symbolic link ({folder.resolve()}): a version must be a folder of "
            "its own run; remove the link"
        )
    path = folder / VERSION_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no such adapter version")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VersionIntegrityError(
            f"{path}: not a readable manifest ({exc}); roll back to an earlier version"
        ) from None
    try:
        return unsealed(data, folder.name)
    except ManifestError as exc:
        raise VersionIntegrityError(f"{path}: {exc}; roll back to an earlier version") from None


def version_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the version folder ``folder`` as a JSON object (see :func:`version_record`)."""
    return version_record(folder).to_dict()


def verified_file(folder: Path, name: str, record: VersionRecord | None = None) -> Path:
    """``folder/name``, once its SHA-256 matches the one the version's manifest recorded.

    Versions written before manifests held hashes have nothing to compare with and pass.
    ``record``: the manifest, when the caller has read it already.
    """
    hashes = (version_record(folder) if record is None else record).hashes
    path = folder / name
    expected = hashes.get(name)
    if expected is None:
        return path
    if path.is_symlink() or not path.is_file():
        raise VersionIntegrityError(
            f"{path}: missing (or a link), though the version's manifest lists it; roll back "
            "to an earlier version or restore the file"
        )
    if sha256_of(path) != expected:
        raise VersionIntegrityError(
            f"{path}: its SHA-256 differs from the one the version's manifest recorded (the "
            "file changed after the version was written); roll back to an earlier version or "
            "restore the file"
        )
    return path


def verify_version(folder: Path) -> VersionRecord:
    """Check every file the version's manifest lists; return the manifest."""
    record = version_record(folder)
    for name in record.hashes:
        verified_file(folder, name, record)
    return record


def version_name(number: int) -> str:
    return f"v{number:04d}"


def train_ids_json(instances: list[Instance]) -> bytes:
    """The ids of a trained version's instances, in order: the file :data:`TRAIN_IDS`."""
    return json.dumps([z.id for z in instances], ensure_ascii=False).encode("utf-8")


def instances_content_hash(instances: list[Instance]) -> str:
    """SHA-256 of the instances' ids, prompts and responses: a corrected instance keeps its id, not its text."""
    digest = hashlib.sha256()
    for z in instances:
        digest.update(json.dumps([z.id, z.prompt, z.response], ensure_ascii=False).encode())
    return digest.hexdigest()


def instance_ids_hash(instances: list[Instance]) -> str:
    return hashlib.sha256("\n".join(z.id for z in instances).encode()).hexdigest()


def write_version_folder(target: Path, fill: Callable[[Path], None], record: dict[str, Any]) -> Path:
    """Create the version folder ``target`` atomically.

    ``fill(staging)`` writes the files into a temporary sibling folder; the manifest (``record``
    plus the SHA-256 of every file) is written last, then the folder is renamed into place.
    A crash at any point leaves no ``target`` (only a ``.vNNNN-*`` folder to clean up).
    """
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    try:  # a record of the wrong shape is refused before anything is written
        typed = VersionRecord.from_dict({**record, "schema": MANIFEST_SCHEMA, "hashes": {}}, target.name)
    except ManifestError as exc:
        raise ValueError(f"{target}: the version's record is malformed: {exc}") from None

    def fill_and_record(staging: Path) -> None:
        fill(staging)
        hashes = {p.name: sha256_of(p) for p in sorted(staging.iterdir()) if p.is_file()}
        (staging / VERSION_MANIFEST).write_text(sealed(replace(typed, hashes=hashes)), encoding="utf-8")

    return write_folder_atomically(target, fill_and_record)


def save_version(model: RecModel, target: Path, record: dict[str, Any], files: dict[str, bytes] | None = None) -> Path:
    """Write a version folder atomically: PEFT adapter, projector, ``files``, manifest; then rename."""
    from safetensors.torch import save_file

    def fill(folder: Path) -> None:
        model.lm.save_pretrained(str(folder))
        if model.projector is not None:
            save_file(
                {k: v.detach().contiguous() for k, v in model.projector.state_dict().items()},
                str(folder / PROJECTOR_FILE),
            )
        for name, data in (files or {}).items():
            (folder / name).write_bytes(data)

    return write_version_folder(target, fill, record)


def base_model_fingerprint(path: Path | str) -> str:
    """SHA-256 of the base model's ``config.json``: tells a different base model apart cheaply."""
    config = Path(path) / "config.json"
    return hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else ""


#: the files of a Hugging Face model folder that hold weights
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_FINGERPRINTS = "weight-fingerprints.json"
_MEMO: dict[str, str] = {}


def base_model_weights_fingerprint(path: Path | str) -> str:
    """SHA-256 over the base model's weight files (names and contents): tells apart a model whose
    weights changed under the same ``config.json``.

    Hashing a 7B model's 14 GB takes minutes, so each file's hash is cached in the user's cache
    folder (``$REC_ERASER_CACHE`` or ``~/.cache/rec-eraser``), keyed by its resolved path, size and
    modification time: a changed file has a new key and is hashed again. A cache that cannot be
    read or written costs time, never correctness.
    """
    from rec_eraser.models.embedded import cache_root

    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    cache_file = cache_root() / _FINGERPRINTS
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    digest, changed = hashlib.sha256(), False
    for file in files:
        stat = file.stat()
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key in _MEMO:  # this process hashed it already (the cache file may not be writable)
            cache[key] = _MEMO[key]
        if not isinstance(cache.get(key), str):
            cache[key], changed = sha256_of(file), True
        _MEMO[key] = cache[key]
        digest.update(f"{file.name}\0{cache[key]}\n".encode())
    if changed:
        try:
            kept = {k: v for k, v in cache.items() if Path(k.rsplit("|", 2)[0]).is_file()}  # forget removed files
            text = json.dumps(kept, indent=0)
            write_file_atomically(cache_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        except OSError:
            pass
    return digest.hexdigest()


def list_versions(run_dir: Path | str) -> list[str]:
    """The run's complete adapter versions, oldest first (staging folders are not versions)."""
    run_dir = Path(run_dir)
    # four digits or more (v10000 follows v9999), in numeric order
    names = [
        p.name
        for p in run_dir.glob("v[0-9][0-9][0-9][0-9]*")
        if VERSION_NAME.fullmatch(p.name) and p.name == version_name(int(p.name[1:]))  # not v00001 beside v0001
    ]
    return sorted((n for n in names if (run_dir / n / VERSION_MANIFEST).is_file()), key=lambda n: int(n[1:]))


def resolve_version(run_dir: Path | str, version: str | None) -> str:
    """``version``, or the newest one when None; a clear error when the run has none."""
    versions = list_versions(run_dir)
    if version is None:
        if not versions:
            raise FileNotFoundError(f"{run_dir}: no trained adapter yet (run `rec-eraser train {run_dir}`)")
        return versions[-1]
    if version not in versions:
        raise FileNotFoundError(f"{run_dir}: no adapter version {version!r} (have: {', '.join(versions) or 'none'})")
    return version
