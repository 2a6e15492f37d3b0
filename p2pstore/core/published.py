"""What a node publishes itself, and when each record is due to be sent again.

Strategy: one publisher for every kind (manifests, placements, announcements), so the node and
the simulator read one rule for record traffic: a record is sent again every
:func:`republish_period` -- its kind's ``republish_every``, or a quarter of its own lifetime if
that is shorter, so three lost rounds are survived -- renewed each time (same sequence, fresh
expiry).  Only a record whose content changed is signed as a new version: the driver passes the
current value of the records it computes (an announcement's free space) to :meth:`due`.
Pure: the driver stores what :meth:`PublishedRecords.publish` and :meth:`PublishedRecords.due`
return on the closest peers, and wakes up at :meth:`PublishedRecords.next_due`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from p2pstore.core.records import (
    RULES,
    RecordKind,
    Signer,
    checked_ttl,
    credentials_of,
    known_kind,
    renew,
    sign_record,
)
from p2pstore.errors import LocalProtocolError
from p2pstore.wire.dht import SignedRecord

Slot = tuple[int, bytes]
"""(kind, key): where a record lives."""


def republish_period(kind: RecordKind, ttl: float | None = None) -> float:
    """Seconds between two sends of a record of ``kind`` living ``ttl`` seconds (default: the
    kind's longest lifetime)."""
    rules = RULES[kind]
    return min(float(rules.republish_every), (rules.max_ttl if ttl is None else ttl) / 4)


@dataclasses.dataclass(slots=True)
class _Published:
    record: SignedRecord
    kind: RecordKind
    ttl: int
    last_published: float


class PublishedRecords:
    """The records a node publishes itself, and when each is due to be sent again.

    Each republish renews the record (same sequence, fresh expiry), so a record lives as long as
    its publisher keeps running :meth:`due`.  One record per (kind, key): a new version replaces
    the old.
    """

    __slots__ = ("_records", "_signer", "publisher_key")

    def __init__(self, signer: Signer) -> None:
        self._signer = credentials_of(signer)
        self.publisher_key = self._signer.public_key_bytes()
        self._records: dict[Slot, _Published] = {}

    def use(self, signer: Signer) -> None:
        """Sign with ``signer`` from now on (a renewed certificate of the same key): the records
        carry it from their next republish.  Raises :class:`LocalProtocolError` for another key."""
        credentials = credentials_of(signer)
        if credentials.public_key_bytes() != self.publisher_key:
            raise LocalProtocolError("a renewed certificate must certify the same key")
        self._signer = credentials

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, slot: Slot) -> bool:
        return slot in self._records

    def get(self, kind: int, key: bytes) -> SignedRecord | None:
        """The current version published under (kind, key), if any."""
        entry = self._records.get((kind, key))
        return None if entry is None else entry.record

    def publish(
        self, kind: RecordKind, key: bytes, value: bytes, now: float, *, ttl: int | None = None
    ) -> SignedRecord:
        """Sign a new version of (kind, key) (see :func:`next_sequence`), remember it as sent at
        ``now``, and return it for the driver to store.  Raises :class:`LocalProtocolError` as
        :func:`sign_record` does, or for a ``ttl`` outside the kind's limit."""
        kind = known_kind(kind, LocalProtocolError)
        ttl = checked_ttl(kind, ttl)
        record = self._sign(kind, key, value, now, ttl)
        self._records[(kind, key)] = _Published(record, kind, ttl, now)
        return record

    def add(self, record: SignedRecord, now: float) -> None:
        """Keep republishing ``record`` (signed elsewhere by this publisher), sent at ``now``.

        Raises :class:`LocalProtocolError` if another key signed it.
        """
        kind = known_kind(record.kind, LocalProtocolError)
        if record.publisher_key != self.publisher_key:
            raise LocalProtocolError("this node can only republish the records it signed")
        ttl = max(1, min(RULES[kind].max_ttl, record.expires_at - math.floor(now)))
        self._records[(kind, record.key)] = _Published(record, kind, ttl, now)

    def remove(self, kind: int, key: bytes) -> bool:
        """Stop republishing (kind, key); the copies held elsewhere expire.  True if it was kept."""
        return self._records.pop((kind, key), None) is not None

    def due(
        self,
        now: float,
        interval: float | None = None,
        *,
        values: Mapping[Slot, bytes] | None = None,
    ) -> list[SignedRecord]:
        """Renew and return, in (kind, key) order, every record last sent ``interval`` seconds
        ago or more (default: its :func:`republish_period`); they count as sent at ``now``.
        A due record whose current value in ``values`` differs from the published one is
        signed as a new version with that value instead."""
        out = []
        for slot in sorted(self._records):
            entry = self._records[slot]
            if self._due_at(entry, interval) > now:
                continue
            fresh = None if values is None else values.get(slot)
            if fresh is not None and fresh != entry.record.value:
                entry.record = self._sign(entry.kind, slot[1], fresh, now, entry.ttl)
            else:
                entry.record = renew(entry.record, self._signer, now, entry.ttl)
            entry.last_published = now
            out.append(entry.record)
        return out

    def next_due(self, interval: float | None = None) -> float | None:
        """When :meth:`due` next has something to return (None when nothing is published)."""
        return min((self._due_at(e, interval) for e in self._records.values()), default=None)

    def _sign(
        self, kind: RecordKind, key: bytes, value: bytes, now: float, ttl: int
    ) -> SignedRecord:
        previous = self.get(kind, key)
        sequence = next_sequence(None if previous is None else previous.sequence, now)
        expires_at = math.floor(now) + ttl
        return sign_record(self._signer, kind, key, value, sequence=sequence, expires_at=expires_at)

    @staticmethod
    def _due_at(entry: _Published, interval: float | None) -> float:
        every = republish_period(entry.kind, entry.ttl) if interval is None else interval
        return entry.last_published + every


def next_sequence(previous: int | None, now: float) -> int:
    """A sequence number for a new version: milliseconds since the epoch, or one more than
    ``previous`` if that is not larger.  Clock-based, so a publisher that restarted without its
    state still outranks what it published before (unless its clock went back)."""
    stamp = math.floor(now * 1000)
    return stamp if previous is None or stamp > previous else previous + 1
