"""The fragment store of a datacenter node: files on disk, an SQLite index, a quota.

Why this shape: the files are the truth and the index a cache of them (see directory.py for the
atomic write, index.py for why the index may lag, recovery.py for how they are reconciled at open).
This module holds the rules that tie them together under one lock:

* put: hash, reserve quota (the store's, and the uploader's share of it), write the file
  (outside the lock), then index it with its uploader;
* get: look the size up, read at most size + 1 bytes (outside the lock), hash; a mismatch removes
  the fragment (file and row) so it is never served again, and is reported as IntegrityError;
* a write the disk refuses (EROFS, ENOSPC, EACCES, ...) becomes StoreNotWritable naming the path
  and the OS error, and ``usage()`` says "not writable" with that reason until a write succeeds;
  reads go on as before;
* at open, one small probe write finds a disk that already refuses writes (so ``/health`` says so
  before the first put fails), and an index the disk will not let SQLite open for writing is
  opened read-only and immutable, so a node restarted on a read-only disk still serves its
  fragments.

Threading: see :mod:`p2pstore.store.api`; the lock is held for index queries and bookkeeping only,
never while hashing or moving fragment bytes.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
from pathlib import Path

from p2pstore.codec.fragment_ids import check_fragment
from p2pstore.errors import (
    FragmentNotFound,
    IntegrityError,
    QuotaExceeded,
    StoreError,
    StoreNotWritable,
)
from p2pstore.store.api import (
    ScrubReport,
    StoreUsage,
    check_id,
    check_page,
    check_scrub_budget,
    check_uploader,
    short,
)
from p2pstore.store.directory import DataDirectory
from p2pstore.store.index import SCHEMA_VERSION, FragmentIndex
from p2pstore.store.ledger import SpaceLedger
from p2pstore.store.recovery import Reconciliation, reconcile

SCRUB_ROWS = 256
"""Index rows fetched per query while scrubbing (the byte budget decides how many are checked)."""


class DiskFragmentStore:
    """A :class:`~p2pstore.store.api.FragmentStore` in ``data_dir`` (see the module docstring)."""

    def __init__(
        self, data_dir: Path, quota_bytes: int, *, identity_quota: int | None = None
    ) -> None:
        """Open (or create) the store in ``data_dir``, recover from any crash, and lock it.

        ``identity_quota``: bytes one uploading identity may hold (default a quarter of the
        quota).  What recovery did is in :attr:`recovered`.  Raises StoreError if the directory
        is locked by another store, cannot be created, is of another store format (nothing is
        deleted then), or its index cannot be opened (an index of an older schema is migrated in
        place); ValueError if a quota is < 0.  A disk that refuses writes does not stop the store
        from opening: it then opens read-only, and ``usage()`` says why.
        """
        self._ledger = SpaceLedger(quota_bytes, identity_quota)
        self._lock = self._ledger.lock
        self._quota_refused = 0
        self._dir = DataDirectory(data_dir)
        try:
            self._dir.check_format()  # before anything hashes a file: see directory.py
            self._index, refusal = self._open_index()
        except StoreError:
            self._dir.close()
            raise
        try:
            if refusal is not None:  # nothing can be repaired on this disk: serve what is indexed
                self.recovered: Reconciliation = Reconciliation(refusal=refusal)
            else:
                self.recovered = reconcile(self._dir, self._index)
                if self.recovered.refusal is None and (probe := write_refusal(self._dir.tmp)):
                    self.recovered = dataclasses.replace(self.recovered, refusal=probe)
            self._ledger.fragments, self._ledger.bytes_used = self._index.totals()
            self._ledger.by_uploader = self._index.uploader_totals()
        except OSError as error:
            self._close_parts()
            raise StoreError(f"cannot recover data directory {data_dir}: {error}") from error
        except StoreError:
            self._close_parts()
            raise
        if self.recovered.refusal is not None:
            self._ledger.refuse_writes(self.recovered.refusal)
        self._closed = False

    @property
    def data_dir(self) -> Path:
        """The directory this store owns."""
        return self._dir.root

    # --- FragmentStore ----------------------------------------------------------------------

    def put(self, fragment_id: bytes, data: bytes, uploader: bytes | None = None) -> None:
        """See :meth:`p2pstore.store.api.FragmentStore.put`."""
        check_id(fragment_id)
        check_uploader(uploader)
        check_fragment(fragment_id, data)
        with self._lock:
            self._ledger.wait_until_settled(fragment_id)
            self._check_open()
            if self._index.size_of(fragment_id) is not None:
                return
            try:
                self._ledger.reserve(fragment_id, len(data), uploader)
            except QuotaExceeded as refused:
                if refused.identity is None:  # the store is full, not just this uploader's share
                    self._quota_refused = len(data)
                raise
        try:
            self._dir.write_atomic(fragment_id, data)
        except OSError as error:
            with self._lock:
                self._ledger.release(fragment_id)
                raise self._refused(f"cannot write fragment {short(fragment_id)}", error) from error
        with self._lock:
            if self._closed:  # closed while writing: the file is re-indexed at the next open
                self._ledger.release(fragment_id)
                self._check_open()
            try:
                self._index.insert(fragment_id, len(data), uploader)
            except StoreError as error:
                self._ledger.release(fragment_id)
                self._ledger.refuse_writes(str(error))
                self._forget_file(fragment_id, error)
                raise
            self._ledger.commit(fragment_id)
            self._ledger.accept_writes()

    def get(self, fragment_id: bytes) -> bytes:
        """See :meth:`p2pstore.store.api.FragmentStore.get`."""
        check_id(fragment_id)
        with self._lock:
            self._check_open()
            size = self._index.size_of(fragment_id)
        if size is None:
            raise FragmentNotFound(f"fragment {short(fragment_id)} is not in this store")
        try:
            data, inode = self._dir.read(fragment_id, size + 1)
        except FileNotFoundError as error:
            self._condemn(fragment_id, None)
            raise FragmentNotFound(
                f"fragment {short(fragment_id)} was indexed but its file "
                f"{self._dir.path_of(fragment_id)} is gone; dropped it from the index"
            ) from error
        except OSError as error:
            raise StoreError(
                f"cannot read fragment {short(fragment_id)} from "
                f"{self._dir.path_of(fragment_id)}: {error.strerror or error}"
            ) from error
        try:
            check_fragment(fragment_id, data)  # a file of the wrong size fails this too
        except IntegrityError as error:
            self._condemn(fragment_id, inode)
            raise IntegrityError(f"{error}; removed it from the store, repair it") from error
        return data

    def has(self, fragment_id: bytes) -> bool:
        """See :meth:`p2pstore.store.api.FragmentStore.has`."""
        check_id(fragment_id)
        with self._lock:
            self._check_open()
            return self._index.size_of(fragment_id) is not None

    @property
    def index_path(self) -> Path:
        """The SQLite index file (the lease table lives in it too: ``store.leases``)."""
        return self._dir.index_path

    def size_of(self, fragment_id: bytes) -> int | None:
        """See :meth:`p2pstore.store.api.FragmentStore.size_of`."""
        check_id(fragment_id)
        with self._lock:
            self._check_open()
            return self._index.size_of(fragment_id)

    def delete(self, fragment_id: bytes) -> bool:
        """See :meth:`p2pstore.store.api.FragmentStore.delete`.

        The file goes first, then the row: a crash in between leaves a row without a file, which
        the next open drops (the other order could resurrect a deleted fragment).
        """
        check_id(fragment_id)
        with self._lock:
            self._ledger.wait_until_settled(fragment_id)
            self._check_open()
            size = self._index.size_of(fragment_id)
            if size is None:
                return False
            uploader = self._index.uploader_of(fragment_id)
            path = self._dir.path_of(fragment_id)
            try:
                self._dir.unlink(path)
            except OSError as error:
                what = f"cannot delete fragment {short(fragment_id)}"
                raise self._refused(what, error) from error
            self._index.remove(fragment_id)
            self._ledger.removed(size, uploader)
            return True

    def ids(self, after: bytes | None, limit: int) -> list[bytes]:
        """See :meth:`p2pstore.store.api.FragmentStore.ids`."""
        check_page(after, limit)
        with self._lock:
            self._check_open()
            return [fragment_id for fragment_id, _ in self._index.rows_after(after, limit)]

    def usage(self) -> StoreUsage:
        """See :meth:`p2pstore.store.api.FragmentStore.usage`."""
        with self._lock:
            self._check_open()
            return dataclasses.replace(self._ledger.usage(), quota_refused=self._quota_refused)

    def uploaded_by(self, uploader: bytes) -> int:
        """See :meth:`p2pstore.store.api.FragmentStore.uploaded_by`."""
        with self._lock:
            self._check_open()
            return self._ledger.by_uploader.get(uploader, 0)

    def scrub(self, max_bytes: int, cursor: bytes | None) -> ScrubReport:
        """See :meth:`p2pstore.store.api.FragmentStore.scrub`.

        Hashes each file in streaming mode, so memory stays bounded whatever the fragment size.
        """
        check_scrub_budget(max_bytes)
        if cursor is not None:
            check_id(cursor)
        checked = budget_used = 0
        corrupt: list[bytes] = []
        position = cursor
        while True:
            with self._lock:
                self._check_open()
                rows = self._index.rows_after(position, SCRUB_ROWS)
            for fragment_id, size in rows:
                if checked and budget_used + size > max_bytes:
                    return ScrubReport(checked, budget_used, tuple(corrupt), position)
                if not self._verify(fragment_id, size):
                    corrupt.append(fragment_id)
                checked += 1
                budget_used += size
                position = fragment_id
            if len(rows) < SCRUB_ROWS:
                return ScrubReport(checked, budget_used, tuple(corrupt), None)

    def close(self) -> None:
        """See :meth:`p2pstore.store.api.FragmentStore.close`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close_parts()

    def __enter__(self) -> DiskFragmentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- helpers ----------------------------------------------------------------------------

    def _close_parts(self) -> None:
        try:
            self._index.close()
        finally:
            self._dir.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the fragment store in {self._dir.root} is closed; open a new one")

    def _open_index(self) -> tuple[FragmentIndex, str | None]:
        """The index, and why the disk refuses writes when it had to be opened read-only.

        Raises the index's StoreError when the disk takes writes (the index itself is bad) or
        there is no index to read.
        """
        try:
            return FragmentIndex(self._dir.index_path), None
        except StoreError as error:
            refusal = write_refusal(self._dir.root)
            if refusal is None or not self._dir.index_path.is_file():
                raise
            try:
                return ReadOnlyIndex(self._dir.index_path), f"opened read-only: {refusal}"
            except StoreError as read_only_error:
                error.add_note(f"opening it read-only failed too: {read_only_error}")
                raise error from error.__cause__  # the first error is the one to act on

    def _refused(self, what: str, error: OSError) -> StoreNotWritable:
        """Record that the disk refused a write; the StoreNotWritable to raise (lock held)."""
        where = error.filename or self._dir.root
        reason = f"{what}: {where}: {error.strerror or error}"
        self._ledger.refuse_writes(reason)
        return StoreNotWritable(
            f"store is not writable: {reason}; reads still work, fix the disk to accept writes "
            f"again"
        )

    def _verify(self, fragment_id: bytes, size: int) -> bool:
        """Hash one fragment's file; if it is bad or gone, remove it.  True if it is good."""
        path = self._dir.path_of(fragment_id)
        try:
            digest, read, inode = self._dir.digest(path, size + 1)
        except FileNotFoundError:
            self._condemn(fragment_id, None)
            return False
        except OSError as error:
            raise StoreError(
                f"cannot read fragment {short(fragment_id)} from {path} while scrubbing: "
                f"{error.strerror or error}"
            ) from error
        if digest == fragment_id and read == size:
            return True
        self._condemn(fragment_id, inode)
        return False

    def _condemn(self, fragment_id: bytes, inode: int | None) -> None:
        """Remove a fragment found corrupt (``inode`` of the bad file) or gone (None).

        Both count in ``corrupt_found``: either way its steward must repair it.
        Only if it is still the same file: a fragment cannot be re-put while its row exists, so
        the row plus the inode identify what we read.  If the disk refuses the unlink, the row
        still goes; the file is never served (no row, and hashed on every read), and the next open
        removes it.  If the index was opened read-only the row stays too: the fragment keeps
        failing its hash (or its read) and is never served.
        """
        with self._lock:
            size = None if self._closed else self._index.size_of(fragment_id)
            if size is None or self._dir.inode_of(fragment_id) != inode:
                return
            self._ledger.count_corrupt()
            uploader = self._index.uploader_of(fragment_id)
            if inode is not None:
                try:
                    self._dir.unlink(self._dir.path_of(fragment_id))
                except OSError as error:
                    self._refused(f"cannot remove corrupt fragment {short(fragment_id)}", error)
            try:
                self._index.remove(fragment_id)
            except StoreNotWritable as error:
                self._ledger.refuse_writes(str(error))
                return
            self._ledger.removed(size, uploader)

    def _forget_file(self, fragment_id: bytes, error: StoreError) -> None:
        """Remove a file the index refused to record, so disk and books agree (lock held)."""
        try:
            self._dir.unlink(self._dir.path_of(fragment_id))
        except OSError as unlink_error:
            error.add_note(f"its file stays until the next open: {unlink_error}")


def write_refusal(directory: Path) -> str | None:
    """Why ``directory`` refuses a small write (None if it takes it): creates a probe file,
    writes one byte, removes it.  A leftover probe in ``tmp/`` is removed by the next open."""
    probe = directory / f"probe-{secrets.token_hex(4)}.part"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as error:
        return f"cannot write {error.filename or probe}: {error.strerror or error}"
    return None


class ReadOnlyIndex(FragmentIndex):
    """The index of a data directory on a disk that refuses writes, opened read-only.

    SQLite opens a WAL-mode database for reading only if it can create the ``-wal`` and ``-shm``
    files beside it, which a read-only disk forbids, unless the database is declared
    ``immutable``.  That is true here: this process holds the directory's lock and the disk takes
    no writes.  Rows that a crash left only in the ``-wal`` file are not seen, so their fragments
    are not served until the node restarts on a writable disk and the open reconciles them.
    """

    def __init__(self, path: Path) -> None:
        """Raises StoreError if the index cannot be read or has no table of this version."""
        self.path = path
        uri = f"{path.absolute().as_uri()}?mode=ro&immutable=1"
        with self._translated("open read-only"):
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            with self._translated("open read-only"):
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (1, SCHEMA_VERSION):
                raise StoreError(f"index {path} has schema {version}, not {SCHEMA_VERSION}")
        except StoreError:
            self._db.close()
            raise
        self._without_uploaders = version == 1  # cannot be migrated on a read-only disk

    def uploader_of(self, fragment_id: bytes) -> bytes | None:
        """None on a schema 1 index (it has no uploaders), else as the writable index does."""
        return None if self._without_uploaders else super().uploader_of(fragment_id)

    def uploader_totals(self) -> dict[bytes, int]:
        """Empty on a schema 1 index (it has no uploaders), else as the writable index does."""
        return {} if self._without_uploaders else super().uploader_totals()

    def insert(self, fragment_id: bytes, size: int, uploader: bytes | None = None) -> None:
        """Always refuses: see the class docstring."""
        raise self._read_only()

    def remove(self, fragment_id: bytes) -> None:
        """Always refuses: see the class docstring."""
        raise self._read_only()

    def _read_only(self) -> StoreNotWritable:
        return StoreNotWritable(
            f"store is not writable: its index {self.path} was opened read-only because the disk "
            f"refused writes when the node started; restart the node once the disk takes writes"
        )
