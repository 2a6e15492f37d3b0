"""A bucket's index as a state-based CRDT: a join of signed entries, and what it says at ``now``.

Strategy: replicas and clients hold a :class:`BucketIndex` each and merge by exchanging
entries; merging is a join in a semilattice, so it is commutative, associative and idempotent
and every replica that has seen the same entries says the same thing, in whatever order they
came.  Each ``(name, version)`` has four slots, each keeping the greatest candidate under a
fixed total order:

* the write (PUT or MARKER): versions are content hashes (:mod:`.bucket_entries`), so the
  candidates differ only in who signed; the smallest digest wins -- a deterministic tie-break;
* the retention: the largest ``retain_until``, then the smallest digest, whoever signed --
  so retention is extended by any tenant key and shortened by none;
* the legal hold: the latest hold decision -- a RETAIN setting it or a RELEASE lifting it --
  by ``(timestamp, smallest digest)``: S3's legal hold is switched on and off, so the last word
  counts (a timestamp is at most the verifier's clock plus its skew: a key cannot pre-empt
  later decisions by much).  Retention stays the one thing no key can shorten;
* the erasure request: any ERASE (smallest digest).

An entry that wins no slot adds nothing and is dropped; what is kept is the union of the slot
winners, so a replica can hide an entry only by holding one that dominates it, which it cannot
forge.  A version is *erased* when an ERASE is present, its retention date has passed at
``now`` and no legal hold is on it: retention is judged at read time, never at merge time, so
an erasure signed before the date (by a stolen key, say) waits until the date.  The current
version of a name is its newest non-erased version, ``(timestamp, version id)`` breaking ties;
a name whose current version is a MARKER is deleted (its older versions stay readable).

Tombstones (ERASE entries and erased versions) are kept; compacting them once every replica
has them is a follow-up (see bootstrap/README.md, "Buckets").  Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
from collections.abc import Iterable, Iterator

from p2pstore.core.bucket_entries import Op, VerifiedEntry
from p2pstore.errors import LocalProtocolError
from p2pstore.identity import NodeId


@dataclasses.dataclass(slots=True)
class _Slots:
    write: VerifiedEntry | None = None
    retention: VerifiedEntry | None = None
    hold: VerifiedEntry | None = None
    erase: VerifiedEntry | None = None

    def winners(self) -> Iterator[VerifiedEntry]:
        seen: set[bytes] = set()
        for entry in (self.write, self.retention, self.hold, self.erase):
            if entry is not None and entry.digest not in seen:
                seen.add(entry.digest)
                yield entry


@dataclasses.dataclass(frozen=True, slots=True)
class VersionView:
    """What the index says about one version at ``now``."""

    name: bytes
    version: bytes
    op: Op
    timestamp: int
    payload: bytes
    retain_until: int
    legal_hold: bool
    erase_requested: bool

    @property
    def is_marker(self) -> bool:
        return self.op is Op.MARKER

    def protected(self, now: float) -> bool:
        """True while retention or a legal hold forbids erasing the version."""
        return self.legal_hold or now < self.retain_until


def _better_write(new: VerifiedEntry, old: VerifiedEntry | None) -> bool:
    return old is None or new.digest < old.digest


def _later(new: VerifiedEntry, old: VerifiedEntry | None) -> bool:
    if old is None:
        return True
    a, b = new.entry.timestamp, old.entry.timestamp
    return a > b or (a == b and new.digest < old.digest)


def _better_retention(new: VerifiedEntry, old: VerifiedEntry | None) -> bool:
    if old is None:
        return True
    a, b = new.entry.retain_until, old.entry.retain_until
    return a > b or (a == b and new.digest < old.digest)


class BucketIndex:
    """The entries of one bucket, joined slot by slot (see the module docstring)."""

    __slots__ = ("_digests", "_slots", "_sorted", "_summary", "bucket")

    def __init__(self, bucket: bytes) -> None:
        self.bucket = NodeId(bucket)
        self._slots: dict[bytes, dict[bytes, _Slots]] = {}
        """name token -> version id -> slots."""
        self._digests: dict[bytes, VerifiedEntry] = {}
        self._summary: bytes | None = None
        self._sorted: list[bytes] | None = None
        """The digests in order, rebuilt after a change: a replica serves many pages of
        an index between two writes."""

    def __len__(self) -> int:
        """Entries kept (the slot winners)."""
        return len(self._digests)

    def __contains__(self, digest: object) -> bool:
        return digest in self._digests

    def add(self, verified: VerifiedEntry) -> list[VerifiedEntry]:
        """Join one verified entry; return the entries it displaced (empty if it added
        nothing new, ``[verified]`` if it was dominated).  The caller accounts bytes with them.

        Raises :class:`LocalProtocolError` if the entry belongs to another bucket.
        """
        if verified.bucket != self.bucket:
            raise LocalProtocolError(
                f"entry of bucket {verified.bucket.hex()[:12]} joined into {self.bucket.hex()[:12]}"
            )
        if verified.digest in self._digests:
            return []
        entry = verified.entry
        slots = self._slots.get(entry.name, {}).get(entry.version) or _Slots()
        before = {e.digest: e for e in slots.winners()}
        op = Op(entry.op)
        if op in (Op.PUT, Op.MARKER) and _better_write(verified, slots.write):
            slots.write = verified
        if entry.retain_until and _better_retention(verified, slots.retention):
            slots.retention = verified
        if (entry.legal_hold or op is Op.RELEASE) and _later(verified, slots.hold):
            slots.hold = verified
        if op is Op.ERASE and _better_write(verified, slots.erase):
            slots.erase = verified
        after = {e.digest: e for e in slots.winners()}
        if verified.digest not in after:
            return [verified]
        self._slots.setdefault(entry.name, {})[entry.version] = slots
        for digest in after.keys() - before.keys():
            self._digests[digest] = after[digest]
        displaced = [before[d] for d in before.keys() - after.keys()]
        for old in displaced:
            del self._digests[old.digest]
        self._summary = self._sorted = None
        return displaced

    def merge(self, entries: Iterable[VerifiedEntry]) -> int:
        """Join every entry of ``entries``; return how many were kept."""
        kept = 0
        for verified in entries:
            if verified.digest not in self._digests:
                self.add(verified)
                kept += verified.digest in self._digests
        return kept

    def entries(self) -> list[VerifiedEntry]:
        """The entries kept, in digest order: what a replica serves and a peer merges."""
        return [self._digests[d] for d in self._ordered()]

    def _ordered(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self._digests)
        return self._sorted

    def page(self, after: bytes, limit: int) -> tuple[list[VerifiedEntry], bytes]:
        """Up to ``limit`` entries whose digest is above ``after``, and the cursor of the next
        page (empty when this one is the last)."""
        ordered = self._ordered()
        start = bisect.bisect_right(ordered, after)
        chosen = ordered[start : start + limit]
        cursor = chosen[-1] if start + limit < len(ordered) else b""
        return [self._digests[d] for d in chosen], cursor

    def summary(self) -> bytes:
        """A digest of the entries kept: equal summaries mean equal states."""
        if self._summary is None:
            h = hashlib.sha256(b"p2pstore-bucket-summary-v1\0")
            for digest in self._ordered():
                h.update(digest)
            self._summary = h.digest()
        return self._summary

    def names(self) -> list[bytes]:
        """Every name token with at least one entry, sorted."""
        return sorted(self._slots)

    def versions(self, name: bytes, now: float) -> list[VersionView]:
        """The name's written, non-erased versions at ``now``, newest first."""
        views = [
            view
            for slots in self._slots.get(name, {}).values()
            if (view := _view(slots)) is not None and not _erased(view, now)
        ]
        views.sort(key=lambda v: (v.timestamp, v.version), reverse=True)
        return views

    def entries_of(self, name: bytes, version: bytes) -> list[VerifiedEntry]:
        """The entries kept about one version (its slot winners; empty if none)."""
        slots = self._slots.get(name, {}).get(version)
        return [] if slots is None else list(slots.winners())

    def current(self, name: bytes, now: float) -> VersionView | None:
        """The name's newest non-erased version (possibly a delete marker), or None."""
        versions = self.versions(name, now)
        return versions[0] if versions else None

    def live(self, now: float) -> Iterator[VersionView]:
        """The current version of every name that is not deleted, by name token."""
        for name in self.names():
            view = self.current(name, now)
            if view is not None and not view.is_marker:
                yield view

    def erased(self, now: float) -> Iterator[VersionView]:
        """Every written version erased at ``now``: what garbage collection may release."""
        for slots in (s for versions in self._slots.values() for s in versions.values()):
            view = _view(slots)
            if view is not None and _erased(view, now):
                yield view


def _view(slots: _Slots) -> VersionView | None:
    if slots.write is None:
        return None
    entry = slots.write.entry
    return VersionView(
        name=entry.name,
        version=entry.version,
        op=Op(entry.op),
        timestamp=entry.timestamp,
        payload=entry.payload,
        retain_until=0 if slots.retention is None else slots.retention.entry.retain_until,
        legal_hold=slots.hold is not None and slots.hold.entry.op == Op.RETAIN,
        erase_requested=slots.erase is not None,
    )


def _erased(view: VersionView, now: float) -> bool:
    return view.erase_requested and not view.protected(now)
