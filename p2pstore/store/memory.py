"""An in-memory fragment store that behaves exactly like the disk store.

Why: the in-memory trio network and the tests run dozens of nodes in one process, and they must
exercise the same failure paths as a datacenter: a quota that fills, bytes that rot (``corrupt``),
a disk that stops taking writes (``fail_writes``).  The conformance suite runs against both
stores, so code tested here behaves the same on a real disk.
"""

from __future__ import annotations

import bisect
import dataclasses

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
from p2pstore.store.ledger import SpaceLedger


class MemoryFragmentStore:
    """A dict-backed :class:`~p2pstore.store.api.FragmentStore`; thread-safe like the disk one."""

    def __init__(self, quota_bytes: int, *, identity_quota: int | None = None) -> None:
        """``identity_quota``: bytes one uploading identity may hold (default a quarter of the
        quota).  Raises ValueError if a quota is < 0."""
        self._ledger = SpaceLedger(quota_bytes, identity_quota)
        self._lock = self._ledger.lock
        self._data: dict[bytes, bytes] = {}
        self._uploaders: dict[bytes, bytes] = {}  # fragment id -> uploader, when it has one
        self._order: list[bytes] = []  # the ids, sorted, for paging and scrubbing
        self._disk_refusal: str | None = None
        self._quota_refused = 0
        self._closed = False

    # --- test hooks mirroring what happens to real disks ------------------------------------

    def corrupt(self, fragment_id: bytes) -> None:
        """Flip one bit of a stored fragment, as bit rot would.

        Raises FragmentNotFound, or ValueError for an empty fragment (no bit to flip).
        """
        with self._lock:
            data = self._stored(fragment_id)
            if not data:
                raise ValueError(f"fragment {short(fragment_id)} is empty: no bit to flip")
            self._data[fragment_id] = bytes([data[0] ^ 0x01]) + data[1:]

    def fail_writes(self, reason: str | None) -> None:
        """Make the next writes fail with ``reason`` (as a read-only or full disk); None heals."""
        with self._lock:
            self._disk_refusal = reason

    # --- FragmentStore ----------------------------------------------------------------------

    def put(self, fragment_id: bytes, data: bytes, uploader: bytes | None = None) -> None:
        """See :meth:`p2pstore.store.api.FragmentStore.put`."""
        check_id(fragment_id)
        check_uploader(uploader)
        check_fragment(fragment_id, data)
        with self._lock:
            self._check_open()
            self._ledger.wait_until_settled(fragment_id)
            if fragment_id in self._data:
                return
            self._check_disk(f"cannot write fragment {short(fragment_id)}")
            try:
                self._ledger.reserve(fragment_id, len(data), uploader)
            except QuotaExceeded as refused:
                if refused.identity is None:  # the store is full, not just this uploader's share
                    self._quota_refused = len(data)
                raise
            self._data[fragment_id] = bytes(data)
            if uploader is not None:
                self._uploaders[fragment_id] = uploader
            bisect.insort(self._order, fragment_id)
            self._ledger.commit(fragment_id)

    def get(self, fragment_id: bytes) -> bytes:
        """See :meth:`p2pstore.store.api.FragmentStore.get`."""
        check_id(fragment_id)
        with self._lock:
            self._check_open()
            data = self._stored(fragment_id)
        try:
            check_fragment(fragment_id, data)
        except IntegrityError as error:
            self._condemn(fragment_id, data)
            raise IntegrityError(f"{error}; removed it from the store, repair it") from error
        return data

    def has(self, fragment_id: bytes) -> bool:
        """See :meth:`p2pstore.store.api.FragmentStore.has`."""
        check_id(fragment_id)
        with self._lock:
            self._check_open()
            return fragment_id in self._data

    def size_of(self, fragment_id: bytes) -> int | None:
        """See :meth:`p2pstore.store.api.FragmentStore.size_of`."""
        check_id(fragment_id)
        with self._lock:
            self._check_open()
            data = self._data.get(fragment_id)
            return None if data is None else len(data)

    def delete(self, fragment_id: bytes) -> bool:
        """See :meth:`p2pstore.store.api.FragmentStore.delete`."""
        check_id(fragment_id)
        with self._lock:
            self._check_open()
            self._ledger.wait_until_settled(fragment_id)
            if fragment_id not in self._data:
                return False
            self._check_disk(f"cannot delete fragment {short(fragment_id)}")
            self._remove(fragment_id)
            return True

    def ids(self, after: bytes | None, limit: int) -> list[bytes]:
        """See :meth:`p2pstore.store.api.FragmentStore.ids`."""
        check_page(after, limit)
        with self._lock:
            self._check_open()
            start = 0 if after is None else bisect.bisect_right(self._order, after)
            return self._order[start : start + limit]

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
        """See :meth:`p2pstore.store.api.FragmentStore.scrub`."""
        check_scrub_budget(max_bytes)
        if cursor is not None:
            check_id(cursor)
        batch: list[tuple[bytes, bytes]] = []
        budget_used = 0
        with self._lock:
            self._check_open()
            position = 0 if cursor is None else bisect.bisect_right(self._order, cursor)
            for fragment_id in self._order[position:]:
                data = self._data[fragment_id]
                if batch and budget_used + len(data) > max_bytes:
                    break
                batch.append((fragment_id, data))
                budget_used += len(data)
            finished = position + len(batch) == len(self._order)
        corrupt: list[bytes] = []
        for fragment_id, data in batch:
            try:
                check_fragment(fragment_id, data)
            except IntegrityError:
                self._condemn(fragment_id, data)
                corrupt.append(fragment_id)
        return ScrubReport(
            checked=len(batch),
            bytes_checked=budget_used,
            corrupt_ids=tuple(corrupt),
            next_cursor=None if finished or not batch else batch[-1][0],
        )

    def close(self) -> None:
        """See :meth:`p2pstore.store.api.FragmentStore.close`."""
        with self._lock:
            self._closed = True

    # --- helpers (called with the lock held unless said otherwise) ---------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the fragment store is closed; open a new one")

    def _check_disk(self, what: str) -> None:
        if self._disk_refusal is not None:
            reason = f"{what}: {self._disk_refusal}"
            self._ledger.refuse_writes(reason)
            raise StoreNotWritable(
                f"store is not writable: {reason}; reads still work, fix the disk to accept "
                f"writes again"
            )
        self._ledger.accept_writes()

    def _stored(self, fragment_id: bytes) -> bytes:
        data = self._data.get(fragment_id)
        if data is None:
            raise FragmentNotFound(f"fragment {short(fragment_id)} is not in this store")
        return data

    def _remove(self, fragment_id: bytes) -> None:
        size = len(self._data.pop(fragment_id))
        del self._order[bisect.bisect_left(self._order, fragment_id)]
        self._ledger.removed(size, self._uploaders.pop(fragment_id, None))

    def _condemn(self, fragment_id: bytes, seen: bytes) -> None:
        """Remove a fragment found corrupt, unless it changed since (takes the lock)."""
        with self._lock:
            self._ledger.count_corrupt()
            if self._data.get(fragment_id) is seen:
                self._remove(fragment_id)
