"""The books of a fragment store: counts, quota reservations, in-flight puts, writability.

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


class SpaceLedger:
    """Counters and reservations for one store; see the module docstring for the locking rule."""

    def __init__(self, quota_bytes: int) -> None:
        if quota_bytes < 0:
            raise ValueError(f"quota_bytes must be >= 0, got {quota_bytes}")
        self.lock = threading.Condition()
        self.quota_bytes = quota_bytes
        self.fragments = 0
        self.bytes_used = 0
        self.corrupt_found = 0
        self._pending: dict[bytes, int] = {}
        self._reserved = 0
        self._refusal: str | None = None

    # --- puts in flight ---------------------------------------------------------------------

    def wait_until_settled(self, fragment_id: bytes) -> None:
        """Block until no other thread is writing ``fragment_id`` (releases the lock meanwhile)."""
        while fragment_id in self._pending:
            self.lock.wait()

    def reserve(self, fragment_id: bytes, size: int) -> None:
        """Book ``size`` bytes for a put of ``fragment_id``.

        Raises QuotaExceeded, naming used, reserved, quota and requested bytes, if they do not fit.
        """
        if self.bytes_used + self._reserved + size > self.quota_bytes:
            raise QuotaExceeded(
                f"fragment store is full: {self.bytes_used} bytes used and {self._reserved} "
                f"reserved of a {self.quota_bytes}-byte quota, so it cannot take {size} more "
                f"bytes for fragment {short(fragment_id)}; delete fragments or raise the quota"
            )
        self._pending[fragment_id] = size
        self._reserved += size

    def commit(self, fragment_id: bytes) -> None:
        """The put of ``fragment_id`` is stored: turn its booking into used space."""
        size = self._settle(fragment_id)
        self.added(size)

    def release(self, fragment_id: bytes) -> None:
        """The put of ``fragment_id`` failed: give its booking back."""
        self._settle(fragment_id)

    def _settle(self, fragment_id: bytes) -> int:
        size = self._pending.pop(fragment_id)
        self._reserved -= size
        self.lock.notify_all()
        return size

    # --- stored fragments -------------------------------------------------------------------

    def added(self, size: int) -> None:
        """One fragment of ``size`` bytes joined the store."""
        self.fragments += 1
        self.bytes_used += size

    def removed(self, size: int) -> None:
        """One fragment of ``size`` bytes left the store."""
        self.fragments -= 1
        self.bytes_used -= size

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
