"""Content-addressed blobs under `<root>/blobs/sha256-<hex>`: written hashed, verified, renamed.

A blob becomes visible only once its bytes hash to its name, so a reader never meets a
partial or corrupt blob written by us; an interrupted write leaves a locked temporary that
`cleanup` removes once its writer is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from trio_llm.store.atomic import TempFile, remove_dead_temporaries
from trio_llm.store.errors import BlobNotFound, DigestMismatch
from trio_llm.store.names import blob_filename, parse_digest

CHUNK = 4 << 20
_BLOB_FILE = re.compile(r"sha256-([0-9a-f]{64})\Z")
_LEGACY_FILE = re.compile(r"sha256:([0-9a-fA-F]{64})\Z")


class BlobWriter:
    """Bytes streamed into a locked temporary while hashing; `commit` verifies, then renames."""

    def __init__(self, blobs: BlobStore, expected: str | None = None) -> None:
        self.blobs = blobs
        self.expected = parse_digest(expected) if expected is not None else None
        self._tmp = TempFile(blobs.directory)
        self._hash = hashlib.sha256()
        self.digest: str | None = None

    @property
    def size(self) -> int:
        return self._tmp.size

    @property
    def digest_so_far(self) -> str:
        """The digest of what has been written: pin it before `commit` makes it visible."""
        return "sha256:" + self._hash.hexdigest()

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._tmp.write(data)

    def commit(self) -> str:
        """Check the digest and make the blob visible; returns its digest. Idempotent per content.

        On a mismatch the temporary is removed and DigestMismatch raised: nothing is stored.
        """
        digest = "sha256:" + self._hash.hexdigest()
        if self.expected is not None and digest != self.expected:
            self._tmp.abort()
            raise DigestMismatch(self.expected, digest)
        dest = self.blobs.path(digest)
        if dest.is_file() and dest.stat().st_size == self._tmp.size:
            self._tmp.abort()  # the same content is already there
        else:
            self._tmp.commit(dest)
        self.digest = digest
        return digest

    def abort(self) -> None:
        self._tmp.abort()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.digest is None:
            self.abort()


class BlobStore:
    """The `blobs/` folder of a store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, digest: str) -> Path:
        """Where a blob lives (it may not exist). Raises InvalidDigest for a malformed digest."""
        return self.directory / blob_filename(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(parse_digest(digest)) from None

    def writer(self, expected: str | None = None) -> BlobWriter:
        """A writer for a new blob; pass `expected` to refuse bytes that hash to anything else."""
        return BlobWriter(self, expected)

    def write_bytes(self, data: bytes, expected: str | None = None) -> tuple[str, int]:
        """Store a small blob whole; returns (digest, size)."""
        with self.writer(expected) as w:
            w.write(data)
            return w.commit(), len(data)

    def read_bytes(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(parse_digest(digest)) from None

    def verify(self, digest: str) -> bool:
        """Re-hash a stored blob and say whether it still matches its name."""
        h = hashlib.sha256()
        with open(self.path(digest), "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return "sha256:" + h.hexdigest() == parse_digest(digest)

    def digests(self) -> set[str]:
        """Every stored blob's digest (temporaries and foreign files are not blobs)."""
        if not self.directory.is_dir():
            return set()
        found = set()
        for entry in os.scandir(self.directory):
            match = _BLOB_FILE.match(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                found.add("sha256:" + match.group(1))
        return found

    def remove(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def cleanup(self) -> list[Path]:
        """Remove abandoned temporaries and rename legacy `sha256:<hex>` files; return removals."""
        removed = remove_dead_temporaries(self.directory)
        if self.directory.is_dir():
            for entry in os.scandir(self.directory):
                match = _LEGACY_FILE.match(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    dest = self.path("sha256:" + match.group(1))
                    if dest.exists():
                        os.unlink(entry.path)
                    else:
                        os.replace(entry.path, dest)
        return removed


def stream_into(writer: BlobWriter, source: BinaryIO, chunk: int = CHUNK) -> Iterator[int]:
    """Copy `source` into `writer`, yielding the byte count after each chunk."""
    while data := source.read(chunk):
        writer.write(data)
        yield writer.size
