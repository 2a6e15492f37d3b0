"""The steward's side of garbage collection: renew the leases of a live object's holders.

Strategy: after each round a steward knows, per object it stewards, the holders that signed
receipts for its fragments (the round's :class:`~p2pstore.net.repairer.Watched`).  For every
object it has verified a live reference to (``core.references.judge`` over what a
:class:`ReferenceSource` gathered: the tenant's references and the bucket entries about them),
it leases each share's keeper (``core.leases.keeper``: one holder per share, so a surplus
copy lapses) for :data:`~p2pstore.core.leases.LEASE_TTL`, one signed
``RenewLeases`` per holder per round (batched over objects, at most ``MAX_IDS_PER_QUERY``
fragments and ``MAX_LEASE_OBJECTS`` objects each), with the tenant's retention proofs beside
it.  An object with no verified live reference is simply not renewed: its holders free it a
grace period after the leases lapse.  A holder that does not answer misses one renewal; a
lease outlives many rounds.  This node's own fragments are renewed through its collector.
The elected steward is not alone: the nodes next closest to an object (``width`` in all) renew
it too, from the manifest and placement records they hold, so a hostile steward that stops
renewing frees nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from p2pstore.codec import Manifest, decode_manifest
from p2pstore.codec.manifest import object_id_of
from p2pstore.core.holders import Holdings, Placement
from p2pstore.core.leases import LEASE_TTL, RENEWERS, eligible, keeper, sign_renewal
from p2pstore.core.placement import Candidate
from p2pstore.core.records import RecordKind
from p2pstore.core.references import Liveness
from p2pstore.errors import IntegrityError, P2PStoreError, RemoteProtocolError
from p2pstore.identity import short_id
from p2pstore.net.collection import Collector
from p2pstore.net.dht import Dht
from p2pstore.net.placements import read_holdings
from p2pstore.net.publisher import RPC_FAILURES
from p2pstore.net.repairer import Watched
from p2pstore.wire import LeaseItem, RenewLeasesReply, RetentionProof
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY
from p2pstore.wire.leases import MAX_LEASE_OBJECTS, MAX_RETENTION_PROOFS

log = logging.getLogger("p2pstore.steward")


class ReferenceSource(Protocol):
    """Where a steward learns whether an object is still referenced."""

    async def liveness(
        self, object_id: bytes, now: float, *, publish: bool = True
    ) -> Liveness | None:
        """The verdict on the object's verified references at ``now`` (None: none known);
        ``publish``: whether this node publishes what it verified (its elected steward)."""
        ...

    def proofs(self, object_id: bytes) -> Sequence[RetentionProof]:
        """The tenant's retention proofs for the object, to show its holders."""
        ...


@dataclass
class RenewalReport:
    """What one renewal pass did."""

    objects: int = 0
    holders: int = 0
    applied: int = 0
    refused: list[str] = field(default_factory=list)
    unreached: int = 0


class LeaseRenewer:
    """Renews the leases of the live objects of a steward's round (see the module docstring)."""

    def __init__(
        self,
        dht: Dht,
        source: ReferenceSource,
        *,
        collector: Collector | None = None,
        ttl: float = LEASE_TTL,
        timeout: float = 10.0,
        width: int = RENEWERS,
    ) -> None:
        """``width``: this node also renews the objects it is one of the ``width`` closest
        to without stewarding them (1: only its own)."""
        self.dht = dht
        self.width = width
        self._backups: dict[bytes, tuple[Manifest, Holdings]] = {}
        self.source = source
        self.collector = collector
        self.ttl = ttl
        self.timeout = timeout

    async def renew(self, objects: Sequence[Watched]) -> RenewalReport:
        """One renewal per holder of the live ones among ``objects`` (the steward's round)
        and of the objects this node backs up; raises nothing for a holder's failure (counted
        in the report)."""
        report = RenewalReport()
        now = self.dht.wall_clock()
        per_holder: dict[bytes, dict[bytes, list[bytes]]] = {}
        holders: dict[bytes, Candidate] = {}
        proofs: dict[bytes, list[RetentionProof]] = {}
        stewarded = [(w.object_id, w.manifest, w.placement, True) for w in objects]
        backed = await self._backed_up(now, {w.object_id for w in objects})
        for object_id, manifest, placement, elected in [*stewarded, *backed]:
            verdict = await self.source.liveness(object_id, now, publish=elected)
            if verdict is None or not verdict.live:
                continue
            report.objects += 1
            for index, chunk in enumerate(manifest.chunks):
                for share, fragment_id in enumerate(chunk.fragment_ids):
                    by_id = {h.node_id: h for h in placement.holders_of(index, share)}
                    chosen = keeper(fragment_id, by_id)
                    if chosen is None:
                        continue
                    holders[chosen] = by_id[chosen]
                    leased = per_holder.setdefault(chosen, {})
                    leased.setdefault(object_id, []).append(fragment_id)
            shown = list(self.source.proofs(object_id))
            if shown:
                proofs[object_id] = shown
        for node_id, leased in per_holder.items():
            report.holders += 1
            for items in _batches(leased):
                shown = [p for item in items for p in proofs.get(item.object_id, ())]
                await self._send(holders[node_id], items, shown[:MAX_RETENTION_PROOFS], now, report)
        return report

    async def _backed_up(
        self, now: float, stewarded: set[bytes]
    ) -> list[tuple[bytes, Manifest, Placement, bool]]:
        """The objects whose manifests this node holds, that it does not steward but is one
        of the ``width`` closest to: their placement from the records it holds."""
        found: list[tuple[bytes, Manifest, Placement, bool]] = []
        me, trust = self.dht.node_id, self.dht.trust()
        cached, self._backups = self._backups, {}
        for record in self.dht.store.records_for_refresh(now):
            if record.kind != RecordKind.MANIFEST:
                continue
            key = bytes(record.key)
            closer = [c.id for c in self.dht.table.closest(key, self.width, include_stale=False)]
            if not eligible(me, key, closer, self.width):
                continue
            known = cached.get(key)
            if known is None:
                object_id = object_id_of(record.value)
                try:
                    manifest = decode_manifest(record.value, object_id)
                except (IntegrityError, RemoteProtocolError):
                    continue
                known = (manifest, Holdings(object_id, [c.fragment_ids for c in manifest.chunks]))
            manifest, holdings = known
            if holdings.object_id in stewarded:
                continue
            self._backups[key] = known  # read again next round: only new records cost checks
            placements = self.dht.store.get(int(RecordKind.PLACEMENT), key, now)
            await read_holdings(self.dht, holdings, placements)
            holdings.prune(now)
            if len(holdings):
                found.append((holdings.object_id, manifest, holdings.view(now, trust), False))
        return found

    async def _send(
        self,
        holder: Candidate,
        items: list[LeaseItem],
        proofs: list[RetentionProof],
        now: float,
        report: RenewalReport,
    ) -> None:
        node = self.dht.node
        renewal = sign_renewal(
            node.credentials, holder.node_id, items, now=now, ttl=self.ttl, retention=proofs
        )
        try:
            if holder.node_id == self.dht.node_id:
                if self.collector is None:
                    return
                reply: object = await self.collector.renew_own(renewal)
            else:
                reply = await node.call(
                    holder.node_id, holder.address, renewal, timeout=self.timeout
                )
        except (*RPC_FAILURES, P2PStoreError) as exc:
            report.unreached += 1
            log.debug("could not renew leases on %s: %s", short_id(holder.node_id), exc)
            return
        if isinstance(reply, RenewLeasesReply):
            report.applied += reply.applied
            report.refused.extend(reply.refused)


def _batches(leased: dict[bytes, list[bytes]]) -> list[list[LeaseItem]]:
    """The objects' fragments as renewals of at most ``MAX_IDS_PER_QUERY`` ids and
    ``MAX_LEASE_OBJECTS`` objects."""
    batches: list[list[LeaseItem]] = [[]]
    count = 0
    for object_id in sorted(leased):
        ids = leased[object_id]
        for start in range(0, len(ids), MAX_IDS_PER_QUERY):
            piece = tuple(ids[start : start + MAX_IDS_PER_QUERY])
            if count + len(piece) > MAX_IDS_PER_QUERY or len(batches[-1]) >= MAX_LEASE_OBJECTS:
                batches.append([])
                count = 0
            batches[-1].append(LeaseItem(object_id=object_id, fragment_ids=piece))
            count += len(piece)
    return [batch for batch in batches if batch]
