"""Writing files and folders so that a crash leaves the old state or the new, never half of one.

Every durable write of rec-eraser goes through here: the run folder of ``prepare``, adapter
versions, training checkpoints, the item encoder. Both helpers write to a temporary sibling,
flush it to disk (``fsync`` of the files and of the folder, so that the rename cannot publish
data still only in the page cache) and then rename it into place, which POSIX makes atomic; on
any failure the temporary sibling is removed. Hand-written because the standard library and the
libraries we use offer the rename but not the flushes around it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rec_eraser.errors import RunBusy

#: the run folder's advisory write lock: training, applying, rolling back and previewing take it
LOCK_FILE = ".lock"


def fsync_path(path: Path) -> None:
    """Flush one file's data, or one folder's entries (a rename or a new file in it), to disk.
    Opened read-only: a copied file may keep a read-only mode."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file below ``folder``, and each folder's entries, to disk (deepest first)."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not path.is_symlink():
            fsync_path(path)
    fsync_path(folder)


def write_file_atomically(path: Path, write: Callable[[Path], object], mode: int = 0o644) -> Path:
    """Replace (or create) the file ``path`` with what ``write(tmp)`` writes to a temporary sibling."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp creates 0600
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_folder_atomically(
    target: Path, fill: Callable[[Path], None], check: Callable[[], None] | None = None
) -> Path:
    """Create the folder ``target`` with what ``fill(staging)`` writes into a temporary sibling.

    ``check`` runs just before the rename (e.g. that ``target`` is still free: it may have been
    created meanwhile); the rename itself fails on a ``target`` that exists and is not empty.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".partial", dir=target.parent))
    try:
        fill(staging)
        fsync_tree(staging)
        if check is not None:
            check()
        os.rename(staging, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold ``run_dir``'s write lock (an advisory ``flock`` on ``RUN/.lock``, released when the
    process dies); :class:`~rec_eraser.errors.RunBusy` when another job still holds it after
    ``wait`` seconds (at once by default; a batch job may rather wait its turn).

    Not re-entrant: a ``flock`` belongs to an open file, so taking it again in the same process
    (while holding it) is refused like another job's."""
    with (Path(run_dir) / LOCK_FILE).open("a+") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    waited = f" (waited {wait:g} s)" if wait > 0 else ""
                    raise RunBusy(
                        f"{run_dir}: another rec-eraser job is writing to this run{waited}; try again when it ends"
                    ) from exc
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
