"""The gateway's names in the mesh: S3 buckets and versions are the tenant's bucket indexes.

Strategy: the gateway keeps no names of its own.  Every bucket and object version is a signed
entry of the tenant's replicated bucket index (:mod:`p2pstore.net.buckets`), sealed with the
tenant key before it leaves (:mod:`p2pstore.codec.bucket_keys`), in the form the CLI reads
(:mod:`p2pstore.gateway.mesh_entries`).  So a bucket made by ``p2pstore bucket create`` is the
one S3 clients see, and ``p2pstore ls`` lists what they PUT.  Versioning is the index's
versions; Object Lock retention and legal holds are RETAIN entries (a hold lifted, a RELEASE),
which the index joins so that a date only grows and a hold follows the latest decision, and an
ERASE takes effect only once they allow it -- judged by every replica and reader, whatever this
gateway (or a stolen key) asks.  The gateway
refuses what the mesh would ignore anyway (a shorter date, an early version delete), so the
client gets S3's ``AccessDenied`` instead of a silent no-op.

What stays here: multipart uploads in progress (:mod:`p2pstore.gateway.uploads`), a bucket's
settings cached for ``settings_ttl`` seconds (a change made elsewhere is seen that late), and a
copy of each bucket's index kept in step with its replicas (:mod:`p2pstore.net.bucket_cache`):
a request asks each replica for its summary digest, and reads whole again only a replica that
changed -- by another writer, since this gateway's own writes join the copy as they are pushed.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence

from p2pstore.codec import ReadCap
from p2pstore.codec.bucket_keys import SALT_BYTES, BucketKeys, EntryPayload
from p2pstore.core.bucket_entries import Op, bucket_id, sign_entry
from p2pstore.core.bucket_index import BucketIndex, VersionView
from p2pstore.core.references import sign_reference
from p2pstore.errors import IntegrityError, LocalProtocolError, P2PStoreError, PutFailed
from p2pstore.gateway.backend import (
    NULL_VERSION,
    Blob,
    Body,
    BucketInfo,
    Deleted,
    ObjectInfo,
    ObjectMeta,
    Write,
)
from p2pstore.gateway.blobs import MeshBlobs
from p2pstore.gateway.mesh_entries import (
    NULL,
    BucketSettings,
    bucket_settings,
    is_null,
    object_info,
    object_metadata,
)
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.uploads import UploadMethods, UploadStore
from p2pstore.net.bucket_cache import BucketCache
from p2pstore.net.buckets import BucketService
from p2pstore.net.references import publish_reference
from p2pstore.wire import BucketEntry

Opened = tuple[VersionView, EntryPayload]
MAX_VERIFIED = 100_000
"""Verified entries kept across reads (about 1 KB each), least recently read bucket first."""


def _name(item: tuple[str, VersionView, EntryPayload]) -> str:
    return item[0]


class MeshBackend(UploadMethods):
    """A :class:`~p2pstore.gateway.backend.Backend` over the mesh, acting for the tenant
    ``blobs``' client certificate names, with its secret ``tenant_key``."""

    blobs: MeshBlobs

    def __init__(
        self,
        blobs: MeshBlobs,
        tenant_key: bytes,
        uploads: UploadStore,
        *,
        service: BucketService | None = None,
        clock: Callable[[], float] = time.time,
        entropy: Callable[[int], bytes] = os.urandom,
        settings_ttl: float = 2.0,
    ) -> None:
        """Raises :class:`P2PStoreError` if the client's certificate acts for no tenant."""
        self.blobs = blobs
        self.client = blobs.client
        self.credentials = self.client.dht.node.credentials
        tenant = self.credentials.identity.tenant
        if tenant is None:
            raise P2PStoreError(
                f"the gateway's client certificate ({self.credentials.identity.describe()}) "
                f"acts for no tenant: issue it with 'p2pstore ca issue --client --tenant NAME'"
            )
        self.tenant = tenant
        self.service = service or BucketService(self.client.dht)
        self.cache = BucketCache(self.service, max_entries=MAX_VERIFIED)
        self.uploads = uploads
        self.clock = clock
        self.entropy = entropy
        self.settings_ttl = settings_ttl
        self._tenant_key = tenant_key
        self._root = BucketKeys.root(tenant_key)
        self._cached: tuple[float, dict[str, BucketSettings]] | None = None
        self._listings: dict[str, tuple[float, list[tuple[str, VersionView, EntryPayload]]]] = {}
        """bucket -> (until, its live names sorted): a listing with a delimiter asks again
        past each common prefix, which must not cost an index read each."""
        self._last_ms = 0

    def close(self) -> None:
        self.uploads.close()

    # -- the index ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        """Milliseconds, strictly increasing: two writes of one name in the same millisecond
        must still order as they were made."""
        self._last_ms = max(int(self.clock() * 1000), self._last_ms + 1)
        return self._last_ms

    def _keys(self, bucket: str) -> BucketKeys:
        try:
            return BucketKeys(self._tenant_key, bucket)
        except LocalProtocolError as error:
            raise S3Error("InvalidBucketName", str(error), resource=bucket) from None

    def _token(self, keys: BucketKeys, key: str) -> bytes:
        try:
            return keys.name_token(key)
        except LocalProtocolError as error:
            raise S3Error("InvalidArgument", str(error), resource=key[:100]) from None

    async def _fetch(self, keys: BucketKeys) -> BucketIndex:
        """The bucket's index as its replicas hold it (through the cache)."""
        return await self.cache.index(bucket_id(self.tenant, keys.bucket_token))

    def _opened(self, keys: BucketKeys, views: Sequence[VersionView]) -> list[Opened]:
        """Each view with its payload opened; one a tenant machine sealed badly is skipped."""
        out = []
        for view in views:
            try:
                out.append((view, keys.open(view.payload, name_token=view.name, op=int(view.op))))
            except IntegrityError:
                continue
        return out

    def _sign(
        self, keys: BucketKeys, name: bytes, op: Op, now: int, **fields: object
    ) -> BucketEntry:
        return sign_entry(
            self.credentials, bucket_token=keys.bucket_token, name=name, op=op, timestamp=now,
            **fields,  # type: ignore[arg-type]
        )  # fmt: skip

    def _sealed(
        self, keys: BucketKeys, payload: EntryPayload, op: Op, now: int, retain_until: int = 0
    ) -> BucketEntry:
        sealed = keys.seal(payload, op=int(op), salt=self.entropy(SALT_BYTES))
        name = keys.name_token(payload.name)
        return self._sign(keys, name, op, now, payload=sealed, retain_until=retain_until)

    async def _refer(self, keys: BucketKeys, entry: BucketEntry, caps: Sequence[str]) -> None:
        """Tell the stewards of each object the version names that it does, before the PUT
        exists: an object nobody references is collected (``net.references``)."""
        now = self.clock()
        for cap in caps:
            reference = sign_reference(
                self.credentials, ReadCap.parse(cap).object_id, now=now,
                bucket_token=keys.bucket_token, name=entry.name, version=entry.version,
            )  # fmt: skip
            await publish_reference(self.client.dht, reference, now=now)

    async def _push(self, keys: BucketKeys, entries: list[BucketEntry]) -> None:
        if not entries:
            return
        self._listings.pop(keys.name, None)  # read your own writes
        if await self.cache.push(bucket_id(self.tenant, keys.bucket_token), entries) == 0:
            raise PutFailed(
                "no replica of the bucket index took the entry: is the mesh reachable?",
                chunk=None,
            )

    def _erasures(self, keys: BucketKeys, views: Sequence[VersionView]) -> list[BucketEntry]:
        now = self._now_ms()
        return [
            self._sign(keys, view.name, Op.ERASE, now, version=view.version)
            for view in views
            if not view.erase_requested
        ]

    # -- buckets ------------------------------------------------------------------------------

    def _check(self, tenant: str) -> None:
        if tenant != self.tenant:
            raise S3Error(
                "AccessDenied",
                f"this gateway acts for tenant {self.tenant!r}, the key for {tenant!r}",
            )

    async def _all_buckets(self, *, fresh: bool = False) -> dict[str, BucketSettings]:
        now = self.clock()
        if not fresh and self._cached is not None and now < self._cached[0]:
            return self._cached[1]
        index = await self._fetch(self._root)
        found = {
            payload.name: bucket_settings(self.tenant, payload)
            for _, payload in self._opened(self._root, list(index.live(now)))
        }
        self._cached = (now + self.settings_ttl, found)
        return found

    async def _settings(self, tenant: str, name: str, *, fresh: bool = False) -> BucketSettings:
        self._check(tenant)
        found = (await self._all_buckets(fresh=fresh)).get(name)
        if found is None:
            raise S3Error("NoSuchBucket", f"the bucket {name} does not exist", resource=name)
        return found

    async def list_buckets(self, tenant: str) -> list[BucketInfo]:
        self._check(tenant)
        buckets = await self._all_buckets(fresh=True)
        return [buckets[name].info for name in sorted(buckets)]

    async def _write_settings(self, settings: BucketSettings) -> None:
        now = self._now_ms()
        payload = EntryPayload(settings.info.name, mtime=now, metadata=settings.metadata())
        await self._push(self._root, [self._sealed(self._root, payload, Op.PUT, now)])
        self._cached = None

    async def create_bucket(self, tenant: str, name: str) -> None:
        self._check(tenant)
        self._keys(name)
        if name in await self._all_buckets(fresh=True):
            raise S3Error("BucketAlreadyOwnedByYou", f"the bucket {name} exists", resource=name)
        info = BucketInfo(name, tenant, self._now_ms() / 1000)
        await self._write_settings(BucketSettings(info, self.blobs.rule.name))

    async def bucket(self, tenant: str, name: str) -> BucketInfo:
        return (await self._settings(tenant, name)).info

    async def delete_bucket(self, tenant: str, name: str) -> None:
        settings = await self._settings(tenant, name, fresh=True)
        keys = self._keys(name)
        index = await self._fetch(keys)
        now = self.clock()
        if any(self._since_created(index, n, settings, now) for n in index.names()):
            raise S3Error(
                "BucketNotEmpty", f"the bucket {name} holds objects or versions", resource=name
            )
        if self.uploads.busy(tenant, name):
            raise S3Error("BucketNotEmpty", f"uploads to {name} are in progress", resource=name)
        root = await self._fetch(self._root)
        token = self._root.name_token(name)
        stamp = self._now_ms()
        marker = self._sealed(self._root, EntryPayload(name, mtime=stamp), Op.MARKER, stamp)
        await self._push(
            self._root, [marker, *self._erasures(self._root, root.versions(token, now))]
        )
        self._cached = None

    def _since_created(
        self, index: BucketIndex, name: bytes, settings: BucketSettings, now: float
    ) -> list[VersionView]:
        """A name's versions written since the bucket was (last) created: a bucket deleted and
        made again under the same name shares its index with its earlier life."""
        created_ms = settings.info.created * 1000
        return [v for v in index.versions(name, now) if v.timestamp >= created_ms]

    async def set_versioning(self, tenant: str, name: str, status: str) -> None:
        settings = await self._settings(tenant, name, fresh=True)
        if settings.info.object_lock and status != "Enabled":
            raise S3Error("InvalidBucketState", "versioning cannot be suspended under Object Lock")
        info = dataclasses.replace(settings.info, versioning=status)
        await self._write_settings(dataclasses.replace(settings, info=info))

    async def set_object_lock(
        self, tenant: str, name: str, default_retention: float | None
    ) -> None:
        settings = await self._settings(tenant, name, fresh=True)
        info = dataclasses.replace(
            settings.info, object_lock=True, versioning="Enabled",
            default_retention=default_retention,
        )  # fmt: skip
        await self._write_settings(dataclasses.replace(settings, info=info))

    # -- bytes --------------------------------------------------------------------------------

    async def store(self, body: Body, size: int) -> Blob:
        return await self.blobs.store(body, size)

    async def read(self, blob: Blob, start: int, stop: int, write: Write) -> None:
        await self.blobs.read(blob, start, stop, write)

    # -- versions -----------------------------------------------------------------------------

    async def commit(
        self, tenant: str, bucket: str, key: str, segments: Sequence[Blob], meta: ObjectMeta
    ) -> ObjectInfo:
        settings = await self._settings(tenant, bucket)
        keys = self._keys(bucket)
        token = self._token(keys, key)
        info = settings.info
        null = info.versioning != "Enabled"
        replaced = []
        if null:
            replaced = self._opened(keys, (await self._fetch(keys)).versions(token, self.clock()))
        cap, parts = await self.blobs.segment_list(segments)
        now = self._now_ms()
        size = sum(s.size for s in segments)
        metadata = object_metadata(meta, segments=parts, null=null)
        try:
            payload = EntryPayload(key, cap, size, now, metadata)
            retain = 0
            if info.default_retention is not None:
                retain = math.ceil(now / 1000 + info.default_retention)
            entry = self._sealed(keys, payload, Op.PUT, now, retain)
        except LocalProtocolError as error:
            raise S3Error("MetadataTooLarge", f"the metadata does not fit: {error}") from None
        await self._refer(keys, entry, await self.blobs.caps_of(cap, parts))
        await self._push(keys, [entry])
        if null:  # the null version it replaces goes; under versioning never enabled, all go
            doomed = [v for v, p in replaced if info.versioning == "" or is_null(p)]
            await self._push(keys, self._erasures(keys, doomed))
        view = VersionView(token, entry.version, Op.PUT, now, b"", retain, False, False)
        return object_info(view, payload, latest=True)

    async def _versions(
        self, tenant: str, bucket: str, key: str
    ) -> tuple[BucketKeys, list[Opened]]:
        await self._settings(tenant, bucket)
        keys = self._keys(bucket)
        token = self._token(keys, key)
        return keys, self._opened(keys, (await self._fetch(keys)).versions(token, self.clock()))

    @staticmethod
    def _find(versions: list[Opened], version_id: str | None) -> tuple[Opened, bool] | None:
        """The version asked for (the current one for None), and whether it is the latest."""
        for position, (view, payload) in enumerate(versions):
            if version_id is None or version_id == (
                NULL_VERSION if is_null(payload) else view.version.hex()
            ):
                return (view, payload), position == 0
        return None

    async def head(
        self, tenant: str, bucket: str, key: str, version_id: str | None = None
    ) -> ObjectInfo:
        _, versions = await self._versions(tenant, bucket, key)
        found = self._find(versions, version_id)
        if found is None:
            code = "NoSuchKey" if version_id is None else "NoSuchVersion"
            raise S3Error(code, "the specified key or version does not exist", resource=key)
        (view, payload), latest = found
        if view.is_marker:
            if version_id is None:
                raise S3Error("NoSuchKey", "the specified key does not exist", resource=key)
            raise S3Error("MethodNotAllowed", "the version is a delete marker", resource=key)
        return object_info(view, payload, latest=latest)

    async def delete(
        self, tenant: str, bucket: str, key: str, version_id: str | None = None
    ) -> Deleted:
        info = (await self._settings(tenant, bucket)).info
        keys, versions = await self._versions(tenant, bucket, key)
        if version_id is not None:
            found = self._find(versions, version_id)
            if found is None:
                return Deleted(version_id, False)
            (view, _), _latest = found
            if view.protected(self.clock()):
                raise S3Error(
                    "AccessDenied",
                    f"{key} version {version_id} is under Object Lock retention or legal hold",
                    resource=key,
                )
            await self._push(keys, self._erasures(keys, [view]))
            return Deleted(version_id, view.is_marker)
        if info.versioning == "" and (not versions or versions[0][0].is_marker):
            return Deleted(None, False)  # nothing to delete: no tombstone either
        now = self._now_ms()
        null = info.versioning != "Enabled"
        doomed = [v for v, p in versions if info.versioning == "" or is_null(p)] if null else []
        erasures = self._erasures(keys, doomed)
        if info.versioning == "" and not any(v.protected(now / 1000) for v in doomed):
            await self._push(keys, erasures)  # gone at once: no delete marker is needed
            return Deleted(None, False)
        meta = ((NULL, "1"),) if null else ()
        marker = self._sealed(keys, EntryPayload(key, mtime=now, metadata=meta), Op.MARKER, now)
        await self._push(keys, [marker, *erasures])
        if info.versioning == "":
            return Deleted(None, False)
        return Deleted(NULL_VERSION if null else marker.version.hex(), True)

    async def retain(
        self,
        tenant: str,
        bucket: str,
        key: str,
        version_id: str | None,
        *,
        until: float | None = None,
        legal_hold: bool | None = None,
    ) -> ObjectInfo:
        if not (await self._settings(tenant, bucket)).info.object_lock:
            raise S3Error("InvalidRequest", f"Object Lock is not enabled on {bucket}")
        keys, versions = await self._versions(tenant, bucket, key)
        found = self._find(versions, version_id)
        if found is None or found[0][0].is_marker:
            raise S3Error("NoSuchKey", "no such version, or a delete marker", resource=key)
        (view, payload), latest = found
        info = object_info(view, payload, latest=latest)
        retain = 0 if until is None else math.ceil(until)
        if until is not None and retain < view.retain_until:
            raise S3Error(
                "AccessDenied", "a compliance retention date can be extended, not shortened",
                resource=key,
            )  # fmt: skip
        entries = []
        if retain > view.retain_until or (legal_hold and not view.legal_hold):
            entries.append(self._sign(
                keys, view.name, Op.RETAIN, self._now_ms(), version=view.version,
                retain_until=max(retain, view.retain_until), legal_hold=bool(legal_hold),
            ))  # fmt: skip
        if legal_hold is False and view.legal_hold:  # the latest decision on a hold counts
            entries.append(
                self._sign(keys, view.name, Op.RELEASE, self._now_ms(), version=view.version)
            )
        await self._push(keys, entries)
        held = view.legal_hold if legal_hold is None else legal_hold
        return dataclasses.replace(
            info, retain_until=float(max(retain, view.retain_until)) or None, legal_hold=held
        )

    async def list_objects(
        self, tenant: str, bucket: str, prefix: str, after: str, limit: int
    ) -> list[ObjectInfo]:
        await self._settings(tenant, bucket)
        now = self.clock()
        cached = self._listings.get(bucket)
        if cached is None or now >= cached[0]:
            keys = self._keys(bucket)
            live = self._opened(keys, list(await self._fetch_live(keys, now)))
            cached = (now + self.settings_ttl, sorted(((p.name, v, p) for v, p in live), key=_name))
            self._listings[bucket] = cached
        names = cached[1]
        start = bisect.bisect_right(names, after, key=_name)
        chosen: list[ObjectInfo] = []
        for name, view, payload in names[start:]:
            if len(chosen) == limit or (name > prefix and not name.startswith(prefix)):
                break
            if name.startswith(prefix):
                chosen.append(object_info(view, payload, latest=True))
        return chosen

    async def _fetch_live(self, keys: BucketKeys, now: float) -> list[VersionView]:
        return list((await self._fetch(keys)).live(now))

    async def list_versions(
        self, tenant: str, bucket: str, prefix: str, after: str, limit: int
    ) -> list[ObjectInfo]:
        settings = await self._settings(tenant, bucket)
        keys = self._keys(bucket)
        index = await self._fetch(keys)
        now = self.clock()
        found: list[tuple[str, int, ObjectInfo]] = []
        for name in index.names():
            views = self._opened(keys, self._since_created(index, name, settings, now))
            for position, (view, payload) in enumerate(views):
                if payload.name > after and payload.name.startswith(prefix):
                    found.append(
                        (payload.name, position, object_info(view, payload, latest=position == 0))
                    )
        found.sort(key=lambda item: item[:2])
        return [info for _, _, info in found[:limit]]
