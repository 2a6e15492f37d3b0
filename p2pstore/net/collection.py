"""The holder's side of garbage collection: take stewards' lease renewals, free what lapsed.

Strategy: the rules are pure (``core.leases``: who may lease, what a lease grants, when a
fragment goes; ``core.references``: what retention a tenant's words prove) and their inputs
live in the store's lease table (``store.leases``); this driver moves messages and time:

* ``RenewLeases`` from a peer: checked (the renewal is for this node, signed by the session's
  key, not from the future), then each object's fragments are leased if the peer is eligible
  for the object (fewer than ``width`` nodes this node knows are closer to its key), within
  the peer's share of the store; retention proofs about the renewal's objects extend their
  retention.  The reply says how many leases were applied and why others were refused.
* every ``sweep_interval``: fragments the store holds without a row are adopted (an
  interrupted put, a fragment written by this node's own steward, junk: stored "now"), then the
  table's due fragments are freed through the fragment service (which lets no put of them
  interleave), each looked at again just before its deletion.  Freed bytes and fragments are
  counted (``gc_freed_*``) and logged (``fragments_freed``).

On first start with a store that already held fragments, they are adopted as *legacy* (stored
before leases existed): kept until a steward leases them, so an upgrade frees nothing.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import trio
from prometheus_client import Counter

from p2pstore.core.leases import (
    DEFAULT_GRACE,
    LEASE_TTL,
    STEWARD_SHARE,
    STEWARD_WIDTH,
    Fate,
    LeaseBounds,
    check_renewal,
    decide,
    eligible,
)
from p2pstore.core.references import ReferenceRejected, retention_shown
from p2pstore.errors import StoreError
from p2pstore.identity import PeerIdentity, short_id
from p2pstore.net.dht import Dht
from p2pstore.net.fragments import FragmentService
from p2pstore.store import MAX_PAGE
from p2pstore.store.leases import LeaseTable
from p2pstore.wire import Message, RenewLeases, RenewLeasesReply

log = logging.getLogger("p2pstore.store")


@dataclass(frozen=True, slots=True)
class CollectionSettings:
    """``[gc]``: the undo window and the pace of sweeping."""

    grace_period: float = DEFAULT_GRACE
    sweep_interval: float = 3600.0
    sweep_batch: int = 1000
    """Fragments freed per step (puts of them wait while a step deletes)."""
    steward_share: int = STEWARD_SHARE
    width: int = STEWARD_WIDTH
    enabled: bool = False
    """Whether sweeps free anything (``[gc] enabled``).  Off by default until every writer
    signs references (``net.references``): bucket puts do, a bare ``put`` and the gateway not
    yet, and what nobody references goes after the initial lease and the grace."""
    initial_lease: float = LEASE_TTL
    """Seconds a fragment is kept after the put that stored it, before any steward renews."""

    def __post_init__(self) -> None:
        if self.grace_period < 0 or self.sweep_interval <= 0 or self.sweep_batch < 1:
            raise ValueError(f"gc: grace >= 0, interval > 0 and batch >= 1, got {self}")
        if self.steward_share < 1 or self.width < 1 or self.initial_lease <= 0:
            raise ValueError("gc: steward_share and width are at least 1, initial_lease > 0")


@dataclass(frozen=True, slots=True)
class SweepReport:
    adopted: int
    freed: int
    bytes_freed: int


class Collector:
    """Serves ``RenewLeases`` and sweeps the store of ``fragments``.  Start with
    ``await nursery.start(collector.run)``; :meth:`sweep` runs one sweep now."""

    def __init__(
        self,
        fragments: FragmentService,
        dht: Dht,
        table: LeaseTable,
        settings: CollectionSettings | None = None,
    ) -> None:
        self.fragments = fragments
        self.dht = dht
        self.table = table
        self.settings = settings or CollectionSettings()
        self.up_since = dht.wall_clock()
        self._me = dht.node_id
        fragments.leases = table
        fragments.initial_lease_ttl = self.settings.initial_lease
        dht.node.handle(RenewLeases, self._on_renew)
        registry = dht.node.metrics.registry
        self.freed_fragments = Counter(
            "p2pstore_gc_freed_fragments",
            "Fragments freed because no lease kept them (their grace period passed).",
            registry=registry,
        )
        self.freed_bytes = Counter(
            "p2pstore_gc_freed_bytes",
            "Bytes freed because no lease kept them (their grace period passed).",
            registry=registry,
        )
        self.refused_leases = Counter(
            "p2pstore_gc_refused_leases",
            "Fragment leases refused: the steward was not eligible or over its share.",
            registry=registry,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Adopt a pre-existing store as legacy, then sweep every ``sweep_interval`` until
        cancelled (which closes the lease table); a sweep the disk refuses is logged and
        retried at the next interval."""
        if self.table.fallback is not None:
            log.error(
                "lease table kept in memory, leases are lost at a restart: %s",
                self.table.fallback,
                extra={"event": "sweep_failed"},
            )
        try:
            if self.table.created:
                self.table.created = False
                await self._adopt(legacy=True)
            task_status.started()
            while True:
                await trio.sleep(self.settings.sweep_interval)
                try:
                    await self.sweep()
                except StoreError as exc:
                    log.error("sweep failed: %s", exc, extra={"event": "sweep_failed"})
        finally:
            self.table.close()

    async def sweep(self) -> SweepReport:
        """Adopt unknown fragments, then (if enabled) free every fragment due.  Raises
        :class:`StoreError`."""
        adopted = await self._adopt(legacy=False)
        freed = bytes_freed = 0
        if not self.settings.enabled:
            return SweepReport(adopted, 0, 0)
        grace = self.settings.grace_period
        while True:
            now = self.dht.wall_clock()
            due = await self.fragments.run_store(
                functools.partial(
                    self.table.due,
                    now,
                    grace=grace,
                    up_since=self.up_since,
                    limit=self.settings.sweep_batch,
                )
            )
            if not due:
                break
            gone, size = await self.fragments.free(due, self._still_due)
            for fragment_id in gone:
                await self.fragments.run_store(self.table.forget, fragment_id)
            freed += len(gone)
            bytes_freed += size
            if len(gone) < len(due) and not gone:
                break  # all being written: next sweep
        if freed:
            self.freed_fragments.inc(freed)
            self.freed_bytes.inc(bytes_freed)
            log.info(
                "freed %d fragments (%d bytes) no lease kept past the grace period",
                freed,
                bytes_freed,
                extra={"event": "fragments_freed", "fragments": freed, "bytes": bytes_freed},
            )
        return SweepReport(adopted, freed, bytes_freed)

    def _still_due(self, fragment_id: bytes) -> bool:
        """In the worker thread, just before a deletion: the rule again, on fresh rows."""
        life = self.table.life(fragment_id)
        if life is None:
            return False  # its row went: another step freed it
        now = self.dht.wall_clock()
        grace = self.settings.grace_period
        return decide(life, now, grace=grace, up_since=self.up_since) is Fate.FREE

    async def _adopt(self, *, legacy: bool) -> int:
        """Give every fragment of the store without a row one: legacy (kept until leased) or
        stored now (an orphan unless a lease comes)."""
        store, table = self.fragments.store, self.table
        now = None if legacy else self.dht.wall_clock()

        def page(after: bytes | None) -> tuple[int, bytes | None]:
            ids = store.ids(after, MAX_PAGE)
            known = table.known(ids)
            unknown = [i for i in ids if i not in known]
            sized = [(i, store.size_of(i)) for i in unknown]
            added = table.adopt([(i, s) for i, s in sized if s is not None], now)
            return added, (ids[-1] if len(ids) == MAX_PAGE else None)

        adopted, after = 0, None
        while True:
            added, after = await self.fragments.run_store(page, after)
            adopted += added
            if after is None:
                return adopted

    async def renew_own(self, renewal: RenewLeases) -> RenewLeasesReply:
        """A renewal this node's own steward signed for the fragments it holds itself."""
        return await self._renew(self._me, renewal)

    async def _on_renew(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, RenewLeases)
        return await self._renew(peer.node_id, message)

    async def _renew(self, steward: bytes, message: RenewLeases) -> RenewLeasesReply:
        now = self.dht.wall_clock()
        expiry = check_renewal(message, steward, self._me, now)
        refused: list[str] = []
        ineligible = 0
        leases: list[tuple[bytes, bytes]] = []
        for item in message.items:
            key = item.object_id[:20]
            known = [c.id for c in self.dht.table.closest(key, self.settings.width)]
            if eligible(steward, key, [*known, self._me], self.settings.width):
                leases.extend((item.object_id, f) for f in item.fragment_ids)
            else:
                ineligible += 1
                refused.append(f"not a steward of object {item.object_id.hex()[:16]}")
        quota = self.fragments.store.usage().quota_bytes
        bounds = LeaseBounds(quota, self.settings.steward_share)
        applied = await self.fragments.run_store(
            self.table.renew, steward, leases, expiry, now, bounds.per_steward
        )
        if applied.over_share:
            refused.append(
                f"{applied.over_share} leases over this steward's share "
                f"({bounds.per_steward} bytes) of node {short_id(self._me)}"
            )
        leased = {object_id for object_id, _ in leases}
        for proof in message.retention:
            try:
                object_id, retention = retention_shown(proof, now, trust=self.dht.trust())
            except ReferenceRejected as exc:
                refused.append(f"retention proof refused: {exc}")
                continue
            if object_id in leased:
                await self.fragments.run_store(self.table.retain, object_id, retention)
        if refused:
            self.refused_leases.inc(applied.over_share + ineligible)
            log.info(
                "lease renewal from %s partly refused: %s",
                short_id(steward),
                "; ".join(refused[:3]),
                extra={"event": "leases_refused", "peer": steward.hex()},
            )
        return RenewLeasesReply(
            applied=applied.applied, refused=tuple(r[:512] for r in refused[:256])
        )
