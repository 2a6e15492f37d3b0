"""Bucket names and object versions in a SQLite file on the gateway's side: a test stand-in.

The gateway serves :class:`~p2pstore.gateway.mesh_backend.MeshBackend` (names in the mesh);
this backend keeps them here so the S3 surface's tests (boto3, aws-cli, rclone over memory
blobs) run in seconds without a mesh.  Multipart state is the gateway's own
(:class:`~p2pstore.gateway.uploads.UploadStore`) in both.

Ordering: names compare as code points, which is the order of their UTF-8 bytes, S3's order.
Versions of a name are ordered by a per-file sequence number, newest highest.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from p2pstore.gateway.backend import (
    NULL_VERSION,
    Blob,
    BlobStore,
    Body,
    BucketInfo,
    Deleted,
    ObjectInfo,
    ObjectMeta,
    Write,
)
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.uploads import UploadMethods, UploadStore

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS buckets (
        name TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL, created REAL NOT NULL,
        versioning TEXT NOT NULL DEFAULT '', object_lock INTEGER NOT NULL DEFAULT 0,
        default_retention REAL)""",
    """CREATE TABLE IF NOT EXISTS versions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, bucket TEXT NOT NULL, key TEXT NOT NULL,
        version_id TEXT NOT NULL, size INTEGER NOT NULL, meta TEXT NOT NULL,
        modified REAL NOT NULL, segments TEXT NOT NULL, delete_marker INTEGER NOT NULL,
        retain_until REAL, legal_hold INTEGER NOT NULL DEFAULT 0,
        UNIQUE (bucket, key, version_id))""",
    "CREATE INDEX IF NOT EXISTS versions_by_name ON versions (bucket, key, seq)",
)
_BUCKET = "name, tenant, created, versioning, object_lock, default_retention"
_COLUMNS = (
    "key, version_id, size, meta, modified, segments, delete_marker, retain_until, legal_hold"
)


def _bucket(row: tuple[str, str, float, str, int, float | None]) -> BucketInfo:
    name, tenant, created, versioning, lock, retention = row
    return BucketInfo(name, tenant, created, versioning, bool(lock), retention)


def _meta_json(meta: ObjectMeta) -> str:
    return json.dumps([meta.etag, meta.content_type, [list(p) for p in meta.metadata]])


def _meta(text: str) -> ObjectMeta:
    etag, content_type, pairs = json.loads(text)
    return ObjectMeta(etag, content_type, tuple((k, v) for k, v in pairs))


class LocalBackend(UploadMethods):
    """A :class:`~p2pstore.gateway.backend.Backend`: names in SQLite at ``path`` (``:memory:``
    in tests), bytes in ``blobs``.  ``clock`` gives seconds since the epoch."""

    def __init__(
        self,
        path: Path | str,
        blobs: BlobStore,
        *,
        clock: Callable[[], float],
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if isinstance(path, Path) and not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self.blobs = blobs
        self.clock = clock
        self.entropy = entropy
        self.uploads = UploadStore(":memory:", clock=lambda: self.clock(), entropy=entropy)  # noqa: PLW0108 (tests move the clock)

    def close(self) -> None:
        self._db.close()
        self.uploads.close()

    # -- buckets ----------------------------------------------------------------------------

    async def list_buckets(self, tenant: str) -> list[BucketInfo]:
        rows = self._db.execute(
            f"SELECT {_BUCKET} FROM buckets WHERE tenant = ? ORDER BY name",
            (tenant,),
        )
        return [_bucket(row) for row in rows]

    async def create_bucket(self, tenant: str, name: str) -> None:
        row = self._db.execute("SELECT tenant FROM buckets WHERE name = ?", (name,)).fetchone()
        if row is not None:
            code = "BucketAlreadyOwnedByYou" if row[0] == tenant else "BucketAlreadyExists"
            raise S3Error(code, f"the bucket {name} already exists", resource=name)
        self._db.execute(
            "INSERT INTO buckets (name, tenant, created) VALUES (?, ?, ?)",
            (name, tenant, self.clock()),
        )

    async def bucket(self, tenant: str, name: str) -> BucketInfo:
        row = self._db.execute(f"SELECT {_BUCKET} FROM buckets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise S3Error("NoSuchBucket", f"the bucket {name} does not exist", resource=name)
        if row[1] != tenant:
            raise S3Error("AccessDenied", f"the bucket {name} is another tenant's", resource=name)
        return _bucket(row)

    async def delete_bucket(self, tenant: str, name: str) -> None:
        await self.bucket(tenant, name)
        busy = self._db.execute(
            "SELECT 1 FROM versions WHERE bucket = ? LIMIT 1", (name,)
        ).fetchone()
        if busy or self.uploads.busy(tenant, name):
            raise S3Error(
                "BucketNotEmpty",
                f"the bucket {name} holds objects, versions or uploads",
                resource=name,
            )
        self._db.execute("DELETE FROM buckets WHERE name = ?", (name,))

    async def set_versioning(self, tenant: str, name: str, status: str) -> None:
        bucket = await self.bucket(tenant, name)
        if bucket.object_lock and status != "Enabled":
            raise S3Error("InvalidBucketState", "versioning cannot be suspended under Object Lock")
        self._db.execute("UPDATE buckets SET versioning = ? WHERE name = ?", (status, name))

    async def set_object_lock(
        self, tenant: str, name: str, default_retention: float | None
    ) -> None:
        await self.bucket(tenant, name)
        self._db.execute(
            "UPDATE buckets SET object_lock = 1, versioning = 'Enabled', default_retention = ? "
            "WHERE name = ?",
            (default_retention, name),
        )

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
        info = await self.head(tenant, bucket, key, version_id)
        if not (await self.bucket(tenant, bucket)).object_lock:
            raise S3Error("InvalidRequest", f"Object Lock is not enabled on {bucket}")
        if until is not None:
            if info.retain_until is not None and until < info.retain_until:
                raise S3Error(
                    "AccessDenied",
                    "a compliance retention date can be extended, not shortened",
                    resource=key,
                )
            self._db.execute(
                "UPDATE versions SET retain_until = ? WHERE bucket = ? AND key = ? "
                "AND version_id = ?",
                (until, bucket, key, info.version_id),
            )
        if legal_hold is not None:
            self._db.execute(
                "UPDATE versions SET legal_hold = ? WHERE bucket = ? AND key = ? "
                "AND version_id = ?",
                (int(legal_hold), bucket, key, info.version_id),
            )
        return await self.head(tenant, bucket, key, info.version_id)

    # -- bytes ------------------------------------------------------------------------------

    async def store(self, body: Body, size: int) -> Blob:
        return await self.blobs.store(body, size)

    async def read(self, blob: Blob, start: int, stop: int, write: Write) -> None:
        await self.blobs.read(blob, start, stop, write)

    # -- versions ---------------------------------------------------------------------------

    def _new_version_id(self, bucket: BucketInfo) -> str:
        return self.entropy(16).hex() if bucket.versioning == "Enabled" else NULL_VERSION

    def _insert(
        self,
        bucket: BucketInfo,
        key: str,
        segments: Sequence[Blob],
        meta: ObjectMeta,
        *,
        delete_marker: bool,
    ) -> ObjectInfo:
        version_id = self._new_version_id(bucket)
        now = self.clock()
        retain_until = None
        if bucket.default_retention is not None and not delete_marker:
            retain_until = now + bucket.default_retention
        if version_id == NULL_VERSION:
            self._refuse_if_retained(bucket.name, key, NULL_VERSION, now)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                (bucket.name, key, version_id),
            )
            self._db.execute(
                "INSERT INTO versions (bucket, key, version_id, size, meta, modified, segments, "
                "delete_marker, retain_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bucket.name,
                    key,
                    version_id,
                    sum(s.size for s in segments),
                    _meta_json(meta),
                    now,
                    json.dumps([[s.ref, s.size] for s in segments]),
                    int(delete_marker),
                    retain_until,
                ),
            )
        return ObjectInfo(
            key,
            version_id,
            sum(s.size for s in segments),
            meta,
            now,
            tuple(segments),
            delete_marker=delete_marker,
            retain_until=retain_until,
        )

    async def commit(
        self, tenant: str, bucket: str, key: str, segments: Sequence[Blob], meta: ObjectMeta
    ) -> ObjectInfo:
        info = await self.bucket(tenant, bucket)
        return self._insert(info, key, segments, meta, delete_marker=False)

    def _row(self, row: tuple[object, ...], latest: bool) -> ObjectInfo:
        key, version_id, size, meta, modified, segments, marker, retain, hold = row
        assert isinstance(segments, str) and isinstance(meta, str)
        return ObjectInfo(
            str(key),
            str(version_id),
            int(size),  # type: ignore[call-overload]
            _meta(meta),
            float(modified),  # type: ignore[arg-type]
            tuple(Blob(ref, n) for ref, n in json.loads(segments)),
            latest=latest,
            delete_marker=bool(marker),
            retain_until=None if retain is None else float(retain),  # type: ignore[arg-type]
            legal_hold=bool(hold),
        )

    def _version(self, bucket: str, key: str, version_id: str | None) -> ObjectInfo | None:
        latest = self._db.execute(
            f"SELECT {_COLUMNS}, seq FROM versions WHERE bucket = ? AND key = ? "
            "ORDER BY seq DESC LIMIT 1",
            (bucket, key),
        ).fetchone()
        if latest is None:
            return None
        if version_id is None or latest[1] == version_id:
            return self._row(latest[:-1], True)
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
            (bucket, key, version_id),
        ).fetchone()
        return None if row is None else self._row(row, False)

    async def head(
        self, tenant: str, bucket: str, key: str, version_id: str | None = None
    ) -> ObjectInfo:
        await self.bucket(tenant, bucket)
        info = self._version(bucket, key, version_id)
        if info is None or (info.delete_marker and version_id is None):
            raise S3Error("NoSuchKey", "the specified key does not exist", resource=key)
        if info.delete_marker:
            raise S3Error("MethodNotAllowed", "the version is a delete marker", resource=key)
        return info

    def _refuse_if_retained(self, bucket: str, key: str, version_id: str, now: float) -> None:
        info = self._version(bucket, key, version_id)
        if info is None or info.version_id != version_id:
            return
        if info.legal_hold or (info.retain_until is not None and info.retain_until > now):
            raise S3Error(
                "AccessDenied", f"{key} version {version_id} is under retention", resource=key
            )

    async def delete(
        self, tenant: str, bucket: str, key: str, version_id: str | None = None
    ) -> Deleted:
        info = await self.bucket(tenant, bucket)
        if version_id is not None:
            self._refuse_if_retained(bucket, key, version_id, self.clock())
            self._db.execute(
                "DELETE FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                (bucket, key, version_id),
            )
            return Deleted(version_id, False)
        if info.versioning:
            marker = self._insert(info, key, (), ObjectMeta(""), delete_marker=True)
            return Deleted(marker.version_id, True)
        self._refuse_if_retained(bucket, key, NULL_VERSION, self.clock())
        self._db.execute(
            "DELETE FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
            (bucket, key, NULL_VERSION),
        )
        return Deleted(None, False)

    async def list_objects(
        self, tenant: str, bucket: str, prefix: str, after: str, limit: int
    ) -> list[ObjectInfo]:
        await self.bucket(tenant, bucket)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM versions v WHERE bucket = ? AND key > ? "
            "AND substr(key, 1, ?) = ? AND delete_marker = 0 AND seq = "
            "(SELECT MAX(seq) FROM versions w WHERE w.bucket = v.bucket AND w.key = v.key) "
            "ORDER BY key LIMIT ?",
            (bucket, max(after, prefix[:-1] if prefix else ""), len(prefix), prefix, limit),
        )
        return [self._row(row, True) for row in rows]

    async def list_versions(
        self, tenant: str, bucket: str, prefix: str, after: str, limit: int
    ) -> list[ObjectInfo]:
        await self.bucket(tenant, bucket)
        rows = self._db.execute(
            f"SELECT {_COLUMNS}, seq = (SELECT MAX(seq) FROM versions w WHERE "
            "w.bucket = v.bucket AND w.key = v.key) FROM versions v WHERE bucket = ? "
            "AND key > ? AND substr(key, 1, ?) = ? ORDER BY key, seq DESC LIMIT ?",
            (bucket, after, len(prefix), prefix, limit),
        )
        return [self._row(row[:-1], bool(row[-1])) for row in rows]

    # -- multipart uploads ------------------------------------------------------------------
