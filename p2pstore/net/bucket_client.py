"""A tenant's buckets as a client uses them: create, list, put, get, stat and remove by name.

Strategy: everything here is a client-side composition of three pieces -- the object data path
(:class:`~p2pstore.net.client.Client`: put gives a read cap, get takes one), the tenant's bucket
keys (:mod:`p2pstore.codec.bucket_keys`: tokens and sealed payloads) and the replicated index
(:class:`~p2pstore.net.buckets.BucketService`).  An object name maps to the read cap of its
current version, sealed in a signed PUT entry; the tenant's list of buckets is its root bucket,
whose entries carry each bucket's settings (coding rule, versioning, default retention).

Versioning off (the default) means an overwrite or a delete also asks for the older versions to
be erased; versioning on keeps them, and ``rm`` writes a delete marker.  A default retention
puts a retention date on every version written, which no later entry can shorten.  Listing
reads the whole index from the replicas and filters by prefix here (the replicas cannot: they
never see names); a local index kept in sync incrementally is the follow-up for huge buckets.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from p2pstore.codec import ReadCap, parse_capability
from p2pstore.codec.bucket_keys import SALT_BYTES, BucketKeys, EntryPayload, validate_bucket_name
from p2pstore.codec.segments import METADATA_KEY as SEGMENTS_KEY
from p2pstore.codec.segments import unpack_segments
from p2pstore.core.bucket_entries import Op, bucket_id, sign_entry
from p2pstore.core.bucket_index import BucketIndex, VersionView
from p2pstore.core.references import sign_reference
from p2pstore.core.rules import CodingRule
from p2pstore.errors import BucketNotFound, IntegrityError, P2PStoreError, PutFailed
from p2pstore.net.buckets import BucketService, BucketSettings
from p2pstore.net.client import Client
from p2pstore.net.references import publish_reference
from p2pstore.wire import BucketEntry

DAY = 86400


class BucketNotEmpty(P2PStoreError):
    """A bucket still holds objects: remove them first."""


@dataclasses.dataclass(frozen=True, slots=True)
class BucketInfo:
    """A bucket's name and settings, as its root entry says."""

    name: str
    rule: str
    versioning: bool
    retention_days: int
    created_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One version of a named object."""

    key: str
    size: int
    mtime_ms: int
    version: str
    cap: str
    retain_until: int
    legal_hold: bool
    is_marker: bool = False
    segments: int = 0
    """Parts of a multipart object (its cap opens their segment list), else 0."""


class TenantBuckets:
    """A tenant's buckets over one connected :class:`Client` (whose certificate names the
    tenant) and its secret ``tenant_key``."""

    def __init__(
        self,
        client: Client,
        tenant_key: bytes,
        *,
        settings: BucketSettings | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.service = BucketService(client.dht, settings)
        self._tenant_key = tenant_key
        self._root = BucketKeys.root(tenant_key)
        self._entropy = entropy
        self._clock = wall_clock
        credentials = client.dht.node.credentials
        tenant = credentials.identity.tenant
        if tenant is None:
            raise P2PStoreError(
                f"this client's certificate ({credentials.identity.describe()}) acts for no "
                f"tenant: ask the mesh CA for one issued with 'p2pstore ca issue --client "
                f"--tenant NAME'"
            )
        self.tenant = tenant

    # -- buckets ------------------------------------------------------------------------------

    async def create(
        self, name: str, *, rule: str, versioning: bool = False, retention_days: int = 0
    ) -> BucketInfo:
        """Create bucket ``name``.  Raises :class:`P2PStoreError` if it exists, or if no
        replica took the entry."""
        validate_bucket_name(name)
        if any(b.name == name for b in await self.buckets()):
            raise P2PStoreError(f"bucket {name!r} already exists")
        metadata = (
            ("rule", rule),
            ("versioning", "on" if versioning else "off"),
            ("retention-days", str(retention_days)),
        )
        now = self._now_ms()
        payload = EntryPayload(name, mtime=now, metadata=metadata)
        await self._write(self._root, payload, Op.PUT, now)
        return BucketInfo(name, rule, versioning, retention_days, now)

    async def buckets(self) -> list[BucketInfo]:
        """The tenant's live buckets, by name."""
        index = await self._fetch(self._root)
        found = [_bucket_info(p) for _, p in self._opened(self._root, index.live(self._clock()))]
        return sorted(found, key=lambda b: b.name)

    async def bucket(self, name: str) -> BucketInfo:
        """Raises :class:`BucketNotFound` if the tenant has no live bucket ``name``."""
        validate_bucket_name(name)
        for info in await self.buckets():
            if info.name == name:
                return info
        raise BucketNotFound(f"no bucket {name!r} (see 'p2pstore bucket ls')")

    async def remove_bucket(self, name: str) -> None:
        """Delete an empty bucket.  Raises :class:`BucketNotEmpty` or :class:`BucketNotFound`."""
        await self.bucket(name)
        live = await self.objects(name)
        if live:
            raise BucketNotEmpty(f"bucket {name!r} still holds {len(live)} objects")
        index = await self._fetch(self._root)
        await self._delete(self._root, index, name, versioning=False)

    async def stats(self, name: str) -> dict[str, int]:
        """Counts from the replicas: live objects, versions kept, entries, and replicas."""
        keys = BucketKeys(self._tenant_key, name)
        await self.bucket(name)
        outcome = await self.service.fetch(self._bucket_id(keys))
        now = self._clock()
        versions = sum(len(outcome.index.versions(n, now)) for n in outcome.index.names())
        return {
            "objects": sum(1 for _ in outcome.index.live(now)),
            "versions": versions,
            "entries": len(outcome.index),
            "replicas": len(outcome.answered),
            "refused": len(outcome.refused),
        }

    # -- objects ------------------------------------------------------------------------------

    async def put(
        self,
        bucket: str,
        key: str,
        source: BinaryIO,
        size: int,
        *,
        rule: CodingRule,
        convergence_secret: bytes | None = None,
    ) -> ObjectInfo:
        """Store ``size`` bytes as ``bucket/key``'s new current version."""
        info = await self.bucket(bucket)
        keys = BucketKeys(self._tenant_key, bucket)
        index = await self._fetch(keys) if not info.versioning else None
        result = await self.client.put(source, size, rule, convergence_secret=convergence_secret)
        now = self._now_ms()
        payload = EntryPayload(key, result.read_cap.to_string(), size, now)
        retain = _retain_until(now, info.retention_days)
        entry = self._sign(keys, payload, Op.PUT, now, retain_until=retain)
        await self._refer(keys, entry, result.read_cap.object_id)
        await self._push(keys, [entry])
        if index is not None:
            await self._erase_versions(keys, index, keys.name_token(key))
        return ObjectInfo(key, size, now, entry.version.hex(), payload.cap, retain, False)

    async def get(
        self, bucket: str, key: str, write: Callable[[bytes], Awaitable[object]]
    ) -> ObjectInfo:
        """Write the current version of ``bucket/key`` to ``write``.

        Raises :class:`BucketNotFound` if there is none (or it is deleted)."""
        info = await self.stat(bucket, key)
        if not info.segments:
            await self.client.get(_read_cap(info.cap, bucket, key), write)
            return info
        listed = bytearray()

        async def keep(data: bytes) -> None:
            listed.extend(data)

        await self.client.get(_read_cap(info.cap, bucket, key), keep)
        for cap, size in unpack_segments(bytes(listed)):
            if size:
                await self.client.get(_read_cap(cap, bucket, key), write)
        return info

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The current version of ``bucket/key``.  Raises :class:`BucketNotFound`."""
        keys = BucketKeys(self._tenant_key, bucket)
        await self.bucket(bucket)
        index = await self._fetch(keys)
        current = index.current(keys.name_token(key), self._clock())
        if current is None or current.is_marker:
            raise BucketNotFound(f"no object {key!r} in bucket {bucket!r}")
        payload = keys.open(current.payload, name_token=current.name, op=int(current.op))
        return _object_info(current, payload)

    async def objects(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """The live objects of ``bucket`` whose name starts with ``prefix``, by name."""
        keys = BucketKeys(self._tenant_key, bucket)
        await self.bucket(bucket)
        index = await self._fetch(keys)
        found = [
            _object_info(view, payload)
            for view, payload in self._opened(keys, index.live(self._clock()))
            if payload.name.startswith(prefix)
        ]
        return sorted(found, key=lambda o: o.key)

    async def remove(self, bucket: str, key: str) -> None:
        """Delete ``bucket/key`` (a delete marker; older versions erased unless versioning)."""
        info = await self.stat(bucket, key)
        keys = BucketKeys(self._tenant_key, bucket)
        index = await self._fetch(keys)
        settings = await self.bucket(bucket)
        await self._delete(keys, index, info.key, versioning=settings.versioning)

    # -- helpers ------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _bucket_id(self, keys: BucketKeys) -> bytes:
        return bucket_id(self.tenant, keys.bucket_token)

    async def _fetch(self, keys: BucketKeys) -> BucketIndex:
        return (await self.service.fetch(self._bucket_id(keys))).index

    def _opened(self, keys: BucketKeys, views: object) -> list[tuple[VersionView, EntryPayload]]:
        """Open each view's payload; one another tenant machine sealed badly is skipped."""
        out = []
        for view in views:  # type: ignore[attr-defined]
            try:
                out.append((view, keys.open(view.payload, name_token=view.name, op=int(view.op))))
            except IntegrityError:
                continue
        return out

    async def _write(
        self, keys: BucketKeys, payload: EntryPayload, op: Op, now: int, *, retain_until: int = 0
    ) -> BucketEntry:
        entry = self._sign(keys, payload, op, now, retain_until=retain_until)
        await self._push(keys, [entry])
        return entry

    def _sign(
        self, keys: BucketKeys, payload: EntryPayload, op: Op, now: int, *, retain_until: int = 0
    ) -> BucketEntry:
        sealed = keys.seal(payload, op=int(op), salt=self._entropy(SALT_BYTES))
        return sign_entry(
            self.client.dht.node.credentials,
            bucket_token=keys.bucket_token,
            name=keys.name_token(payload.name),
            op=op,
            timestamp=now,
            payload=sealed,
            retain_until=retain_until,
        )

    async def _refer(self, keys: BucketKeys, entry: BucketEntry, object_id: bytes) -> None:
        """Tell the object's stewards, before the PUT exists, that this version names it: a
        version whose reference is lost would be collected although named."""
        reference = sign_reference(
            self.client.dht.node.credentials,
            object_id,
            now=self._clock(),
            bucket_token=keys.bucket_token,
            name=entry.name,
            version=entry.version,
        )
        await publish_reference(self.client.dht, reference, now=self._clock())

    async def _push(self, keys: BucketKeys, entries: list[BucketEntry]) -> None:
        if entries and await self.service.push(self._bucket_id(keys), entries) == 0:
            raise PutFailed(
                "no replica of the bucket index took the entry: is the mesh reachable?",
                chunk=None,
            )

    async def _delete(
        self, keys: BucketKeys, index: BucketIndex, name: str, *, versioning: bool
    ) -> None:
        now = self._now_ms()
        await self._write(keys, EntryPayload(name, mtime=now), Op.MARKER, now)
        if not versioning:
            await self._erase_versions(keys, index, keys.name_token(name))

    async def _erase_versions(self, keys: BucketKeys, index: BucketIndex, name: bytes) -> None:
        now = self._now_ms()
        erases = [
            sign_entry(
                self.client.dht.node.credentials,
                bucket_token=keys.bucket_token,
                name=name,
                op=Op.ERASE,
                timestamp=now,
                version=view.version,
            )
            for view in index.versions(name, self._clock())
            if not view.erase_requested
        ]
        await self._push(keys, erases)


def _read_cap(text: str, bucket: str, key: str) -> ReadCap:
    cap = parse_capability(text)
    if not isinstance(cap, ReadCap):
        raise IntegrityError(f"{bucket}/{key} names a verify cap, which cannot be read")
    return cap


def _retain_until(now_ms: int, days: int) -> int:
    return now_ms // 1000 + days * DAY if days > 0 else 0


def _bucket_info(payload: EntryPayload) -> BucketInfo:
    meta = dict(payload.metadata)
    try:
        days = int(meta.get("retention-days", "0"))
    except ValueError:
        days = 0
    return BucketInfo(
        payload.name, meta.get("rule", ""), meta.get("versioning") == "on", days, payload.mtime
    )


def _object_info(view: VersionView, payload: EntryPayload) -> ObjectInfo:
    return ObjectInfo(
        payload.name,
        payload.size,
        payload.mtime,
        view.version.hex(),
        payload.cap,
        view.retain_until,
        view.legal_hold,
        view.is_marker,
        _segment_count(payload),
    )


def _segment_count(payload: EntryPayload) -> int:
    count = dict(payload.metadata).get(SEGMENTS_KEY, "0")
    return int(count) if count.isdigit() else 0
