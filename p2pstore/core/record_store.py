"""What a node holds for others: signed records, bounded in all and per publisher.

Strategy: a holder keeps one record per (kind, key, publisher); a newer version replaces it when
its ``(sequence, expires_at)`` is larger (a higher sequence is a new version, the same sequence
with a later expiry a renewal).  Nothing is evicted before it expires: any eviction order lets
whoever floods a node choose what it forgets, while a refusal only sends the publisher to the
next closest peer.  So the bounds are what stop a flood:

* the whole store: records, bytes, and publishers per key (``full``);
* each publisher, i.e. each certified identity: records and bytes (``over-quota``), by default
  a quarter of the store's, so one member (a compromised client or node) fills at most a quarter
  of every holder, whatever it sends and in whatever order, and another member's records always
  find room.  Hand-over to newly close peers relays only what the store holds, so it never
  carries more than a quota per identity either.

A record lives until its own expiry or its certificate's end, whichever is first, and
:meth:`RecordStore.drop_revoked` forgets every record whose certificate the mesh CA revoked (a
node calls it when it reloads its revocation list).  Pure: time and the trust anchor are passed
in.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
from collections.abc import Iterator, Mapping
from typing import Final

from p2pstore.core.records import RejectReason, verify_record
from p2pstore.errors import LocalProtocolError, RecordRejected
from p2pstore.identity import NodeId, PeerIdentity, Role, TrustAnchor
from p2pstore.wire.dht import MAX_RECORDS_PER_REPLY, SignedRecord

RECORD_OVERHEAD: Final = 256
"""Bytes a held record is charged besides its value and certificate (key, public key,
signature, bookkeeping)."""

PUBLISHER_SHARE: Final = 4
"""By default one publisher may hold 1/4 of a store's records and of its bytes."""


def held_size(record: SignedRecord) -> int:
    """The bytes a store charges for holding ``record``."""
    return len(record.value) + len(record.certificate) + RECORD_OVERHEAD


class PutResult(enum.StrEnum):
    """What :meth:`RecordStore.put` did with a record it accepted."""

    STORED = "stored"
    """New for its (kind, key, publisher)."""
    REPLACED = "replaced"
    """A newer version (higher sequence) or a renewal (same sequence, later expiry)."""
    UNCHANGED = "unchanged"
    """The very record was already held (a republish before any renewal)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Records and bytes held (for a publisher, a class of publishers, or the whole store)."""

    records: int = 0
    bytes: int = 0

    def plus(self, records: int, size: int) -> Usage:
        return Usage(self.records + records, self.bytes + size)


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    record: SignedRecord
    serial: int
    role: Role
    until: int
    """The record's expiry or its certificate's end, whichever is first."""


_Slot = tuple[int, bytes]


class RecordStore:
    """The records a node holds for others, bounded in count, bytes and publishers per key, and
    per publisher in count and bytes (see the module docstring).

    Pure: every call takes ``now``; nothing is evicted before it expires.  Expired records are
    invisible at once and forgotten by :meth:`expire` (which ``put`` also runs when a limit
    refuses a record).
    """

    __slots__ = (
        "_by_role",
        "_expiry",
        "_groups",
        "_total",
        "_usage",
        "changes",
        "max_bytes",
        "max_per_key",
        "max_publisher_bytes",
        "max_publisher_records",
        "max_records",
    )

    def __init__(
        self,
        max_records: int,
        max_bytes: int,
        max_per_key: int = MAX_RECORDS_PER_REPLY,
        *,
        max_publisher_records: int | None = None,
        max_publisher_bytes: int | None = None,
    ) -> None:
        """The per-publisher limits default to ``1/PUBLISHER_SHARE`` of the store's.

        Raises :class:`LocalProtocolError` unless every limit is positive.
        """
        if max_publisher_records is None:
            max_publisher_records = max(1, max_records // PUBLISHER_SHARE)
        if max_publisher_bytes is None:
            max_publisher_bytes = max(1, max_bytes // PUBLISHER_SHARE)
        limits = (max_records, max_bytes, max_per_key, max_publisher_records, max_publisher_bytes)
        if min(limits) <= 0:
            raise LocalProtocolError("a record store needs positive limits")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_per_key = max_per_key
        self.max_publisher_records = max_publisher_records
        self.max_publisher_bytes = max_publisher_bytes
        self._groups: dict[_Slot, dict[NodeId, _Held]] = {}
        self._expiry: list[tuple[int, int, bytes, NodeId]] = []  # lazy heap, may hold stale entries
        self._total = Usage()
        self._usage: dict[NodeId, Usage] = {}
        self._by_role: dict[Role, Usage] = {}
        self.changes = 0
        """Bumped whenever a record is added, replaced or forgotten: a saver skips a store
        that has not changed since its last save."""

    def __len__(self) -> int:
        return self._total.records

    @property
    def bytes_held(self) -> int:
        """Bytes charged for the records held (see :func:`held_size`)."""
        return self._total.bytes

    def usage_of(self, publisher: bytes) -> Usage:
        """What ``publisher`` (a node id) holds here, expired records not yet forgotten included."""
        return self._usage.get(NodeId(publisher), Usage())

    def usage_by_role(self) -> Mapping[Role, Usage]:
        """What node and client publishers hold here (every role, zero when none)."""
        return {role: self._by_role.get(role, Usage()) for role in Role}

    def put(self, record: SignedRecord, now: float, *, trust: TrustAnchor) -> PutResult:
        """Verify ``record`` against the mesh CA ``trust`` and hold it.

        Raises :class:`RecordRejected`: from :func:`verify_record` if the record is invalid or
        its publisher uncertified or revoked; with reason ``stale`` if the version held from its
        publisher is newer, i.e. has a larger ``(sequence, expires_at)`` (or the same pair for a
        different record: first come wins); ``over-quota`` if its publisher would hold more than
        its share, ``full`` if the store has no room, even after forgetting expired records.
        """
        info = verify_record(record, now, trust=trust)
        what = f"{info.kind.name.lower()} record of {info.certificate.describe()}"
        if info.valid_until <= now:
            raise RecordRejected(
                f"the {what} is signed with a certificate that ends at "
                f"{info.certificate.not_after.isoformat()}: its publisher must renew it",
                reason=RejectReason.EXPIRED,
            )
        slot = (int(info.kind), bytes(record.key))
        held = self._groups.get(slot, {}).get(info.publisher)
        if held is not None and held.until <= now:
            self._remove(slot, info.publisher)
            held = None
        if held is not None:
            if held.record == record:
                return PutResult.UNCHANGED
            old = held.record
            if (record.sequence, record.expires_at) <= (old.sequence, old.expires_at):
                raise RecordRejected(
                    f"{what} (sequence {record.sequence}, expiry {record.expires_at}) is not "
                    f"newer than the one held (sequence {old.sequence}, expiry "
                    f"{old.expires_at}): publish with a higher sequence",
                    reason=RejectReason.STALE,
                )
            extra_records, extra_bytes = 0, held_size(record) - held_size(old)
        else:
            extra_records, extra_bytes = 1, held_size(record)
        if not (
            self._within_quota(info.publisher, extra_records, extra_bytes)
            and self._has_room(slot, extra_records, extra_bytes)
        ):
            self.expire(now)
            if not self._within_quota(info.publisher, extra_records, extra_bytes):
                kind = f"{info.kind.name.lower()} record"
                raise self._over_quota(info.certificate, kind, held_size(record))
            if not self._has_room(slot, extra_records, extra_bytes):
                raise RecordRejected(
                    f"no room for the {what} ({len(self)}/{self.max_records} records, "
                    f"{self.bytes_held}/{self.max_bytes} bytes held): store it on the next "
                    f"closest peer",
                    reason=RejectReason.FULL,
                )
        if held is not None:
            self._remove(slot, info.publisher)
        entry = _Held(record, info.certificate.serial, info.certificate.role, info.valid_until)
        self._add(slot, info.publisher, entry)
        return PutResult.REPLACED if held is not None else PutResult.STORED

    def get(self, kind: int, key: bytes, now: float) -> list[SignedRecord]:
        """The unexpired records under (kind, key), highest sequence first, then by publisher."""
        group = self._groups.get((kind, key), {})
        alive = [(p, h.record) for p, h in group.items() if h.until > now]
        alive.sort(key=lambda item: (-item[1].sequence, item[0]))
        return [r for _, r in alive]

    def expire(self, now: float) -> int:
        """Forget every record expired at ``now``; return how many were removed."""
        removed = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, key, publisher = heapq.heappop(self._expiry)
            held = self._groups.get((kind, key), {}).get(publisher)
            if held is not None and held.until <= now:
                self._remove((kind, key), publisher)
                removed += 1
        return removed

    def drop_revoked(self, trust: TrustAnchor) -> dict[NodeId, int]:
        """Forget every record whose publisher's certificate ``trust`` revokes; return how many
        were dropped per publisher."""
        doomed = [
            (slot, publisher)
            for slot, group in self._groups.items()
            for publisher, held in group.items()
            if held.serial in trust.revoked_serials
        ]
        dropped: dict[NodeId, int] = {}
        for slot, publisher in doomed:
            self._remove(slot, publisher)
            dropped[publisher] = dropped.get(publisher, 0) + 1
        return dropped

    def records_for_refresh(self, now: float) -> list[SignedRecord]:
        """Every unexpired record held, grouped by (kind, key) in that order, each group as
        :meth:`get` orders it: what a holder offers a peer that became closer to their keys."""
        return [record for kind, key in sorted(self._groups) for record in self.get(kind, key, now)]

    def publishers(self) -> Iterator[tuple[NodeId, Usage]]:
        """Every publisher with records here, and what it holds, by node id."""
        return iter(sorted(self._usage.items()))

    # -- helpers ------------------------------------------------------------------------------

    def _within_quota(self, publisher: NodeId, extra_records: int, extra_bytes: int) -> bool:
        usage = self.usage_of(publisher)
        return (
            usage.records + extra_records <= self.max_publisher_records
            and usage.bytes + extra_bytes <= self.max_publisher_bytes
        )

    def _over_quota(self, certificate: PeerIdentity, what: str, size: int) -> RecordRejected:
        usage = self.usage_of(certificate.node_id)
        return RecordRejected(
            f"over quota: {certificate.describe()} already holds {usage.records} of its "
            f"{self.max_publisher_records} records and {usage.bytes} of its "
            f"{self.max_publisher_bytes} bytes in this node's record store, so its {what} "
            f"({size} bytes) is refused; one identity may hold 1/{PUBLISHER_SHARE} of a store",
            reason=RejectReason.OVER_QUOTA,
            publisher=certificate.node_id,
        )

    def _has_room(self, slot: _Slot, extra_records: int, extra_bytes: int) -> bool:
        if self._total.bytes + extra_bytes > self.max_bytes:
            return False
        if extra_records == 0:
            return True
        return (
            self._total.records < self.max_records
            and len(self._groups.get(slot, {})) < self.max_per_key
        )

    def _add(self, slot: _Slot, publisher: NodeId, entry: _Held) -> None:
        self._groups.setdefault(slot, {})[publisher] = entry
        self._account(publisher, entry, 1)
        heapq.heappush(self._expiry, (entry.until, *slot, publisher))
        if len(self._expiry) > 2 * len(self) + 64:
            self._rebuild_expiry()

    def _remove(self, slot: _Slot, publisher: NodeId) -> None:
        group = self._groups[slot]
        entry = group.pop(publisher)
        if not group:
            del self._groups[slot]
        self._account(publisher, entry, -1)

    def _account(self, publisher: NodeId, entry: _Held, sign: int) -> None:
        size = sign * held_size(entry.record)
        self.changes += 1
        self._total = self._total.plus(sign, size)
        usage = self.usage_of(publisher).plus(sign, size)
        if usage.records:
            self._usage[publisher] = usage
        else:
            self._usage.pop(publisher, None)
        self._by_role[entry.role] = self._by_role.get(entry.role, Usage()).plus(sign, size)

    def _rebuild_expiry(self) -> None:
        self._expiry = [
            (held.until, *slot, publisher)
            for slot, group in self._groups.items()
            for publisher, held in group.items()
        ]
        heapq.heapify(self._expiry)
