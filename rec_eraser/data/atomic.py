"""Reader of RecBole atomic files (``.inter``, ``.item``, ``.user``).

Format (RecBole's): UTF-8 text, one record a line, cells separated by a tab; the first
line is the header, one cell per column written ``name:type`` with type one of
``token``, ``token_seq`` (space-separated tokens), ``float`` or ``float_seq``. Cells are
split on tabs literally (no quoting); blank lines are skipped, as pandas does for RecBole.

Every problem raises :class:`DatasetError` whose message names the file, the line
(1-based; the header is line 1) and the field. Nothing is written anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from rec_eraser.errors import RecEraserError

logger = logging.getLogger(__name__)

TYPES = ("token", "token_seq", "float", "float_seq")


class DatasetError(RecEraserError, ValueError):
    """A dataset file is missing or malformed; the message says where (file, line, field)."""

    def __init__(self, path: Path | str, message: str, *, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = Path(path), line, field
        where = str(path) + (f", line {line}" if line is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Field:
    """One column of an atomic file: its name and RecBole type."""

    name: str
    type: str


@dataclass(frozen=True)
class AtomicTable:
    """The raw cells of one atomic file.

    Attributes:
        path: the file read.
        fields: the header's columns, in file order.
        rows: the records' cells, as strings, in file order.
        lines: the 1-based line number of each record (blank lines are skipped).
        sha256: hash of the file's bytes (for manifests).
    """

    path: Path
    fields: tuple[Field, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, name: str) -> bool:
        """Whether the header has a column ``name``."""
        return any(f.name == name for f in self.fields)

    def index(self, name: str, role: str) -> int:
        """Column number of ``name``; ``role`` (e.g. "user") only improves the error message."""
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        have = ", ".join(f.name for f in self.fields)
        raise DatasetError(
            self.path, f"no column {name!r} (mapped as {role}); the header has: {have}", line=1, field=name
        )

    def tokens(self, name: str, role: str) -> list[str]:
        """The cells of column ``name`` as strings; an empty cell is an error."""
        i = self.index(name, role)
        out = [row[i] for row in self.rows]
        for value, line in zip(out, self.lines):
            if not value.strip():
                raise DatasetError(self.path, f"empty {role} value", line=line, field=name)
        return out

    def floats(self, name: str, role: str) -> list[float]:
        """The cells of column ``name`` parsed as finite floats; anything else is an error."""
        i = self.index(name, role)
        out: list[float] = []
        for row, line in zip(self.rows, self.lines):
            try:
                value = float(row[i])
            except ValueError:
                raise DatasetError(
                    self.path, f"{role} value {row[i]!r} is not a number", line=line, field=name
                ) from None
            if not math.isfinite(value):
                raise DatasetError(self.path, f"{role} value {row[i]!r} is not finite", line=line, field=name)
            out.append(value)
        return out


def _parse_header(path: Path, text: str) -> tuple[Field, ...]:
    fields: list[Field] = []
    for cell in text.split("\t"):
        name, sep, typ = cell.strip().rpartition(":")
        if not sep or not name:
            raise DatasetError(
                path,
                f"header cell {cell!r} has no ':type' (expected name:{'|'.join(TYPES)})",
                line=1,
                field=cell.strip(),
            )
        if typ not in TYPES:
            raise DatasetError(path, f"unknown type {typ!r} (known: {', '.join(TYPES)})", line=1, field=name)
        if any(f.name == name for f in fields):
            raise DatasetError(path, "column appears twice in the header", line=1, field=name)
        fields.append(Field(name, typ))
    return tuple(fields)


def read_atomic(path: Path | str) -> AtomicTable:
    """Read one RecBole atomic file into an :class:`AtomicTable`.

    Raises:
        DatasetError: the file is missing, not UTF-8, has a bad header (missing or unknown
            type, duplicate column) or a record whose number of cells differs from the header's.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(path, f"cannot read the file ({exc.strerror or exc})") from None
    fields: tuple[Field, ...] | None = None
    rows: list[tuple[str, ...]] = []
    lines: list[int] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})", line=number) from None
        if fields is None:
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if not text.strip():
                raise DatasetError(path, "the first line must be the header (name:type cells)", line=number)
            fields = _parse_header(path, text)
            continue
        if not text.strip():
            continue
        cells = tuple(text.split("\t"))
        if len(cells) < len(fields):
            raise DatasetError(
                path,
                f"{len(cells)} cells, the header has {len(fields)}: value missing",
                line=number,
                field=fields[len(cells)].name,
            )
        if len(cells) > len(fields):
            raise DatasetError(
                path,
                f"{len(cells)} cells, the header has {len(fields)}: extra cells after the last",
                line=number,
                field=fields[-1].name,
            )
        rows.append(cells)
        lines.append(number)
    if fields is None:
        raise DatasetError(path, "the file is empty (no header)", line=1)
    logger.debug("read %s: %d records, columns %s", path, len(rows), [f.name for f in fields])
    return AtomicTable(path, fields, tuple(rows), tuple(lines), hashlib.sha256(data).hexdigest())
