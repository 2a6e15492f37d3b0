"""The data directory on disk: its layout, its lock, and atomic, durable fragment files.

Layout::

    <data_dir>/lock                  flock'ed by the one process that owns the directory
    <data_dir>/store-format          "p2pstore fragment store, format 2": how ids are computed
    <data_dir>/index.sqlite3         the index (see index.py); a cache of what fragments/ holds
    <data_dir>/tmp/<random>.part     writes in progress; anything here at open is garbage
    <data_dir>/fragments/ab/ab12...  one file per fragment, named by the hex of its id

Strategy: a fragment file appears under ``fragments/`` only by ``rename`` of a file that was
completely written and fsynced in ``tmp/`` (same filesystem, so the rename is atomic), and the
rename is made durable by fsyncing the parent directory.  So a crash at any instant leaves either
no file or the whole file, never a partial one under a fragment's name; and because every read is
hashed anyway, even a disk that lies about fsync cannot make us serve bad bytes.  The 256 prefix
directories keep any one directory near 1/256 of the fragments, and let the open-time
reconciliation work one prefix at a time in bounded memory.

Format: the ids of format 2 are Merkle roots (:mod:`p2pstore.codec.fragment_ids`); format 1
(before the marker file existed) named fragments by the SHA-256 of their bytes.  Every file of a
format-1 store would fail the new hash and be deleted as corrupt by the first open or scrub, so
:meth:`DataDirectory.check_format` refuses such a directory before anything reads it; ids cannot
be migrated in place because manifests, and so object ids and capabilities, name them.

This module does I/O only: it raises ``OSError`` and leaves turning it into ``StoreError`` (and
deciding what a refusal means) to the store.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from p2pstore.codec.fragment_ids import fragment_hasher
from p2pstore.errors import StoreError

PREFIXES = tuple(f"{p:02x}" for p in range(256))
READ_BLOCK = 1 << 20
"""Bytes per read while hashing a file in streaming mode (bounds scrub memory)."""

STORE_FORMAT = 2
FORMAT_FILE = "store-format"
_FORMAT_TEXT = "p2pstore fragment store, format {}\n"
_FORMAT_LINE = re.compile(r"p2pstore fragment store, format ([0-9]{1,6})\n")


class DataDirectory:
    """A locked data directory.  Methods may be called from several threads at once."""

    def __init__(self, root: Path) -> None:
        """Take the directory's lock, creating the directory if needed.

        Raises StoreError if it cannot be created or another process holds it.
        """
        self.root = root
        self.fragments = root / "fragments"
        self.tmp = root / "tmp"
        self.index_path = root / "index.sqlite3"
        self.lock_path = root / "lock"
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _open_lock_file(self.lock_path)
        except OSError as error:
            raise StoreError(
                f"cannot open data directory {root}: {error.strerror or error}"
            ) from error
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(self._lock_fd)
            raise StoreError(
                f"data directory {root} is in use by another store (its lock {self.lock_path} "
                f"is held); stop the other node or give this one its own data directory"
            ) from error

    def close(self) -> None:
        """Release the lock.  Idempotent."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = -1

    def check_format(self) -> None:
        """Refuse a directory of another store format; mark a new (or empty) one as ours.

        Raises StoreError, saying what to do, for a format-1 directory that holds fragment
        files (deleting nothing), a newer or unreadable marker, or a marker that cannot be
        written.  A directory without fragment files is adopted: nothing in it can be misjudged.
        """
        marker = self.root / FORMAT_FILE
        try:
            text = marker.read_text(encoding="ascii", errors="replace")[:100]
        except FileNotFoundError:
            text = None
        except OSError as error:
            raise StoreError(f"cannot read {marker}: {error.strerror or error}") from error
        if text is None:
            old = self.index_path.exists() or self.fragments.exists()
            if old and (held := self._any_fragment_file()) is not None:
                raise StoreError(
                    f"data directory {self.root} is a fragment store of format 1 (fragments named "
                    f"by SHA-256, e.g. {held}); this p2pstore uses format {STORE_FORMAT} "
                    f"(Merkle-root ids) and would take every fragment for corrupt, so it "
                    f"changed nothing. Get your objects with the previous p2pstore release, "
                    f"then start this node on an empty data directory and put them again with "
                    f"this one (their capabilities change)"
                )
            try:
                replace_file_durably(marker, [_FORMAT_TEXT.format(STORE_FORMAT).encode()])
            except OSError as error:
                raise StoreError(
                    f"cannot mark {self.root} as a store of format {STORE_FORMAT}: "
                    f"{error.strerror or error}"
                ) from error
            return
        match = _FORMAT_LINE.fullmatch(text)
        if match is None:
            raise StoreError(
                f"{marker} does not name a store format ({text[:40]!r}); if you know this is a "
                f"p2pstore data directory, write {_FORMAT_TEXT.format(STORE_FORMAT)!r} into it"
            )
        found = int(match.group(1))
        if found > STORE_FORMAT:
            raise StoreError(
                f"data directory {self.root} is a fragment store of format {found}, newer than "
                f"this p2pstore understands ({STORE_FORMAT}); upgrade p2pstore"
            )
        if found < STORE_FORMAT:
            raise StoreError(
                f"data directory {self.root} is a fragment store of format {found}; this "
                f"p2pstore reads format {STORE_FORMAT} only: read your objects back with the "
                f"release that wrote it, then start this node on an empty data directory"
            )

    def _any_fragment_file(self) -> str | None:
        """The name of one entry under ``fragments/``, or None if there is none."""
        for prefix in PREFIXES:
            try:
                with os.scandir(self.fragments / prefix) as entries:
                    for entry in entries:
                        return entry.name
            except FileNotFoundError:
                continue
            except OSError as error:
                raise StoreError(
                    f"cannot list {self.fragments / prefix}: {error.strerror or error}"
                ) from error
        return None

    def make_layout(self) -> None:
        """Create ``tmp/``, ``fragments/`` and its 256 prefix directories if missing."""
        self.tmp.mkdir(exist_ok=True)
        created = False
        if not self.fragments.is_dir():
            self.fragments.mkdir()
            created = True
        for prefix in PREFIXES:
            directory = self.fragments / prefix
            if not directory.is_dir():
                directory.mkdir()
                created = True
        if created:
            fsync_directory(self.fragments)
            fsync_directory(self.root)

    def path_of(self, fragment_id: bytes) -> Path:
        """Where the file of ``fragment_id`` lives."""
        name = fragment_id.hex()
        return self.fragments / name[:2] / name

    def write_atomic(self, fragment_id: bytes, data: bytes) -> None:
        """Write ``data`` as the file of ``fragment_id``: all of it, durably, or nothing.

        Raises OSError; the temporary file is then removed (or left for the next open).
        """
        final = self.path_of(fragment_id)
        temporary = self.tmp / f"{secrets.token_hex(8)}.part"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, final)
        except OSError as error:
            _unlink_noting(temporary, error)
            raise
        try:
            fsync_directory(final.parent)
        except OSError as error:
            _unlink_noting(final, error)  # not known durable: do not leave it half-promised
            raise

    def read(self, fragment_id: bytes, limit: int) -> tuple[bytes, int]:
        """At most ``limit`` bytes of the fragment's file, and the file's inode number.

        Raises FileNotFoundError if there is no file, OSError if it cannot be read.
        """
        with open(self.path_of(fragment_id), "rb", buffering=0) as file:
            inode = os.fstat(file.fileno()).st_ino
            chunks = []
            remaining = limit
            while remaining > 0:
                chunk = file.read(min(remaining, READ_BLOCK))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks), inode

    def digest(self, path: Path, limit: int) -> tuple[bytes, int, int]:
        """Hash at most ``limit`` bytes of ``path`` in bounded memory.

        Returns (digest, bytes read, inode).  Raises FileNotFoundError or OSError.
        """
        hasher = fragment_hasher()
        read = 0
        with open(path, "rb", buffering=0) as file:
            inode = os.fstat(file.fileno()).st_ino
            while read < limit:
                chunk = file.read(min(limit - read, READ_BLOCK))
                if not chunk:
                    break
                hasher.update(chunk)
                read += len(chunk)
        return hasher.digest(), read, inode

    def inode_of(self, fragment_id: bytes) -> int | None:
        """The inode of the fragment's file, or None if there is none."""
        try:
            return self.path_of(fragment_id).stat().st_ino
        except FileNotFoundError:
            return None

    def unlink(self, path: Path) -> bool:
        """Remove ``path``; False if it was already gone.  Raises OSError."""
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def prefix_entries(self, prefix: str) -> Iterator[os.DirEntry[str]]:
        """The entries of one prefix directory (none if it is missing).  Raises OSError."""
        try:
            with os.scandir(self.fragments / prefix) as entries:
                yield from entries
        except FileNotFoundError:
            return

    def tmp_entries(self) -> list[Path]:
        """Everything left in ``tmp/`` (writes that never finished)."""
        try:
            return sorted(self.tmp.iterdir())
        except FileNotFoundError:
            return []


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file_durably(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace ``path`` with the concatenated ``chunks``, atomically and durably: a temporary
    file beside it (mode 0600), fsync, rename, fsync of the directory, so a crash leaves the
    old file or the new one, never half of one.  For small state files beside the store (saved
    contacts and records).  Blocking; raises ``OSError``."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)  # left by a crash; never written through (a link)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, 0o600)
    try:
        try:
            for chunk in chunks:
                _write_all(descriptor, chunk)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except OSError as error:  # a full disk keeps no half-written copy beside the old file
        _unlink_noting(temporary, error)
        raise
    fsync_directory(path.parent)


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        if not path.exists():
            raise
        # A read-only disk: an existing lock file can still be flock'ed through a read-only fd.
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_noting(path: Path, error: OSError) -> None:
    """Remove ``path`` while handling ``error``; if that fails too, say so on ``error``."""
    try:
        path.unlink(missing_ok=True)
    except OSError as cleanup_error:
        error.add_note(f"and {path} could not be removed: {cleanup_error}")
