"""Multipart uploads in progress: the gateway's own state, in a SQLite file beside its keys.

Strategy: an upload in progress is between one client and this gateway -- its parts are
files of the gateway's spool (:mod:`p2pstore.gateway.spool`), or objects of the mesh when the
spool had no room, and no name points at them until CompleteMultipartUpload stores and commits
them into the bucket index (:mod:`p2pstore.gateway.mesh_backend`).  Nothing of it needs to be
shared, so it stays here, in a file that survives a restart (a client resumes its upload), and
bounded: at most ``max_uploads`` in progress per tenant (``SlowDown`` beyond), 10,000 parts
each (S3's limit, checked by the handlers), and an upload begun more than ``max_age`` seconds
ago is forgotten at the next creation (S3 leaves that to a lifecycle rule; its spooled files
go, its parts' objects are referenced by nothing and lapse with their leases).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from p2pstore.gateway.backend import Blob, BlobStore, BucketInfo, ObjectMeta, Part, Upload
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.spool import SPOOLED, Hashes, PartSpool, PartWriter, is_spooled

WEEK = 7 * 86_400.0
SPOOL_LIMIT = 16 * 1024**3
"""Bytes of parts spooled at once by default; past it parts go to the mesh one by one."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS uploads (
        upload_id TEXT PRIMARY KEY NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
        tenant TEXT NOT NULL, initiated REAL NOT NULL, meta TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS uploads_by_name ON uploads (tenant, bucket, key, upload_id)",
    """CREATE TABLE IF NOT EXISTS parts (
        upload_id TEXT NOT NULL, number INTEGER NOT NULL, ref TEXT NOT NULL,
        size INTEGER NOT NULL, md5 BLOB NOT NULL, modified REAL NOT NULL,
        PRIMARY KEY (upload_id, number))""",
)


def meta_json(meta: ObjectMeta) -> str:
    return json.dumps([meta.etag, meta.content_type, [list(p) for p in meta.metadata]])


def meta_from_json(text: str) -> ObjectMeta:
    etag, content_type, pairs = json.loads(text)
    return ObjectMeta(etag, content_type, tuple((k, v) for k, v in pairs))


class UploadStore:
    """Uploads and their parts at ``path`` (``:memory:`` in tests), parts' bytes in the
    directory ``spool`` (a temporary one, removed at :meth:`close`, if None); ``clock`` gives
    seconds since the epoch."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float],
        entropy: Callable[[int], bytes] = os.urandom,
        max_uploads: int = 10_000,
        max_age: float = WEEK,
        spool: Path | None = None,
        spool_limit: int = SPOOL_LIMIT,
    ) -> None:
        if isinstance(path, Path) and not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self.clock = clock
        self.entropy = entropy
        self.max_uploads = max_uploads
        self.max_age = max_age
        self._temporary = spool is None
        directory = Path(tempfile.mkdtemp(prefix="p2pstore-spool-")) if spool is None else spool
        self.spool = PartSpool(directory, limit=spool_limit, entropy=entropy)
        refs = self._db.execute("SELECT ref FROM parts WHERE substr(ref, 1, ?) = ?",
                                (len(SPOOLED), SPOOLED))  # fmt: skip
        self.spool.keep_only(ref.removeprefix(SPOOLED) for (ref,) in refs)

    def close(self) -> None:
        self._db.close()
        if self._temporary:
            shutil.rmtree(self.spool.directory, ignore_errors=True)

    def create(self, tenant: str, bucket: str, key: str, meta: ObjectMeta) -> Upload:
        """Start an upload.  Raises ``SlowDown`` when the tenant has ``max_uploads``."""
        now = self.clock()
        self._forget_before(now - self.max_age)
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM uploads WHERE tenant = ?", (tenant,)
        ).fetchone()
        if count >= self.max_uploads:
            raise S3Error(
                "SlowDown",
                f"{count} multipart uploads are in progress: complete or abort some first",
            )
        upload = Upload(self.entropy(16).hex(), bucket, key, now, meta)
        self._db.execute(
            "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
            (upload.upload_id, bucket, key, tenant, now, meta_json(meta)),
        )
        return upload

    def get(self, tenant: str, bucket: str, key: str, upload_id: str) -> Upload:
        """Raises ``NoSuchUpload`` unless ``upload_id`` is in progress for this name."""
        row = self._db.execute(
            "SELECT initiated, meta FROM uploads WHERE upload_id = ? AND bucket = ? "
            "AND key = ? AND tenant = ?",
            (upload_id, bucket, key, tenant),
        ).fetchone()
        if row is None:
            raise S3Error("NoSuchUpload", "the specified upload does not exist", resource=key)
        return Upload(upload_id, bucket, key, row[0], meta_from_json(row[1]))

    def in_progress(
        self, tenant: str, bucket: str, prefix: str, after: tuple[str, str], limit: int
    ) -> list[Upload]:
        """Uploads whose key starts with ``prefix``, after ``(key, upload id)``, in that order."""
        key_marker, id_marker = after
        rows = self._db.execute(
            "SELECT upload_id, key, initiated, meta FROM uploads WHERE tenant = ? AND "
            "bucket = ? AND substr(key, 1, ?) = ? AND (key > ? OR (key = ? AND upload_id > ?)) "
            "ORDER BY key, upload_id LIMIT ?",
            (tenant, bucket, len(prefix), prefix, key_marker, key_marker, id_marker, limit),
        )
        return [
            Upload(upload_id, bucket, key, initiated, meta_from_json(meta))
            for upload_id, key, initiated, meta in rows
        ]

    def busy(self, tenant: str, bucket: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM uploads WHERE tenant = ? AND bucket = ? LIMIT 1", (tenant, bucket)
        ).fetchone()
        return row is not None

    def put_part(self, upload: Upload, number: int, blob: Blob, md5: bytes) -> None:
        """Record a part; the one it replaces, if spooled, goes."""
        with self._db:
            self._db.execute("BEGIN")
            old = self._db.execute(
                "SELECT ref, size FROM parts WHERE upload_id = ? AND number = ?",
                (upload.upload_id, number),
            ).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?)",
                (upload.upload_id, number, blob.ref, blob.size, md5, self.clock()),
            )
        if old is not None:
            self.spool.remove(Blob(old[0], old[1]))

    def parts(self, upload: Upload) -> list[Part]:
        rows = self._db.execute(
            "SELECT number, ref, size, md5, modified FROM parts WHERE upload_id = ? "
            "ORDER BY number",
            (upload.upload_id,),
        )
        return [Part(n, Blob(ref, size), md5, modified) for n, ref, size, md5, modified in rows]

    def finish(self, upload: Upload) -> None:
        """Forget an upload (completed or aborted), and its spooled files."""
        self._forget([upload.upload_id])

    def _forget_before(self, when: float) -> None:
        rows = self._db.execute("SELECT upload_id FROM uploads WHERE initiated < ?", (when,))
        self._forget([upload_id for (upload_id,) in rows])

    def _forget(self, upload_ids: list[str]) -> None:
        for upload_id in upload_ids:
            with self._db:
                self._db.execute("BEGIN")
                files = self._db.execute(
                    "SELECT ref, size FROM parts WHERE upload_id = ?", (upload_id,)
                ).fetchall()
                self._db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
                self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            for ref, size in files:
                self.spool.remove(Blob(ref, size))


class UploadMethods:
    """The multipart methods of a :class:`~p2pstore.gateway.backend.Backend`, for one that
    keeps its uploads in ``self.uploads``, its bytes in ``self.blobs`` and checks buckets with
    ``self.bucket``."""

    uploads: UploadStore
    blobs: BlobStore

    async def bucket(self, tenant: str, name: str) -> BucketInfo:
        raise NotImplementedError

    async def create_upload(self, tenant: str, bucket: str, key: str, meta: ObjectMeta) -> Upload:
        await self.bucket(tenant, bucket)
        return self.uploads.create(tenant, bucket, key, meta)

    async def upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> Upload:
        await self.bucket(tenant, bucket)
        return self.uploads.get(tenant, bucket, key, upload_id)

    async def list_uploads(
        self, tenant: str, bucket: str, prefix: str, after: tuple[str, str], limit: int
    ) -> list[Upload]:
        await self.bucket(tenant, bucket)
        return self.uploads.in_progress(tenant, bucket, prefix, after, limit)

    def part_writer(self, size: int, hashes: Hashes) -> PartWriter | None:
        return self.uploads.spool.writer(size, hashes)

    async def put_part(self, upload: Upload, number: int, blob: Blob, md5: bytes) -> None:
        self.uploads.put_part(upload, number, blob, md5)

    async def assemble(self, parts: Sequence[Part]) -> list[Blob]:
        """Each run of spooled parts stored as one blob (several past the largest blob the
        store takes); a part already stored stays as it is."""
        out: list[Blob] = []
        run: list[Blob] = []
        for blob in [p.blob for p in parts] + [Blob("", -1)]:  # a sentinel ends the last run
            if run and not (
                is_spooled(blob) and sum(b.size for b in run) + blob.size <= self.blobs.max_blob
            ):
                out.append(await self._store_run(run))
                run = []
            if is_spooled(blob):
                run.append(blob)
            elif blob.size >= 0:
                out.append(blob)
        return out

    async def _store_run(self, run: list[Blob]) -> Blob:
        size = sum(b.size for b in run)
        reader = self.uploads.spool.reader(run)
        try:
            return await self.blobs.store_file(reader, size)
        finally:
            reader.close()

    async def parts(self, upload: Upload) -> list[Part]:
        return self.uploads.parts(upload)

    async def finish_upload(self, upload: Upload) -> None:
        self.uploads.finish(upload)
