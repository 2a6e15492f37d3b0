"""A reader's copy of bucket indexes, kept in step with the replicas for one small request each.

Strategy: a fresh read (:meth:`BucketService.fetch`) pulls every entry of every replica; a
gateway that reads a bucket on each request would pay the whole index each time.  This cache
keeps, per bucket, what each replica held when last read (so its summary digest), the join of
those (what the reader sees), and the replica set (looked up again every ``replicas_ttl``
seconds).  A read asks each replica for its summary only; a replica whose summary is the one
its copy gives has nothing new, one that differs is read whole again -- entries verified before
are not verified again.  Writes through :meth:`BucketCache.push` join the reader's view and
every replica's copy at once, as the replicas join them, so a reader's own writes are seen at
once and do not make its next read pull everything.

Trust is unchanged: the view is the join of what replicas served, each entry verified here, so
a replica that lies about its summary hides only entries of its own, never another's.  A new
revocation list drops the cache (entries of revoked signers go).  Bounded: at most
``max_entries`` entries over all buckets, the least recently read bucket dropped first.  A
delta protocol (summaries per digest range) would make a changed replica cheap too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from p2pstore.core.bucket_entries import verify_entry
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.core.contact import Contact
from p2pstore.errors import LocalProtocolError
from p2pstore.net.buckets import BucketService
from p2pstore.wire import BucketEntry


@dataclass
class _Cached:
    view: BucketIndex
    replicas: list[Contact] = field(default_factory=list)
    replicas_until: float = float("-inf")
    held: dict[bytes, BucketIndex] = field(default_factory=dict)
    """Replica id -> what it held when last read (plus what we pushed to it since)."""


class BucketCache:
    """Bucket indexes read through ``service`` (see the module docstring)."""

    def __init__(
        self, service: BucketService, *, replicas_ttl: float = 30.0, max_entries: int = 100_000
    ) -> None:
        self.service = service
        self.replicas_ttl = replicas_ttl
        self.max_entries = max_entries
        self._buckets: OrderedDict[bytes, _Cached] = OrderedDict()
        self._revoked: frozenset[int] | None = None
        self.replica_reads = 0
        """Replicas read whole so far (the rest answered a summary): for tests and metrics."""

    async def index(self, bucket: bytes) -> BucketIndex:
        """The bucket as its replicas hold it now; the caller must not change it."""
        cached = await self._cached(bucket)

        async def check(contact: Contact) -> None:
            said = await self.service.summary_of(contact, bucket)
            copy = cached.held.get(contact.id)
            if said is None or (copy is not None and copy.summary() == said):
                return  # unreachable (a fresh read would do without it too), or unchanged
            known = {e.digest: e for e in cached.view.entries()}
            read = await self.service.read_replica(contact, bucket, known=known)
            if read is not None:
                self.replica_reads += 1
                cached.held[contact.id] = read
                cached.view.merge(read.entries())

        async with trio.open_nursery() as nursery:
            for contact in cached.replicas:
                nursery.start_soon(check, contact)
        self._bound()
        return cached.view

    async def push(self, bucket: bytes, entries: Sequence[BucketEntry]) -> int:
        """Push ``entries`` (see :meth:`BucketService.push`) and join them here.  Raises
        :class:`EntryRejected` if one of them does not verify, :class:`LocalProtocolError` if
        one is of another bucket (nothing is pushed then)."""
        if not entries:
            return 0
        dht = self.service.dht
        now, trust = dht.wall_clock(), dht.trust()
        verified = [verify_entry(e, now, trust=trust) for e in entries]
        if any(v.bucket != bucket for v in verified):
            raise LocalProtocolError(f"pushing an entry of another bucket to {bucket.hex()[:12]}")
        cached = await self._cached(bucket)
        took = await self.service.push(bucket, entries, contacts=cached.replicas)
        for copy in (cached.view, *cached.held.values()):
            copy.merge(verified)  # a replica that refused them differs at the next read
        return took

    async def _cached(self, bucket: bytes) -> _Cached:
        revoked = frozenset(self.service.dht.trust().revoked_serials)
        if revoked != self._revoked:
            self._buckets.clear()
            self._revoked = revoked
        cached = self._buckets.pop(bucket, None) or _Cached(BucketIndex(bucket))
        self._buckets[bucket] = cached  # the most recently read last
        if trio.current_time() >= cached.replicas_until:
            cached.replicas = await self.service.replicas(bucket)
            cached.replicas_until = trio.current_time() + self.replicas_ttl
            ids = {c.id for c in cached.replicas}
            cached.held = {k: v for k, v in cached.held.items() if k in ids}
        return cached

    def _bound(self) -> None:
        while len(self._buckets) > 1 and sum(len(c.view) for c in self._buckets.values()) > (
            self.max_entries
        ):
            self._buckets.popitem(last=False)
