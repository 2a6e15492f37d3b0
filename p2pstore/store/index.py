"""The SQLite index of a disk store: which fragments it holds, their sizes and uploaders.

Why SQLite: sorted paging (``ids``), a resumable scrub cursor and startup totals all come from one
B-tree keyed by id (``WITHOUT ROWID``: the id *is* the key, and SQLite compares BLOBs with memcmp,
the same order as Python ``bytes``), at ~6 us a lookup, ~20 us a commit.

Durability: WAL with ``synchronous=NORMAL``.  A commit then survives a crash of the process
(kill -9) but may be rolled back by a power loss, while ``FULL`` costs ~20x more per commit
(an fsync each, measured ~400 us here).  We can afford NORMAL because the index is a cache of the
files: the store fsyncs every fragment file before it indexes it, and on every open reconciles the
two (a file without a row is hashed and re-indexed, a row without a file dropped).  So a lost
commit never loses a fragment nor makes one servable that should not be.

Threading: one connection opened with ``check_same_thread=False``; the store serialises all calls
under its lock (measured: a shared connection answers a lookup in ~6 us, opening one per call costs
~160 us).  Every ``sqlite3.Error`` leaves here as ``StoreError`` naming the index file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from p2pstore.errors import StoreError

SCHEMA_VERSION = 2
"""1: (id, size).  2: and the uploader, the node id of the identity that stored the fragment
here (NULL when the node stored it itself, or for rows of version 1 and files re-indexed at open:
they count against no identity's quota).  A version 1 index is migrated in place when opened."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fragments (
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32),
    size INTEGER NOT NULL CHECK (size >= 0),
    uploader BLOB CHECK (uploader IS NULL OR length(uploader) = 20)
) WITHOUT ROWID
"""

_MIGRATIONS = {
    1: "ALTER TABLE fragments ADD COLUMN uploader BLOB "
    "CHECK (uploader IS NULL OR length(uploader) = 20)",
}
"""From version N to N+1."""


class FragmentIndex:
    """Rows (id, size, uploader); not thread-safe by itself: the store calls it under its lock."""

    def __init__(self, path: Path) -> None:
        """Open or create the index at ``path``.

        Raises StoreError if it is unreadable, corrupt, or from a newer p2pstore.
        """
        self.path = path
        with self._translated("open"):
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._prepare()
        except StoreError:
            self._db.close()
            raise

    def _prepare(self) -> None:
        with self._translated("open"):
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"index {self.path} has schema {version}, newer than this p2pstore "
                f"understands ({SCHEMA_VERSION}); upgrade p2pstore"
            )
        if version == 0:
            with self._translated("create its table"):
                self._db.execute(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version < SCHEMA_VERSION:
            with self._translated(f"migrate from schema {version}"), self.transaction():
                for step in range(version, SCHEMA_VERSION):
                    self._db.execute(_MIGRATIONS[step])
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._translated("close"):
            self._db.close()

    def size_of(self, fragment_id: bytes) -> int | None:
        """The indexed size of ``fragment_id``, or None if it is not indexed."""
        with self._translated("look up a fragment"):
            row = self._db.execute(
                "SELECT size FROM fragments WHERE id = ?", (fragment_id,)
            ).fetchone()
        return None if row is None else int(row[0])

    def uploader_of(self, fragment_id: bytes) -> bytes | None:
        """Who stored ``fragment_id`` here (None: the node itself, unknown, or not indexed)."""
        with self._translated("look up a fragment"):
            row = self._db.execute(
                "SELECT uploader FROM fragments WHERE id = ?", (fragment_id,)
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def insert(self, fragment_id: bytes, size: int, uploader: bytes | None = None) -> None:
        """Index ``fragment_id`` with ``size`` and ``uploader`` (replacing any row it had)."""
        with self._translated("record a fragment"):
            self._db.execute(
                "INSERT OR REPLACE INTO fragments (id, size, uploader) VALUES (?, ?, ?)",
                (fragment_id, size, uploader),
            )

    def uploader_totals(self) -> dict[bytes, int]:
        """Bytes stored per uploader (rows without one are left out)."""
        with self._translated("count fragments per uploader"):
            rows = self._db.execute(
                "SELECT uploader, sum(size) FROM fragments WHERE uploader IS NOT NULL "
                "GROUP BY uploader"
            ).fetchall()
        return {bytes(row[0]): int(row[1]) for row in rows}

    def remove(self, fragment_id: bytes) -> None:
        """Drop the row of ``fragment_id`` if there is one."""
        with self._translated("drop a fragment"):
            self._db.execute("DELETE FROM fragments WHERE id = ?", (fragment_id,))

    def rows_after(self, after: bytes | None, limit: int) -> list[tuple[bytes, int]]:
        """Up to ``limit`` (id, size) rows with id > ``after``, in id order."""
        with self._translated("list fragments"):
            rows = self._db.execute(
                "SELECT id, size FROM fragments WHERE id > ? ORDER BY id LIMIT ?",
                (after or b"", limit),
            ).fetchall()
        return [(bytes(row[0]), int(row[1])) for row in rows]

    def rows_with_prefix(self, first_byte: int) -> dict[bytes, int]:
        """Every (id: size) whose id starts with ``first_byte`` (about 1/256 of the index)."""
        low = bytes([first_byte])
        with self._translated("list fragments"):
            if first_byte == 0xFF:
                cursor = self._db.execute("SELECT id, size FROM fragments WHERE id >= ?", (low,))
            else:
                cursor = self._db.execute(
                    "SELECT id, size FROM fragments WHERE id >= ? AND id < ?",
                    (low, bytes([first_byte + 1])),
                )
            return {bytes(row[0]): int(row[1]) for row in cursor}

    def totals(self) -> tuple[int, int]:
        """(number of fragments, sum of their sizes)."""
        with self._translated("count fragments"):
            count, total = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM fragments"
            ).fetchone()
        return int(count), int(total)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one commit (used by the open-time reconciliation)."""
        with self._translated("begin a transaction"):
            self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            with self._translated("roll back"):
                self._db.execute("ROLLBACK")
            raise
        with self._translated("commit"):
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise StoreError(
                f"index {self.path} failed to {what}: {error}; if the file is damaged, move it "
                f"aside and restart: the store rebuilds the index from the fragment files"
            ) from error
