"""Reader of RecBole atomic files (``.inter``, ``.item``, ``.user``).

Format (RecBole's): UTF-8 text, one record a line, cells separated by a tab; the first
line is the header, one cell per column written ``name:type`` with type one of
``token``, ``token_seq`` (space-separated tokens), ``float`` or ``float_seq``. Cells are
split on tabs literally (no quoting); blank lines are skipped, as pandas does for RecBole.

Every problem raises :class:`DatasetError` whose message names the file, the line
(1-based; the header is line 1) and the field. Nothing is written anywhere.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
class AtomicColumns:
    """Chosen columns of one atomic file, held as arrays (a large ``.inter`` file's form).

    Attributes:
        path, fields, sha256: as in :class:`AtomicTable`.
        tokens: column name -> its cells as an Arrow string array (raw, as in the file).
        floats: column name -> its cells as finite float64 values.
        lines: the 1-based line number of each record (int64).
    """

    path: Path
    fields: tuple[Field, ...]
    tokens: dict[str, Any]
    floats: dict[str, np.ndarray]
    lines: np.ndarray
    sha256: str

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, mask: np.ndarray) -> AtomicColumns:
        """The records where ``mask`` is true, in file order."""
        import pyarrow as pa

        keep = pa.array(mask)
        return AtomicColumns(
            self.path,
            self.fields,
            {k: v.filter(keep) for k, v in self.tokens.items()},
            {k: v[mask] for k, v in self.floats.items()},
            self.lines[mask],
            self.sha256,
        )


class _UseExactReader(RecEraserError):
    """The columnar reader met something only the line-by-line reader reads (or words) exactly;
    caught inside :func:`read_atomic_columns`, never raised to a caller."""


def _record_lines(data: bytes, chunk: int = 1 << 26) -> np.ndarray:
    """1-based numbers of the non-empty lines after the header of ``\\n``-separated ``data``
    (in chunks, so that the scan's temporary arrays stay small)."""
    view = np.frombuffer(data, dtype=np.uint8)
    newlines = np.concatenate(
        [np.flatnonzero(view[i : i + chunk] == 10) + i for i in range(0, len(view), chunk)] or [np.empty(0, np.int64)]
    )
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(view)]))
    numbers = np.flatnonzero(ends > starts) + 1
    return numbers[numbers > 1]


def _is_utf8(data: bytes, chunk: int = 1 << 26) -> bool:
    """Whether ``data`` is UTF-8 text, decoded piece by piece so that no copy of it is kept."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(view), chunk):
            decoder.decode(view[start : start + chunk])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _columns_with_arrow(path: Path, data: bytes, tokens: list[str], floats: list[str]) -> AtomicColumns:
    """The columnar read; raises :class:`_UseExactReader` on anything the exact reader must see."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    if b"\r" in data:  # line ends other than \n: numbering lines is the exact reader's job
        raise _UseExactReader
    end = data.find(b"\n")
    header = data[: end if end >= 0 else len(data)].decode("utf-8", errors="strict").removeprefix("\ufeff")
    if not header.strip():
        raise _UseExactReader
    fields = _parse_header(path, header)
    names = [f.name for f in fields]
    for name in tokens + floats:
        if name not in names:
            raise _UseExactReader
    body = data[end + 1 :] if end >= 0 else b""
    if not _is_utf8(body):  # Arrow decodes only the columns it keeps; the exact reader checks every line
        raise _UseExactReader
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(body),
            read_options=pa_csv.ReadOptions(column_names=names),
            parse_options=pa_csv.ParseOptions(
                delimiter="\t", quote_char=False, double_quote=False, escape_char=False, ignore_empty_lines=True
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                include_columns=list(dict.fromkeys(tokens + floats)),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        raise _UseExactReader from None
    lines = _record_lines(data)
    if len(lines) != table.num_rows:
        raise _UseExactReader
    token_columns = {n: table.column(n).combine_chunks() for n in tokens}
    for column in token_columns.values():
        # blank as Python's str.strip() sees it (the exact reader's test; Arrow's trim knows fewer
        # whitespace characters), checked on the distinct values only
        if any(not value.strip() for value in pc.unique(column).to_pylist()):
            raise _UseExactReader
    float_columns: dict[str, np.ndarray] = {}
    for name in floats:
        try:
            values = pc.cast(table.column(name), pa.float64()).to_numpy()
        except pa.ArrowInvalid:
            raise _UseExactReader from None
        if not np.isfinite(values).all():
            raise _UseExactReader
        float_columns[name] = values
    return AtomicColumns(path, fields, token_columns, float_columns, lines, hashlib.sha256(data).hexdigest())


def read_atomic_columns(
    path: Path | str, tokens: dict[str, str], floats: dict[str, str] | None = None
) -> AtomicColumns:
    """Read the ``tokens`` and ``floats`` columns (name -> role, e.g. ``{"user_id": "user"}``;
    the role only words the errors) of a (large) atomic file as arrays.

    The same file format, checks and errors as :func:`read_atomic` with
    :meth:`AtomicTable.tokens` and :meth:`AtomicTable.floats`, at a fraction of their time and
    memory: the file is parsed by pyarrow's multi-threaded CSV reader into Arrow buffers
    instead of one Python string per cell (20 million interactions would take about 1 KB of
    Python objects each). Whatever that reader rejects or the checks find (a wrong number of
    cells, an empty token, a value that is not a finite number, ``\\r`` line ends, text that is
    not UTF-8) is read again line by line by :func:`read_atomic`, whose message names the
    line and field, or whose more lenient parsing (spaces around a number) is kept.

    Raises:
        DatasetError: as :func:`read_atomic`, and a mapped column missing from the header.
    """
    path = Path(path)
    floats = floats or {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(path, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        return _columns_with_arrow(path, data, list(tokens), list(floats))
    except (_UseExactReader, UnicodeDecodeError):
        logger.info("%s: read line by line (the columnar reader met something it leaves to it)", path)
    del data
    table = read_atomic(path)
    import pyarrow as pa

    return AtomicColumns(
        table.path,
        table.fields,
        {n: pa.array(table.tokens(n, role), pa.string()) for n, role in tokens.items()},
        {n: np.asarray(table.floats(n, role), dtype=np.float64) for n, role in floats.items()},
        np.asarray(table.lines, dtype=np.int64),
        table.sha256,
    )
