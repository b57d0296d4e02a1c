"""Prepare a run folder: load a dataset, build a task's instances, write them with a manifest.

Layout of the run folder (written atomically: into a temporary sibling folder, then renamed)::

    RUN/manifest.json        dataset, mapping (text + sha256), task, settings, counts, hashes, templates
    RUN/data/train.jsonl     one Instance.to_dict() a line (json, UTF-8, not ASCII-escaped)
    RUN/data/valid.jsonl
    RUN/data/test.jsonl
    RUN/data/items.json      item id -> prompt title of every interacted item (for answer matching)

``data_hash`` is the sha256 of the bytes of train.jsonl, valid.jsonl and test.jsonl fed in
that order into one hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rec_eraser import __version__
from rec_eraser.data import SPLITS, Dataset, load_dataset
from rec_eraser.data.dataset import Interaction
from rec_eraser.files import write_folder_atomically
from rec_eraser.tasks.instance import Instance, TaskError
from rec_eraser.tasks.prompt_registry import prompts_of
from rec_eraser.tasks.titles import item_titles

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DATA_DIR = "data"
ITEMS = "items.json"
FORMAT = 1


def first_users(dataset: Dataset, max_users: int) -> Dataset:
    """``dataset`` restricted to its first ``max_users`` users (in order of first appearance)."""
    if max_users < 1:
        raise TaskError(f"max_users must be >= 1, got {max_users}")
    keep = set(dataset.users[:max_users])
    return replace(dataset, interactions=tuple(x for x in dataset.interactions if x.user in keep))


def build_instances(
    dataset: Dataset, task: str, seed: int = 0, negatives: int = 20, max_history: int = 10
) -> list[Instance]:
    """All instances of the registered task ``task`` on ``dataset``."""
    return prompts_of(task).build(dataset, seed=seed, negatives=negatives, max_history=max_history)


def _jsonl(instances: list[Instance]) -> bytes:
    return "".join(json.dumps(i.to_dict(), ensure_ascii=False) + "\n" for i in instances).encode("utf-8")


def _mapping_record(dataset: Dataset) -> dict[str, Any]:
    path = dataset.mapping.path
    text = path.read_text(encoding="utf-8") if path is not None and path.is_file() else None
    fields = dataset.mapping.to_dict()
    raw = text.encode("utf-8") if text is not None else json.dumps(fields, sort_keys=True).encode("utf-8")
    return {
        "path": str(path) if path else None,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "text": text,
        "fields": fields,
    }


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out}: exists and is not an empty folder; choose a new run folder (prepare never overwrites a run)"
        )


def _write_atomically(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (relative path -> bytes) into a temporary sibling of ``out``, then rename it to
    ``out`` (which replaces an empty folder and fails on a non-empty one)."""

    def fill(staging: Path) -> None:
        for rel, data in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)

    write_folder_atomically(
        out, fill, check=lambda: _check_out_dir(out)
    )  # checked again: it may have been filled meanwhile


def prepare(
    dataset_name_or_path: str | Path,
    task: str,
    out_dir: str | Path,
    seed: int = 0,
    negatives: int = 20,
    max_history: int = 10,
    max_users: int | None = None,
    root: str | Path | None = None,
    transform: Callable[[Dataset], tuple[Dataset, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Load a dataset, build ``task``'s instances for every split and write the run folder ``out_dir``.

    Args:
        dataset_name_or_path: a known dataset (``ml-100k``, ``lastfm``, ``steam``) or a folder (see ``load_dataset``).
        task: a registered task (``"llara"``, ``"tallrec"``; see ``rec_eraser.tasks.prompt_registry``).
        out_dir: the run folder to create; it must not exist or be empty.
        seed: seeds LLaRA's candidate sets.
        negatives: negatives per candidate set, for tasks with one (LLaRA: candidates = negatives + 1).
        max_history: the history window.
        max_users: keep only the first N users (in order of first appearance), for small demos.
        root: where a user-supplied dataset lies.
        transform: changes the loaded interactions before instances are built (the benchmark's
            corruptions: injected noise, flipped labels); returns the new dataset and a record
            of what it did, kept in the manifest under ``transform``.

    Returns:
        The summary: dataset, task, out, users, items, interactions (of the data used), train,
        valid, test (instance counts) and data_hash.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
        TaskError: bad task or settings, or a task the dataset cannot make (tallrec without ratings).
        DatasetError: the dataset files are missing or malformed.
    """
    out = Path(out_dir)
    prompts = prompts_of(task)
    _check_out_dir(out)
    if max_users is not None and max_users < 1:
        raise TaskError(f"max_users must be >= 1, got {max_users}")
    dataset = load_dataset(dataset_name_or_path, root=root, max_users=max_users)
    transform_record = None
    if transform is not None:
        dataset, transform_record = transform(dataset)
    instances = prompts.build(dataset, seed=seed, negatives=negatives, max_history=max_history)

    by_split = {s: _jsonl([i for i in instances if i.split == s]) for s in SPLITS}
    digest = hashlib.sha256()
    for s in SPLITS:
        digest.update(by_split[s])
    data_hash = digest.hexdigest()
    items = json.dumps(item_titles(dataset), ensure_ascii=False, indent=0).encode("utf-8")
    counts = {
        "users": len(dataset.users),
        "items": len(dataset.items),
        "interactions": len(dataset.interactions),
        **{s: sum(i.split == s for i in instances) for s in SPLITS},
    }
    manifest = {
        "format": FORMAT,
        "rec_eraser": __version__,
        "task": task,
        "dataset": {"name": dataset.name, "root": str(dataset.root), "files": dict(dataset.files)},
        "mapping": _mapping_record(dataset),
        # every run manifest has had both keys; a task fills the ones it uses
        "seed": seed,
        "negatives": None,
        "max_history": max_history,
        "max_users": max_users,
        "transform": transform_record,
        "liked_above": None,
        **prompts.manifest_settings(dataset, negatives=negatives),
        "counts": counts,
        "data_hash": data_hash,
        "files": {f"{DATA_DIR}/{s}.jsonl": hashlib.sha256(by_split[s]).hexdigest() for s in SPLITS}
        | {f"{DATA_DIR}/{ITEMS}": hashlib.sha256(items).hexdigest()},
        "templates": prompts.templates(),
    }
    files = {f"{DATA_DIR}/{s}.jsonl": by_split[s] for s in SPLITS}
    files[f"{DATA_DIR}/{ITEMS}"] = items
    files[MANIFEST] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    _write_atomically(out, files)
    logger.info("prepared %s/%s into %s: %s", dataset.name, task, out, counts)
    return {"dataset": dataset.name, "task": task, "out": str(out), **counts, "data_hash": data_hash}


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared run folder."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a prepared run folder (run `rec-eraser prepare` first)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_instances(run_dir: str | Path, split: str) -> list[Instance]:
    """The instances of one split (``train``, ``valid``, ``test``) of a prepared run folder, in file order."""
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    path = Path(run_dir) / DATA_DIR / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a prepared run folder (run `rec-eraser prepare` first)")
    with path.open(encoding="utf-8") as f:
        return [Instance.from_dict(json.loads(line)) for line in f if line.strip()]


def load_titles(run_dir: str | Path) -> dict[str, str]:
    """Item id -> prompt title of a prepared run folder (``data/items.json``)."""
    path = Path(run_dir) / DATA_DIR / ITEMS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a prepared run folder (run `rec-eraser prepare` first)")
    return json.loads(path.read_text(encoding="utf-8"))


def run_interactions(run_dir: str | Path) -> tuple[Interaction, ...]:
    """The interactions a run's instances were built from, read back from their provenance
    (every split), in ``.inter`` line order. Users without any instance (a single
    interaction) are not among them."""
    seen: dict[int, Interaction] = {}
    for split in SPLITS:
        for z in load_instances(run_dir, split):
            for source in z.interactions:
                seen.setdefault(
                    source.line,
                    Interaction(
                        user=z.user,
                        item=source.item,
                        rating=source.rating,
                        timestamp=source.timestamp,
                        line=source.line,
                    ),
                )
    return tuple(seen[line] for line in sorted(seen))
