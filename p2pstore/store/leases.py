"""The holder's lease table: when each fragment was stored, who leased it until when, and the
retention shown for its objects, in the fragment store's SQLite index.

Why beside the index: the leases are what decides a fragment's deletion, so they must survive
restarts like the fragments do; a lost commit (``synchronous=NORMAL``, see ``store.index``)
can only lose a renewal, which the next steward round repeats, or a retention proof, which
stewards show again -- and a lapse is judged no earlier than a grace after the node started.
The rules themselves are pure (``core.leases``); this module stores their inputs:

* ``fragment_life``: per fragment, when it was last stored (NULL: before leases existed),
  whether it was stated in a receipt since (``fresh`` = not yet), and the latest lease expiry;
* ``steward_leases``: per (steward, fragment), the expiry that steward granted and the
  fragment's size and object: one steward's live leases are bounded in bytes;
* ``object_retention``: per object, the latest retention date and legal hold shown (only ever
  extended).

Threading: one connection (``check_same_thread=False``) behind one lock; every method is
blocking and may be called from worker threads.  Every ``sqlite3.Error`` leaves as
``StoreError``.  Times are Unix milliseconds in the table, seconds in the API.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from p2pstore.core.leases import FragmentLife, Retention, free_at
from p2pstore.errors import StoreError
from p2pstore.store.disk import DiskFragmentStore

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fragment_life (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32),
        size INTEGER NOT NULL CHECK (size >= 0),
        stored_ms INTEGER,
        fresh INTEGER NOT NULL DEFAULT 0,
        leased_ms INTEGER
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS steward_leases (
        steward BLOB NOT NULL CHECK (length(steward) = 20),
        id BLOB NOT NULL CHECK (length(id) = 32),
        object BLOB NOT NULL CHECK (length(object) = 32),
        expires_ms INTEGER NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (steward, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS steward_leases_by_id ON steward_leases (id, object)",
    """CREATE TABLE IF NOT EXISTS object_retention (
        object BLOB PRIMARY KEY NOT NULL CHECK (length(object) = 32),
        retain_until INTEGER NOT NULL,
        legal_hold INTEGER NOT NULL
    ) WITHOUT ROWID""",
)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@dataclass(frozen=True, slots=True)
class Applied:
    """What one steward's renewal did: fragments whose lease it extended, and those refused
    because the steward's share of this holder is full."""

    applied: int
    over_share: int


class LeaseTable:
    """The lease table of one fragment store (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        """Open or create the tables at ``path`` (the store's index file, or ``":memory:"``).

        Raises :class:`StoreError` if SQLite cannot."""
        self.path = str(path)
        self.fallback: str | None = None
        """Why the table is in memory instead of the store's index file (None: it is not)."""
        self._lock = threading.Lock()
        with self._translated("open"):
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=5000")
            self.created = (
                self._db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'fragment_life'"
                ).fetchone()[0]
                == 0
            )
            for statement in _SCHEMA:
                self._db.execute(statement)

    def close(self) -> None:
        with self._lock, self._translated("close"):
            self._db.close()

    # -- what the fragment service records ----------------------------------------------------

    def adopt(self, fragments: Iterable[tuple[bytes, int]], now: float | None) -> int:
        """Give a row to each (fragment id, size) that has none, stored at ``now`` (None:
        before leases existed, kept until a lease covers it); returns how many were new."""
        stored = None if now is None else _ms(now)
        with self._write("adopt fragments"):
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO fragment_life (id, size, stored_ms) VALUES (?, ?, ?)",
                [(fragment_id, size, stored) for fragment_id, size in fragments],
            )
            return int(self._db.total_changes - before)

    def stored(self, fragment_id: bytes, size: int, now: float) -> None:
        """The fragment was (again) stored at ``now``: fresh until a receipt states it."""
        with self._write("record a stored fragment"):
            self._db.execute(
                "INSERT INTO fragment_life (id, size, stored_ms, fresh) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (id) DO UPDATE SET stored_ms = excluded.stored_ms, fresh = 1",
                (fragment_id, size, _ms(now)),
            )

    def stated(self, fragment_ids: Iterable[bytes], expiry: float) -> int:
        """Fresh fragments among ``fragment_ids`` were stated held in a receipt: each gets
        its initial lease until ``expiry`` and is fresh no more.  Returns how many."""
        with self._write("record an initial lease"):
            before = self._db.total_changes
            self._db.executemany(
                "UPDATE fragment_life SET fresh = 0, leased_ms = max(coalesce(leased_ms, 0), ?) "
                "WHERE id = ? AND fresh = 1",
                [(_ms(expiry), fragment_id) for fragment_id in fragment_ids],
            )
            return int(self._db.total_changes - before)

    # -- what stewards grant ------------------------------------------------------------------

    def steward_bytes(self, steward: bytes, now: float) -> int:
        """Bytes ``steward``'s unexpired leases keep alive here."""
        with self._read("count a steward's leases"):
            row = self._db.execute(
                "SELECT coalesce(sum(size), 0) FROM steward_leases "
                "WHERE steward = ? AND expires_ms > ?",
                (steward, _ms(now)),
            ).fetchone()
        return int(row[0])

    def renew(
        self,
        steward: bytes,
        leases: Iterable[tuple[bytes, bytes]],
        expiry: float,
        now: float,
        per_steward: int,
    ) -> Applied:
        """Apply ``steward``'s lease until ``expiry`` on each (object, fragment id) it
        names that is stored here (others are ignored), within ``per_steward`` bytes of its
        unexpired leases; a lease never shortens what the steward granted before."""
        applied = over = 0
        expires, at = _ms(expiry), _ms(now)
        with self._write("renew leases"):
            used = self._db.execute(
                "SELECT coalesce(sum(size), 0) FROM steward_leases "
                "WHERE steward = ? AND expires_ms > ?",
                (steward, at),
            ).fetchone()[0]
            for object_id, fragment_id in leases:
                found = self._db.execute(
                    "SELECT size FROM fragment_life WHERE id = ?", (fragment_id,)
                ).fetchone()
                if found is None:
                    continue
                size = int(found[0])
                row = self._db.execute(
                    "SELECT expires_ms, size FROM steward_leases WHERE steward = ? AND id = ?",
                    (steward, fragment_id),
                ).fetchone()
                counted = row is not None and row[0] > at
                if not counted and used + size > per_steward:
                    over += 1
                    continue
                used += 0 if counted else size
                self._db.execute(
                    "INSERT INTO steward_leases (steward, id, object, expires_ms, size) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (steward, id) DO UPDATE SET "
                    "expires_ms = max(expires_ms, excluded.expires_ms), object = excluded.object",
                    (steward, fragment_id, object_id, expires, size),
                )
                self._db.execute(
                    "UPDATE fragment_life SET fresh = 0, "
                    "leased_ms = max(coalesce(leased_ms, 0), ?) WHERE id = ?",
                    (expires, fragment_id),
                )
                applied += 1
        return Applied(applied, over)

    def retain(self, object_id: bytes, retention: Retention) -> Retention:
        """Extend the retention shown for ``object_id`` (never shorten it); return it."""
        with self._write("record a retention"):
            row = self._db.execute(
                "SELECT retain_until, legal_hold FROM object_retention WHERE object = ?",
                (object_id,),
            ).fetchone()
            known = Retention() if row is None else Retention(int(row[0]), bool(row[1]))
            joined = known.extended(retention)
            self._db.execute(
                "INSERT OR REPLACE INTO object_retention VALUES (?, ?, ?)",
                (object_id, joined.retain_until, int(joined.legal_hold)),
            )
        return joined

    # -- what the sweep reads -----------------------------------------------------------------

    def life(self, fragment_id: bytes) -> FragmentLife | None:
        """What the table knows of a fragment (None: no row)."""
        with self._read("read a fragment's life"):
            row = self._db.execute(
                "SELECT stored_ms, leased_ms FROM fragment_life WHERE id = ?", (fragment_id,)
            ).fetchone()
            if row is None:
                return None
            return FragmentLife(
                None if row[0] is None else row[0] / 1000,
                None if row[1] is None else row[1] / 1000,
                self._retention_of(fragment_id),
            )

    def due(self, now: float, *, grace: float, up_since: float, limit: int) -> list[bytes]:
        """Up to ``limit`` fragments the pure rule says to free at ``now``."""
        cutoff = _ms(now - grace)
        if up_since > now - grace:
            return []
        with self._read("find lapsed fragments"):
            rows = self._db.execute(
                "SELECT id, stored_ms, leased_ms FROM fragment_life "
                "WHERE coalesce(stored_ms, leased_ms) IS NOT NULL "
                "AND max(coalesce(stored_ms, 0), coalesce(leased_ms, 0)) <= ? LIMIT ?",
                (cutoff, limit),
            ).fetchall()
            found = []
            for fragment_id, stored_ms, leased_ms in rows:
                life = FragmentLife(
                    None if stored_ms is None else stored_ms / 1000,
                    None if leased_ms is None else leased_ms / 1000,
                    self._retention_of(bytes(fragment_id)),
                )
                when = free_at(life, grace=grace, up_since=up_since)
                if when is not None and now >= when:
                    found.append(bytes(fragment_id))
        return found

    def forget(self, fragment_id: bytes) -> None:
        """Drop every row of a fragment (it was freed, or is gone)."""
        with self._write("forget a fragment"):
            self._db.execute("DELETE FROM fragment_life WHERE id = ?", (fragment_id,))
            self._db.execute("DELETE FROM steward_leases WHERE id = ?", (fragment_id,))

    def known(self, fragment_ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``fragment_ids`` have a row."""
        with self._read("look up fragments"):
            return {
                fragment_id
                for fragment_id in fragment_ids
                if self._db.execute(
                    "SELECT 1 FROM fragment_life WHERE id = ?", (fragment_id,)
                ).fetchone()
                is not None
            }

    def _retention_of(self, fragment_id: bytes) -> Retention:
        rows = self._db.execute(
            "SELECT r.retain_until, r.legal_hold FROM object_retention r "
            "JOIN steward_leases s ON s.object = r.object WHERE s.id = ?",
            (fragment_id,),
        ).fetchall()
        retention = Retention()
        for until, hold in rows:
            retention = retention.extended(Retention(int(until), bool(hold)))
        return retention

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[None]:
        with self._lock, self._translated(what):
            yield

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[None]:
        with self._lock, self._translated(what):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise StoreError(f"lease table {self.path} failed to {what}: {error}") from error


def lease_table_for(store: object) -> LeaseTable:
    """The lease table of ``store``: in its index file on disk, in memory otherwise; in memory
    too (``fallback`` saying why) if the index file refuses it, e.g. on a read-only disk, where
    the store still serves reads and nothing is stored anyway."""
    if not isinstance(store, DiskFragmentStore):
        return LeaseTable(":memory:")
    try:
        return LeaseTable(store.index_path)
    except StoreError as exc:
        table = LeaseTable(":memory:")
        table.fallback = str(exc)
        return table
