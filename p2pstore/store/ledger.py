"""The books of a fragment store: counts, quota reservations, in-flight puts, writability, and
the bytes each uploading identity holds.

Why a separate object: both stores must refuse a put with the same numbers and the same message,
and must never overshoot the quota when worker threads put concurrently.  The rule that makes the
second true is "reserve under the lock before writing": a put first books its size against
``bytes_used + reserved``, writes outside the lock, then commits or releases the booking.  Keeping
that rule in one place lets the conformance suite test it once for both stores.

Every method except :meth:`SpaceLedger.usage` must be called with :attr:`SpaceLedger.lock` held;
the ledger does no I/O.
"""

from __future__ import annotations

import threading

from p2pstore.errors import QuotaExceeded
from p2pstore.store.api import StoreUsage, short

IDENTITY_SHARE = 4
"""By default one uploading identity may hold 1/4 of a store's quota."""


class SpaceLedger:
    """Counters and reservations for one store; see the module docstring for the locking rule.

    ``identity_quota``: bytes one uploader may hold (stored plus being written); None means a
    quarter of ``quota_bytes``.  Puts without an uploader (the node's own: a steward placing a
    fragment it rebuilt in its own store) are bounded by the quota only.
    """

    def __init__(self, quota_bytes: int, identity_quota: int | None = None) -> None:
        if quota_bytes < 0:
            raise ValueError(f"quota_bytes must be >= 0, got {quota_bytes}")
        if identity_quota is not None and identity_quota < 0:
            raise ValueError(f"identity_quota must be >= 0, got {identity_quota}")
        self.lock = threading.Condition()
        self.quota_bytes = quota_bytes
        self.identity_quota = (
            quota_bytes // IDENTITY_SHARE if identity_quota is None else identity_quota
        )
        self.fragments = 0
        self.bytes_used = 0
        self.corrupt_found = 0
        self.by_uploader: dict[bytes, int] = {}
        """Bytes stored per uploader (the identities that have fragments here)."""
        self._pending: dict[bytes, tuple[int, bytes | None]] = {}
        self._pending_by_uploader: dict[bytes, int] = {}
        self._reserved = 0
        self._refusal: str | None = None

    # --- puts in flight ---------------------------------------------------------------------

    def wait_until_settled(self, fragment_id: bytes) -> None:
        """Block until no other thread is writing ``fragment_id`` (releases the lock meanwhile)."""
        while fragment_id in self._pending:
            self.lock.wait()

    def reserve(self, fragment_id: bytes, size: int, uploader: bytes | None = None) -> None:
        """Book ``size`` bytes for a put of ``fragment_id`` on behalf of ``uploader``.

        Raises QuotaExceeded, naming used, reserved, quota and requested bytes, if they do not
        fit the store, or else (with ``identity`` set) naming the uploader and what it holds if
        they do not fit its share.
        """
        if self.bytes_used + self._reserved + size > self.quota_bytes:
            raise QuotaExceeded(
                f"fragment store is full: {self.bytes_used} bytes used and {self._reserved} "
                f"reserved of a {self.quota_bytes}-byte quota, so it cannot take {size} more "
                f"bytes for fragment {short(fragment_id)}; delete fragments or raise the quota"
            )
        if uploader is not None:
            held = self.by_uploader.get(uploader, 0)
            writing = self._pending_by_uploader.get(uploader, 0)
            if held + writing + size > self.identity_quota:
                raise QuotaExceeded(
                    f"identity {uploader.hex()[:8]} already stores {held} bytes here (and is "
                    f"writing {writing} more) of the {self.identity_quota} bytes one identity "
                    f"may hold on this node, so fragment {short(fragment_id)} ({size} bytes) is "
                    f"refused: store it on another node",
                    identity=uploader,
                )
        self._pending[fragment_id] = (size, uploader)
        self._reserved += size
        if uploader is not None:
            _add(self._pending_by_uploader, uploader, size)

    def commit(self, fragment_id: bytes) -> None:
        """The put of ``fragment_id`` is stored: turn its booking into used space."""
        size, uploader = self._settle(fragment_id)
        self.added(size, uploader)

    def release(self, fragment_id: bytes) -> None:
        """The put of ``fragment_id`` failed: give its booking back."""
        self._settle(fragment_id)

    def _settle(self, fragment_id: bytes) -> tuple[int, bytes | None]:
        size, uploader = self._pending.pop(fragment_id)
        self._reserved -= size
        if uploader is not None:
            _add(self._pending_by_uploader, uploader, -size)
        self.lock.notify_all()
        return size, uploader

    # --- stored fragments -------------------------------------------------------------------

    def added(self, size: int, uploader: bytes | None = None) -> None:
        """One fragment of ``size`` bytes, uploaded by ``uploader``, joined the store."""
        self.fragments += 1
        self.bytes_used += size
        if uploader is not None:
            _add(self.by_uploader, uploader, size)

    def removed(self, size: int, uploader: bytes | None = None) -> None:
        """One fragment of ``size`` bytes, uploaded by ``uploader``, left the store."""
        self.fragments -= 1
        self.bytes_used -= size
        if uploader is not None:
            _add(self.by_uploader, uploader, -size)

    def count_corrupt(self) -> None:
        """A fragment was found corrupt (for the ``corrupt_found`` metric)."""
        self.corrupt_found += 1

    # --- writability ------------------------------------------------------------------------

    def refuse_writes(self, reason: str) -> None:
        """The disk refused a write: report ``reason`` until a write succeeds again."""
        self._refusal = reason

    def accept_writes(self) -> None:
        """A write succeeded: the disk takes writes again."""
        self._refusal = None

    def usage(self) -> StoreUsage:
        """A consistent snapshot of the counters (takes the lock itself)."""
        with self.lock:
            return StoreUsage(
                fragments=self.fragments,
                bytes_used=self.bytes_used,
                quota_bytes=self.quota_bytes,
                writable=self._refusal is None,
                reason=self._refusal,
                corrupt_found=self.corrupt_found,
            )


def _add(totals: dict[bytes, int], key: bytes, delta: int) -> None:
    """Add ``delta`` to ``totals[key]``, forgetting keys that reach 0 (the dict stays small)."""
    total = totals.get(key, 0) + delta
    if total:
        totals[key] = total
    else:
        totals.pop(key, None)
