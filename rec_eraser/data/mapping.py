"""Per-dataset field mappings: which atomic-file columns hold user, item, rating, timestamp, title.

One small TOML file per dataset under ``datasets/`` at the repository root (``ml-100k.toml``,
``lastfm.toml``, ``steam.toml``), shipped inside the package (:mod:`rec_eraser.shipped`); a new
dataset is a new file, not new code. Schema::

    name = "ml-100k"          # base name of the atomic files: ml-100k.inter, ml-100k.item, ...
    source = "recbole"        # "recbole": shipped in the recbole wheel; "user": the user downloads it
    liked_above = 3.0         # optional: rating > liked_above counts as liked (TALLRec)
    unknown_items = "error"   # or "drop": interactions whose item is not in the .item file

    [fields]                  # column names (without ":type")
    user = "user_id"          # required, in .inter
    item = "item_id"          # required, in .inter
    rating = "rating"         # optional: absent = implicit feedback, every interaction positive
    timestamp = "timestamp"   # optional: absent = order by file order
    title = "movie_title"     # optional, in .item
    item_key = "item_id"      # optional: key column of .item (default: the item column's name)
    user_key = "user_id"      # optional: key column of .user (default: the user column's name)

    [prompt]                  # words for prompts
    noun = "movie"
    noun_plural = "movies"
    verb = "watch"
    verb_past = "watched"
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rec_eraser.data.atomic import DatasetError
from rec_eraser.shipped import shipped_dir

#: Where the mapping files of the known datasets live (the shipped ``datasets`` folder).
MAPPINGS_DIR = shipped_dir("datasets")

_TOP = {"name", "source", "liked_above", "unknown_items", "fields", "prompt"}
_FIELDS = {"user", "item", "rating", "timestamp", "title", "item_key", "user_key"}
_PROMPT = {"noun", "noun_plural", "verb", "verb_past"}


@dataclass(frozen=True)
class Mapping:
    """A dataset's field mapping (see the module docstring for the file schema)."""

    name: str
    user: str
    item: str
    rating: str | None = None
    timestamp: str | None = None
    title: str | None = None
    item_key: str | None = None
    user_key: str | None = None
    source: str = "user"
    liked_above: float | None = None
    unknown_items: str = "error"
    noun: str = "item"
    noun_plural: str = "items"
    verb: str = "choose"
    verb_past: str = "chosen"
    path: Path | None = None

    @property
    def item_file_key(self) -> str:
        """Key column of the ``.item`` file."""
        return self.item_key or self.item

    @property
    def user_file_key(self) -> str:
        """Key column of the ``.user`` file."""
        return self.user_key or self.user

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for manifests)."""
        out = asdict(self)
        out["path"] = str(self.path) if self.path else None
        return out


def _strings(path: Path, table: dict[str, Any], allowed: set[str], section: str) -> dict[str, Any]:
    for key, value in table.items():
        if key not in allowed:
            raise DatasetError(path, f"unknown key in [{section}] (known: {', '.join(sorted(allowed))})", field=key)
        if not isinstance(value, str) or not value:
            raise DatasetError(path, f"[{section}] {key} must be a non-empty string", field=key)
    return table


def load_mapping(path: Path | str) -> Mapping:
    """Read and check one mapping file.

    Raises:
        DatasetError: the file is missing, not TOML, has unknown keys or lacks user / item.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(path, f"cannot read the mapping ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise DatasetError(path, f"not valid TOML: {exc}") from None
    for key in doc:
        if key not in _TOP:
            raise DatasetError(path, f"unknown key (known: {', '.join(sorted(_TOP))})", field=key)
    fields = _strings(path, dict(doc.get("fields", {})), _FIELDS, "fields")
    prompt = _strings(path, dict(doc.get("prompt", {})), _PROMPT, "prompt")
    for key in ("user", "item"):
        if key not in fields:
            raise DatasetError(path, f'[fields] needs {key} = "<column name>"', field=key)
    name = doc.get("name", path.stem)
    source = doc.get("source", "user")
    if source not in ("recbole", "user"):
        raise DatasetError(path, 'source must be "recbole" or "user"', field="source")
    unknown = doc.get("unknown_items", "error")
    if unknown not in ("error", "drop"):
        raise DatasetError(path, 'unknown_items must be "error" or "drop"', field="unknown_items")
    liked = doc.get("liked_above")
    if liked is not None and (isinstance(liked, bool) or not isinstance(liked, int | float)):
        raise DatasetError(path, "liked_above must be a number", field="liked_above")
    return Mapping(
        name=str(name),
        source=source,
        unknown_items=unknown,
        liked_above=None if liked is None else float(liked),
        path=path,
        **fields,
        **prompt,
    )


def known_datasets() -> list[str]:
    """Names of the datasets that have a mapping file in :data:`MAPPINGS_DIR`."""
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.toml"))


def mapping_for(name: str) -> Mapping:
    """The mapping of a known dataset (``ml-100k``, ``lastfm``, ``steam``, ...)."""
    path = MAPPINGS_DIR / f"{name}.toml"
    if not path.is_file():
        raise DatasetError(path, f"no mapping for dataset {name!r} (known: {', '.join(known_datasets()) or 'none'})")
    return load_mapping(path)
