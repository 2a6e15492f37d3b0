"""What every fragment store promises: the ``FragmentStore`` seam and the values it returns.

Strategy: the node never trusts a byte it did not just hash.  A store is a content-addressed map
from a fragment id (the SHA-256 of the bytes, see :mod:`p2pstore.codec.fragment_ids`) to bytes
with four promises, each tested against both implementations by one conformance suite:

* ``put`` verifies the id before it writes, and never overshoots the quota, nor the share of it
  one uploading identity may hold, even when several worker threads put at once (space is
  reserved under a lock before any byte is written); the store remembers each fragment's
  uploader, so the share holds across restarts;
* ``get`` hashes on every read; a mismatch is never served: the fragment is removed and
  :class:`~p2pstore.errors.IntegrityError` raised, so the node can tell its steward to repair it;
* a store that the disk refuses to write (read-only, full) keeps serving reads, refuses puts with
  :class:`~p2pstore.errors.StoreNotWritable`, and says why in :meth:`FragmentStore.usage`; so
  does a store whose quota refused a put (:attr:`StoreUsage.write_refusal`);
* ``scrub`` re-verifies a bounded batch per call and walks the whole store once per pass; the
  caller sleeps between batches, which is the rate limit (the store never reads a clock).

Threading contract: every method is blocking and may be called from any thread, including several
at once (the trio node calls them through ``trio.to_thread.run_sync``).  Bookkeeping is guarded by
one lock per store; hashing and file I/O run outside it, so reads and writes overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from p2pstore.codec.fragment_ids import FRAGMENT_ID_BYTES

MAX_PAGE = 10_000
"""The most ids one :meth:`FragmentStore.ids` call returns (bounded everything)."""


@dataclass(frozen=True, slots=True)
class StoreUsage:
    """A snapshot of what a store holds, for metrics and for refusing work early.

    ``writable`` is False when the disk refused the last write (read-only, full, permission);
    ``reason`` then says why, and is None otherwise.  A full *quota* is not "not writable" (the
    disk is fine): ``quota_refused`` is the size of the last fragment the quota turned away (0 if
    none), and :attr:`quota_full` says whether it would still not fit.  :attr:`write_refusal`
    gives either reason in one sentence.  ``corrupt_found`` counts fragments found corrupt (by
    ``get`` or ``scrub``) since the store was opened.
    """

    fragments: int
    bytes_used: int
    quota_bytes: int
    writable: bool
    reason: str | None
    corrupt_found: int = 0
    quota_refused: int = 0

    def __post_init__(self) -> None:
        if self.fragments < 0 or self.bytes_used < 0 or self.quota_bytes < 0:
            raise ValueError(f"usage counts must be >= 0, got {self}")
        if self.corrupt_found < 0 or self.quota_refused < 0:
            raise ValueError(f"corrupt_found and quota_refused must be >= 0, got {self}")
        if self.writable != (self.reason is None):
            raise ValueError("a store is not writable exactly when it gives a reason")

    @property
    def free_bytes(self) -> int:
        """Bytes that may still be stored before the quota refuses."""
        return max(0, self.quota_bytes - self.bytes_used)

    @property
    def quota_full(self) -> bool:
        """True while the last fragment the quota refused would still not fit."""
        return self.quota_refused > self.free_bytes

    @property
    def write_refusal(self) -> str | None:
        """Why this store refuses writes now (the disk, or a full quota); None if it takes them."""
        if self.reason is not None:
            return self.reason
        if self.quota_full:
            return (
                f"quota full: {self.bytes_used} of {self.quota_bytes} bytes used, and the last "
                f"refused fragment needed {self.quota_refused}; delete fragments or raise the quota"
            )
        return None

    @property
    def quota_fraction(self) -> float:
        """How full the quota is, from 0.0 to 1.0 (or more after re-indexing found orphans)."""
        return self.bytes_used / self.quota_bytes if self.quota_bytes else 1.0


@dataclass(frozen=True, slots=True)
class ScrubReport:
    """What one :meth:`FragmentStore.scrub` batch did.

    ``corrupt_ids`` were removed from the store (bad hash, wrong size, or file gone): their
    stewards must repair them.  ``next_cursor`` is the cursor for the next batch; None means the
    pass is finished and the next call (with ``cursor=None``) starts a new one.
    """

    checked: int
    bytes_checked: int
    corrupt_ids: tuple[bytes, ...]
    next_cursor: bytes | None

    def __post_init__(self) -> None:
        if self.checked < 0 or self.bytes_checked < 0:
            raise ValueError(f"scrub counts must be >= 0, got {self}")
        if len(self.corrupt_ids) > self.checked:
            raise ValueError("a scrub cannot find more corrupt fragments than it checked")
        if self.next_cursor is not None:
            check_id(self.next_cursor)

    @property
    def done(self) -> bool:
        """True when this batch finished a pass over the whole store."""
        return self.next_cursor is None

    @property
    def progress(self) -> float:
        """Fraction of the pass done, from 0.0 to 1.0.

        Ids are SHA-256 digests, hence uniform: the cursor's position in the id space is an
        unbiased estimate of the fraction of fragments already checked, and costs no query.
        """
        if self.next_cursor is None:
            return 1.0
        return int.from_bytes(self.next_cursor[:8], "big") / 2**64


class FragmentStore(Protocol):
    """A node's content-addressed fragment store (see the module docstring for the contract)."""

    def put(self, fragment_id: bytes, data: bytes, uploader: bytes | None = None) -> None:
        """Store ``data`` under ``fragment_id`` on behalf of ``uploader`` (the node id of the
        peer that sent it; None for the node's own fragments); a no-op if it is already stored
        (the first uploader stays charged).

        Raises IntegrityError if ``data`` does not hash to ``fragment_id`` (nothing is stored),
        QuotaExceeded naming used, quota and requested bytes when it would not fit (with
        ``identity`` set, naming the uploader and its usage, when it would pass the uploader's
        share), ValueError if ``uploader`` is not a 20-byte node id,
        StoreNotWritable naming the path and the OS error when the disk refuses the write, and
        StoreError if the store is closed or its index fails.
        """
        ...

    def get(self, fragment_id: bytes) -> bytes:
        """The bytes stored under ``fragment_id``, hashed on this very read.

        Raises FragmentNotFound if absent, IntegrityError if the bytes no longer match (the
        fragment is then removed), StoreError if the disk cannot be read.
        """
        ...

    def has(self, fragment_id: bytes) -> bool:
        """Whether the index lists ``fragment_id`` (cheap: does not read or hash the bytes)."""
        ...

    def size_of(self, fragment_id: bytes) -> int | None:
        """The size of ``fragment_id`` as indexed (None: not held); cheap, like :meth:`has`."""
        ...

    def delete(self, fragment_id: bytes) -> bool:
        """Remove a fragment; True if it was there.  Raises StoreError if the disk refuses."""
        ...

    def ids(self, after: bytes | None, limit: int) -> list[bytes]:
        """Up to ``limit`` (1..MAX_PAGE) stored ids greater than ``after``, in ascending order."""
        ...

    def usage(self) -> StoreUsage:
        """Counts, quota and whether (and why not) the store accepts writes."""
        ...

    def uploaded_by(self, uploader: bytes) -> int:
        """Bytes stored here on behalf of ``uploader`` (what its share is counted against)."""
        ...

    def scrub(self, max_bytes: int, cursor: bytes | None) -> ScrubReport:
        """Re-verify fragments after ``cursor`` in id order, about ``max_bytes`` worth.

        Stops before the fragment that would take the batch past ``max_bytes``, but always checks
        at least one so a large fragment cannot stall the pass.  Corrupt fragments are removed and
        reported.  Raises ValueError if ``max_bytes`` < 1, StoreError if the disk cannot be read.
        """
        ...

    def close(self) -> None:
        """Release the store (files, index, lock).  Idempotent; later calls raise StoreError."""
        ...


def check_id(fragment_id: bytes) -> None:
    """Raise ValueError unless ``fragment_id`` is a well-formed id (32 bytes)."""
    if not isinstance(fragment_id, bytes) or len(fragment_id) != FRAGMENT_ID_BYTES:
        raise ValueError(f"a fragment id is {FRAGMENT_ID_BYTES} bytes, got {fragment_id!r:.80}")


def check_uploader(uploader: bytes | None) -> None:
    """Raise ValueError unless ``uploader`` is None or a 20-byte node id."""
    if uploader is not None and (not isinstance(uploader, bytes) or len(uploader) != 20):
        raise ValueError(f"an uploader is a 20-byte node id, got {uploader!r:.80}")


def check_page(after: bytes | None, limit: int) -> None:
    """Raise ValueError unless ``after``/``limit`` are valid :meth:`FragmentStore.ids` arguments."""
    if after is not None:
        check_id(after)
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"ids() limit must be between 1 and {MAX_PAGE}, got {limit}")


def check_scrub_budget(max_bytes: int) -> None:
    """Raise ValueError unless ``max_bytes`` is a positive scrub budget."""
    if max_bytes < 1:
        raise ValueError(f"scrub max_bytes must be >= 1, got {max_bytes}")


def short(fragment_id: bytes) -> str:
    """The id as it appears in messages and logs (the first 16 hex digits)."""
    return fragment_id.hex()[:16]
