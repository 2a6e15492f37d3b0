"""Parts of multipart uploads in progress, spooled to the gateway's disk until completed.

Strategy: a part is not an object of the mesh.  Every mesh object costs a lookup, a receipt
from each holder and two signed records (manifest, placement) that stewards then keep, audit
and renew; paid per 8 MiB part, that cost a multipart upload twice the CPU per MiB on the nodes
and half the throughput of one put of the whole (``benchmarks/gateway.py``).  So UploadPart
writes the body to a file here, fsynced before the part is acknowledged (an acknowledged part
survives a restart, as S3 promises), and CompleteMultipartUpload streams the chosen parts, in
order, into the mesh as one object, read straight from the files by the client's encoding
threads.  The body's hashes (ETag, signature, checksum) are taken in the same worker thread
that writes it, off the thread that serves every request.

Bounded: at most ``limit`` bytes are spooled; a part that does not fit is stored in the mesh
as an object of its own, as before (slower, never refused).  The files hold plaintext on the
institution's own side, readable by the gateway's user only, and go when their upload
completes, is aborted or expires; a file no part names (a write cut by a crash) is removed at
start.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import trio

from p2pstore.gateway.backend import Blob
from p2pstore.gateway.s3errors import S3Error

SPOOLED = "spool:"
"""The prefix of a spooled part's blob ref; the rest is its file's name."""
BATCH = 1 << 20
"""Bytes gathered before one hop to a worker thread writes and hashes them."""
_PART_NAME = re.compile(r"[0-9a-f]{32}")


class Hashes(Protocol):
    def update(self, data: bytes, /) -> None: ...


def is_spooled(blob: Blob) -> bool:
    return blob.ref.startswith(SPOOLED)


class PartSpool:
    """Part files under ``directory`` (created 0700 if missing), at most ``limit`` bytes."""

    def __init__(
        self, directory: Path, *, limit: int, entropy: Callable[[int], bytes] = os.urandom
    ) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.limit = limit
        self.entropy = entropy
        self.used = 0
        self.threads = trio.CapacityLimiter(max(2, os.cpu_count() or 2))

    def keep_only(self, names: Iterable[str]) -> None:
        """Remove every part file but ``names`` (those parts still name) and count what stays;
        a file not named as parts are is left alone, whatever the directory holds."""
        kept = set(names)
        self.used = 0
        for path in self.directory.iterdir():
            if path.name in kept:
                self.used += path.stat().st_size
            elif _PART_NAME.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)

    def writer(self, size: int, hashes: Hashes) -> PartWriter | None:
        """A writer for a part of ``size`` bytes, or None when the spool has no room."""
        if self.used + size > self.limit:
            return None
        self.used += size
        return PartWriter(self, self.entropy(16).hex(), size, hashes)

    def remove(self, blob: Blob) -> None:
        """Forget a spooled part's file (blocking: a quick unlink)."""
        if is_spooled(blob):
            (self.directory / blob.ref.removeprefix(SPOOLED)).unlink(missing_ok=True)
            self.used = max(0, self.used - blob.size)

    def reader(self, blobs: Sequence[Blob]) -> io.BufferedReader:
        """The concatenation of spooled parts, as a blocking file for a worker thread."""
        return io.BufferedReader(_Concatenation(self.directory, blobs), BATCH)


class PartWriter:
    """One part being written: :meth:`write` the body's pieces, then :meth:`close`; on any
    failure :meth:`discard` (the file goes, its room is given back)."""

    def __init__(self, spool: PartSpool, name: str, size: int, hashes: Hashes) -> None:
        self.spool = spool
        self.path = spool.directory / name
        self.blob = Blob(SPOOLED + name, size)
        self.hashes = hashes
        self.written = 0
        self._pending: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None

    async def write(self, piece: bytes) -> None:
        self.written += len(piece)
        if self.written > self.blob.size:
            raise S3Error("IncompleteBody", "the body is longer than its declared length")
        self._pending.append(piece)
        self._buffered += len(piece)
        if self._buffered >= BATCH:
            await self._flush()

    async def close(self) -> Blob:
        """Write what is buffered and fsync: the part is on disk.  ``IncompleteBody`` if
        fewer bytes than declared came."""
        await self._flush()
        if self.written != self.blob.size:
            raise S3Error(
                "IncompleteBody", f"the body ended after {self.written} of {self.blob.size} bytes"
            )
        await trio.to_thread.run_sync(self._sync, limiter=self.spool.threads)
        return self.blob

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.spool.remove(self.blob)

    async def _flush(self) -> None:
        pieces, self._pending, self._buffered = self._pending, [], 0
        await trio.to_thread.run_sync(self._write, pieces, limiter=self.spool.threads)

    def _write(self, pieces: list[bytes]) -> None:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.path, flags, 0o600)
        for piece in pieces:
            self.hashes.update(piece)
        view = [memoryview(p) for p in pieces]
        while view:
            done = os.writev(self._fd, view)
            while view and done >= len(view[0]):
                done -= len(view.pop(0))
            if view and done:
                view[0] = view[0][done:]

    def _sync(self) -> None:
        if self._fd is None:  # an empty part
            self._write([])
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None


class _Concatenation(io.RawIOBase):
    """Spooled parts read one after the other; a file shorter or longer than its part's
    recorded size is an error, never silently other bytes."""

    def __init__(self, directory: Path, blobs: Sequence[Blob]) -> None:
        self.directory = directory
        self.blobs = list(blobs)
        self.position = 0
        self.left = 0
        self.file: io.FileIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self.file is None or self.left == 0:
            if self.file is not None:
                self._end_of_part()
            if self.position == len(self.blobs):
                return 0
            blob = self.blobs[self.position]
            self.position += 1
            try:
                self.file = io.FileIO(self.directory / blob.ref.removeprefix(SPOOLED), "r")
            except FileNotFoundError:
                raise S3Error(
                    "InvalidPart", "a part was uploaded again while the upload was completed"
                ) from None
            self.left = blob.size
        count = self.file.readinto(memoryview(buffer)[: self.left])
        if not count:
            raise S3Error("InternalError", "a spooled part is shorter than when it was stored")
        self.left -= count
        return count

    def _end_of_part(self) -> None:
        assert self.file is not None
        extra = self.file.read(1)
        self.file.close()
        self.file = None
        if extra:
            raise S3Error("InternalError", "a spooled part is longer than when it was stored")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        super().close()
