"""The seam between the S3 front and where names and bytes live.

:class:`Backend` is what the gateway needs of a bucket store: buckets, object versions, multipart
uploads.  Bytes go in two steps: :meth:`Backend.store` streams a body into the mesh and returns
a :class:`Blob` nobody can see yet; :meth:`Backend.commit` makes it the object under a name only
after the gateway has checked the body (signature, MD5, length).  So an interrupted or refused
upload never becomes visible.  The gateway's implementation is
:class:`~p2pstore.gateway.mesh_backend.MeshBackend` (names in the mesh's bucket index); the
S3 surface's fast tests run on a SQLite one (``tests/gateway/local_backend.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from p2pstore.gateway.spool import Hashes, PartWriter

NULL_VERSION = "null"
"""The version id of an object written while versioning was never enabled or is suspended."""


class Body(Protocol):
    """A request body, read as it arrives."""

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes; ``b""`` only at the end.  Raises :class:`S3Error` for a
        body that turns out malformed or short."""
        ...


Write = Callable[[bytes], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Blob:
    """Stored bytes with no name yet: ``ref`` is the blob store's (a read cap on the mesh)."""

    ref: str
    size: int


@dataclass(frozen=True, slots=True)
class BucketInfo:
    name: str
    tenant: str
    created: float
    versioning: str = ""
    """``""`` (never enabled), ``Enabled`` or ``Suspended``."""
    object_lock: bool = False
    default_retention: float | None = None
    """Seconds every new version is retained for (compliance mode), or None."""


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What the client said about an object, and its ETag."""

    etag: str
    content_type: str = "binary/octet-stream"
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One version of an object (or a delete marker)."""

    key: str
    version_id: str
    size: int
    meta: ObjectMeta
    modified: float
    segments: tuple[Blob, ...] = field(repr=False)
    """The blobs whose concatenation is the object (one, or one per multipart part)."""
    latest: bool = True
    delete_marker: bool = False
    retain_until: float | None = None
    legal_hold: bool = False


@dataclass(frozen=True, slots=True)
class Deleted:
    version_id: str | None
    delete_marker: bool


@dataclass(frozen=True, slots=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    initiated: float
    meta: ObjectMeta


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    blob: Blob
    md5: bytes
    modified: float


class Backend(Protocol):
    """Buckets, names and versions of one gateway's tenants.

    Every method raises :class:`S3Error` with S3's code for what the client can act on
    (``NoSuchBucket``, ``NoSuchKey``, ``BucketNotEmpty``...), and the mesh's own errors
    (:class:`PutFailed`, :class:`NotEnoughFragments`...) for what went wrong below.
    """

    async def list_buckets(self, tenant: str) -> list[BucketInfo]: ...

    async def create_bucket(self, tenant: str, name: str) -> None: ...

    async def bucket(self, tenant: str, name: str) -> BucketInfo: ...

    async def delete_bucket(self, tenant: str, name: str) -> None: ...

    async def set_versioning(self, tenant: str, name: str, status: str) -> None: ...

    async def set_object_lock(
        self, tenant: str, name: str, default_retention: float | None
    ) -> None:
        """Turn Object Lock on (it never goes off) with this default retention."""
        ...

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
        """Set a version's retention date (it may be extended, never shortened: else
        ``AccessDenied``) and/or its legal hold."""
        ...

    async def store(self, body: Body, size: int) -> Blob:
        """Stream exactly ``size`` bytes of ``body`` into storage; the blob has no name."""
        ...

    async def read(self, blob: Blob, start: int, stop: int, write: Write) -> None:
        """Pass bytes ``[start, stop)`` of ``blob`` to ``write``, in order, fetching only
        what that range needs."""
        ...

    async def commit(
        self, tenant: str, bucket: str, key: str, segments: Sequence[Blob], meta: ObjectMeta
    ) -> ObjectInfo:
        """Make ``segments`` the object ``key`` (a new version when versioning is on)."""
        ...

    async def head(
        self, tenant: str, bucket: str, key: str, version_id: str | None = None
    ) -> ObjectInfo:
        """The latest version (or ``version_id``); ``NoSuchKey`` if none or a delete marker."""
        ...

    async def delete(
        self, tenant: str, bucket: str, key: str, version_id: str | None = None
    ) -> Deleted: ...

    async def list_objects(
        self, tenant: str, bucket: str, prefix: str, after: str, limit: int
    ) -> list[ObjectInfo]:
        """The latest live versions of names starting with ``prefix`` and sorting after
        ``after``, in name order, at most ``limit``."""
        ...

    async def list_versions(
        self, tenant: str, bucket: str, prefix: str, after: str, limit: int
    ) -> list[ObjectInfo]:
        """Every version and delete marker of those names, newest first per name."""
        ...

    async def create_upload(
        self, tenant: str, bucket: str, key: str, meta: ObjectMeta
    ) -> Upload: ...

    async def upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> Upload:
        """``NoSuchUpload`` unless this upload is in progress for this key."""
        ...

    def part_writer(self, size: int, hashes: Hashes) -> PartWriter | None:
        """Somewhere to spool a part of ``size`` bytes (``hashes`` take every byte written),
        or None when there is no room: the part is then stored as a blob (:meth:`store`)."""
        ...

    async def put_part(self, upload: Upload, number: int, blob: Blob, md5: bytes) -> None: ...

    async def parts(self, upload: Upload) -> list[Part]: ...

    async def assemble(self, parts: Sequence[Part]) -> list[Blob]:
        """The blobs an upload's chosen ``parts`` become, in order: spooled ones stored."""
        ...

    async def finish_upload(self, upload: Upload) -> None:
        """Forget an upload (completed or aborted)."""
        ...

    async def list_uploads(
        self, tenant: str, bucket: str, prefix: str, after: tuple[str, str], limit: int
    ) -> list[Upload]:
        """Uploads in progress whose key starts with ``prefix``, after ``(key, upload id)``,
        in that order, at most ``limit``."""
        ...


class BlobStore(Protocol):
    """Where the bytes go: the mesh (:class:`~p2pstore.gateway.blobs.MeshBlobs`) or memory."""

    max_blob: int
    """The largest blob :meth:`store_file` takes."""

    async def store(self, body: Body, size: int) -> Blob: ...

    async def store_file(self, source: BinaryIO, size: int) -> Blob:
        """Store ``size`` bytes of a blocking file, read from a worker thread."""
        ...

    async def read(self, blob: Blob, start: int, stop: int, write: Write) -> None: ...
