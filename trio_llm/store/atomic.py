"""Atomic file writes: a locked temporary beside the destination, fsynced, then renamed over it.

A reader therefore sees either nothing or the whole, verified file. The temporary holds an
exclusive `flock` for as long as its writer lives; the kernel drops that lock when the process
dies (kill -9 included), so `remove_dead_temporaries` can tell an abandoned temporary from one
a live thread or process is still writing. Temporary names start with `.`, which no valid blob
or manifest name does, so listings never mistake one for data.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: fall back to the age of the file
    fcntl = None  # type: ignore[assignment]

TEMP_PREFIX = ".tmp-"
STALE_AFTER_S = 3600.0   # without flock, a temporary this old is taken to be abandoned


class TempFile:
    """A temporary file in `directory`, locked while open; `commit` renames it to its name."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "w+b")
        self.size = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.file.write(data)
        self.size += len(data)

    def commit(self, dest: Path) -> None:
        """Flush to disk and rename over `dest`; the lock is held until the rename is done."""
        self.file.flush()
        os.fsync(self.file.fileno())
        if os.name == "nt":  # Windows cannot rename an open file
            self.file.close()
        os.chmod(self.path, 0o644)
        os.replace(self.path, dest)
        fsync_dir(dest.parent)
        self.file.close()
        self.closed = True

    def abort(self) -> None:
        """Remove the temporary (idempotent)."""
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.file.close()
        self.closed = True

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def write_atomic(dest: Path, data: bytes) -> None:
    """Write `data` to `dest` so that `dest` is never seen half-written."""
    with TempFile(dest.parent) as tmp:
        tmp.write(data)
        tmp.commit(dest)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (no-op where directories cannot be opened)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def remove_dead_temporaries(directory: Path, recursive: bool = False) -> list[Path]:
    """Delete temporaries whose writer is gone; return what was removed."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    entries = directory.rglob(TEMP_PREFIX + "*") if recursive else directory.glob(TEMP_PREFIX + "*")
    for path in list(entries):
        if path.is_file() and not path.is_symlink() and _abandoned(path):
            removed.append(path)
    return removed


def _abandoned(path: Path) -> bool:
    """Remove `path` if no live writer holds it; True if it was removed."""
    if fcntl is None:
        try:
            if time.time() - path.stat().st_mtime < STALE_AFTER_S:
                return False
            path.unlink()
            return True
        except OSError:
            return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        try:
            path.unlink()
        except OSError:
            return False
        return True
    finally:
        os.close(fd)
