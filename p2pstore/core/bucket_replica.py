"""What a replica holds of others' bucket indexes: verified entries, bounded in all and per tenant.

Strategy: a node close to a bucket's id keeps that bucket's :class:`BucketIndex`.  It accepts
an entry only once :func:`verify_entry` vouches for it (so it can store nothing a tenant did not
sign), charges it to the entry's tenant (the unit that owns buckets; a tenant's machines share
its quota), and refuses -- never evicts -- once a bound is reached, like the record store
(:mod:`p2pstore.core.record_store`): any eviction order would let a flood choose what a replica
forgets.  Bounds: entries and bytes in all (``full``), entries and bytes per tenant, by default a
quarter of the store's (``over-quota``).  An entry displaced by the join (a dominated write copy,
a shorter retention) frees its charge.  Pure: time and the trust anchor are passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from p2pstore.core.bucket_entries import EntryReason, VerifiedEntry, verify_entry
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.core.record_store import PUBLISHER_SHARE, Usage
from p2pstore.errors import EntryRejected, LocalProtocolError
from p2pstore.identity import NodeId, TrustAnchor
from p2pstore.wire.buckets import BucketEntry


@dataclasses.dataclass(frozen=True, slots=True)
class PushOutcome:
    """What a replica did with a batch: how many entries were new, and why others were refused."""

    added: int
    refused: tuple[EntryRejected, ...]


class BucketReplica:
    """The bucket indexes a node holds for the mesh (see the module docstring)."""

    __slots__ = (
        "_by_tenant",
        "_indexes",
        "_total",
        "changes",
        "max_bytes",
        "max_entries",
        "max_tenant_bytes",
        "max_tenant_entries",
    )

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        *,
        max_tenant_entries: int | None = None,
        max_tenant_bytes: int | None = None,
    ) -> None:
        """Per-tenant limits default to ``1/PUBLISHER_SHARE`` of the store's.

        Raises :class:`LocalProtocolError` unless every limit is positive.
        """
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_tenant_entries = max_tenant_entries or max(1, max_entries // PUBLISHER_SHARE)
        self.max_tenant_bytes = max_tenant_bytes or max(1, max_bytes // PUBLISHER_SHARE)
        limits = (max_entries, max_bytes, self.max_tenant_entries, self.max_tenant_bytes)
        if min(limits) <= 0:
            raise LocalProtocolError("a bucket replica needs positive limits")
        self._indexes: dict[NodeId, BucketIndex] = {}
        self._by_tenant: dict[str, Usage] = {}
        self._total = Usage()
        self.changes = 0

    def __len__(self) -> int:
        return self._total.records

    @property
    def bytes_held(self) -> int:
        return self._total.bytes

    def usage_of(self, tenant: str) -> Usage:
        return self._by_tenant.get(tenant, Usage())

    def buckets(self) -> list[NodeId]:
        """The ids of the buckets held, sorted."""
        return sorted(self._indexes)

    def index(self, bucket: bytes) -> BucketIndex | None:
        return self._indexes.get(NodeId(bucket))

    def push(
        self, bucket: bytes, entries: Sequence[BucketEntry], now: float, *, trust: TrustAnchor
    ) -> PushOutcome:
        """Verify and hold each entry of ``bucket``; a refusal of one does not stop the others."""
        added = 0
        refused: list[EntryRejected] = []
        for entry in entries:
            try:
                added += self.add(bucket, verify_entry(entry, now, trust=trust))
            except EntryRejected as error:
                refused.append(error)
        return PushOutcome(added, tuple(refused))

    def add(self, bucket: bytes, verified: VerifiedEntry) -> bool:
        """Hold a verified entry pushed under ``bucket``; True if it was new and kept.

        Raises :class:`EntryRejected` (``wrong-bucket``, ``over-quota`` or ``full``).
        """
        if verified.bucket != bucket:
            raise EntryRejected(
                f"an entry of bucket {verified.bucket.hex()[:12]} was pushed under "
                f"{bytes(bucket).hex()[:12]}",
                reason=EntryReason.WRONG_BUCKET,
            )
        index = self._indexes.get(verified.bucket)
        if index is not None and verified.digest in index:
            return False
        tenant = verified.entry.tenant
        usage = self.usage_of(tenant)
        if (
            usage.records + 1 > self.max_tenant_entries
            or usage.bytes + verified.size > self.max_tenant_bytes
        ):
            raise EntryRejected(
                f"over quota: tenant {tenant!r} already holds {usage.records} of its "
                f"{self.max_tenant_entries} entries and {usage.bytes} of its "
                f"{self.max_tenant_bytes} bytes of bucket indexes on this node",
                reason=EntryReason.OVER_QUOTA,
            )
        if self._total.records + 1 > self.max_entries or (
            self._total.bytes + verified.size > self.max_bytes
        ):
            raise EntryRejected(
                f"no room for bucket entries ({len(self)}/{self.max_entries} entries, "
                f"{self.bytes_held}/{self.max_bytes} bytes): store them on the next closest peer",
                reason=EntryReason.FULL,
            )
        if index is None:
            index = self._indexes[verified.bucket] = BucketIndex(verified.bucket)
        displaced = index.add(verified)
        if displaced == [verified]:
            return False
        self._charge(tenant, verified, 1)
        for old in displaced:
            self._charge(old.entry.tenant, old, -1)
        self.changes += 1
        return True

    def drop_revoked(self, trust: TrustAnchor) -> int:
        """Forget every entry whose signer's certificate ``trust`` revokes (rebuilding the
        affected indexes from what is left); return how many were dropped."""
        dropped = 0
        for bucket, index in list(self._indexes.items()):
            doomed = [
                e
                for e in index.entries()
                if e.certificate is not None and e.certificate.serial in trust.revoked_serials
            ]
            if not doomed:
                continue
            kept = [e for e in index.entries() if e not in doomed]
            for entry in index.entries():
                self._charge(entry.entry.tenant, entry, -1)
            rebuilt = BucketIndex(bucket)
            rebuilt.merge(kept)
            for entry in rebuilt.entries():
                self._charge(entry.entry.tenant, entry, 1)
            if len(rebuilt):
                self._indexes[bucket] = rebuilt
            else:
                del self._indexes[bucket]
            dropped += len(doomed)
            self.changes += 1
        return dropped

    def all_entries(self) -> Iterator[tuple[NodeId, VerifiedEntry]]:
        """Every entry held, by bucket then digest (what a node saves and hands over)."""
        for bucket in self.buckets():
            for entry in self._indexes[bucket].entries():
                yield bucket, entry

    def _charge(self, tenant: str, entry: VerifiedEntry, sign: int) -> None:
        self._total = self._total.plus(sign, sign * entry.size)
        usage = self.usage_of(tenant).plus(sign, sign * entry.size)
        if usage.records:
            self._by_tenant[tenant] = usage
        else:
            self._by_tenant.pop(tenant, None)
