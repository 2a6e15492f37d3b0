"""The handlers of operations on objects: put, get (ranged, conditional), head, delete, copy
(multipart uploads are :mod:`multipart_ops`'s).

Every write follows one order: the bucket is checked, the body streamed into storage, the body
checked to its end (length, signature, MD5, checksum), and only then is the name committed.
A copy stores nothing: blobs are immutable, so the new name points at the same ones.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from p2pstore.gateway import etag
from p2pstore.gateway.app import Call, Handler, Response
from p2pstore.gateway.backend import NULL_VERSION, Blob, ObjectInfo, ObjectMeta, Write
from p2pstore.gateway.lock_ops import lock_headers, parse_date
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.s3xml import (
    Tree,
    http_date,
    iso8601,
    render,
)

GiB = 1024**3
MAX_PUT = 5 * GiB
"""S3's largest single PUT and largest part."""
MIN_PART = 5 * 1024 * 1024
"""Every part but the last must be at least this large (S3's rule)."""
MAX_PARTS = 10_000
MAX_METADATA = 2048
_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-disposition": "Content-Disposition",
    "response-cache-control": "Cache-Control",
    "response-content-encoding": "Content-Encoding",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
}


def _object_meta(call: Call, digest: str) -> ObjectMeta:
    pairs = tuple(
        (name.removeprefix("x-amz-meta-"), value)
        for name, value in call.request.headers
        if name.startswith("x-amz-meta-")
    )
    if sum(len(k) + len(v) for k, v in pairs) > MAX_METADATA:
        raise S3Error("InvalidArgument", f"user metadata is limited to {MAX_METADATA} bytes")
    content_type = call.header("content-type") or "binary/octet-stream"
    return ObjectMeta(digest, content_type, pairs)


def _version_header(info: ObjectInfo) -> list[tuple[str, str]]:
    return [] if info.version_id == NULL_VERSION else [("x-amz-version-id", info.version_id)]


async def _store_checked(call: Call, limit: int) -> tuple[Blob, bytes]:
    """Stream the body into storage and check it to its end: (blob, its MD5)."""
    size = call.body.require_size(limit)
    promised = etag.expected_md5(call.header("content-md5"))
    blob = await call.backend.store(call.body, size)
    await call.body.finish()
    digest = call.body.md5.digest()
    etag.check_md5(promised, digest)
    return blob, digest


async def put_object(call: Call) -> Response:
    await call.backend.bucket(call.tenant, call.bucket)
    if call.header("if-none-match") == "*":
        try:
            await call.backend.head(call.tenant, call.bucket, call.object_key)
        except S3Error as error:
            if error.code != "NoSuchKey":
                raise
        else:
            raise S3Error("PreconditionFailed", "the object exists", resource=call.object_key)
    until = _requested_retention(call)
    blob, digest = await _store_checked(call, MAX_PUT)
    meta = _object_meta(call, etag.single_part(digest))
    info = await call.backend.commit(call.tenant, call.bucket, call.object_key, [blob], meta)
    await _apply_retention(call, info, until)
    return Response(headers=[("ETag", meta.etag), *_version_header(info)])


def _requested_retention(call: Call) -> tuple[float | None, bool]:
    """The retention date and legal hold a write asks for in its headers."""
    mode = call.header("x-amz-object-lock-mode")
    date = call.header("x-amz-object-lock-retain-until-date")
    if (mode is None) != (date is None):
        raise S3Error("InvalidArgument", "give both the Object Lock mode and its date")
    if mode is not None and mode != "COMPLIANCE":
        raise S3Error("NotImplemented", "only COMPLIANCE Object Lock mode is offered")
    hold = call.header("x-amz-object-lock-legal-hold") == "ON"
    return (parse_date(date) if date else None), hold


async def _apply_retention(
    call: Call, info: ObjectInfo, requested: tuple[float | None, bool]
) -> None:
    until, hold = requested
    if until is not None or hold:
        await call.backend.retain(
            call.tenant,
            call.bucket,
            info.key,
            info.version_id,
            until=until,
            legal_hold=True if hold else None,
        )


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` of a single ``bytes=`` range; None to serve the whole object."""
    if header is None or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header.removeprefix("bytes=").strip().partition("-")
    if not first:
        if not last.isdigit():
            return None
        if int(last) == 0:
            raise S3Error("InvalidRange", "the requested range is not satisfiable")
        return max(0, size - int(last)), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise S3Error("InvalidRange", "the requested range is not satisfiable")
    return start, size if not last else min(size, int(last) + 1)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None


def _not_modified(call: Call, info: ObjectInfo) -> bool:
    """Check the conditional headers: True for a 304, ``PreconditionFailed`` for a 412."""
    if_match = call.header("if-match")
    if if_match is not None and not etag.matches(if_match, info.meta.etag):
        raise S3Error("PreconditionFailed", "If-Match does not match", resource=info.key)
    unmodified = _since(call.header("if-unmodified-since"))
    if if_match is None and unmodified is not None and int(info.modified) > unmodified:
        raise S3Error("PreconditionFailed", "modified since If-Unmodified-Since")
    if_none = call.header("if-none-match")
    if if_none is not None:
        return etag.matches(if_none, info.meta.etag)
    modified = _since(call.header("if-modified-since"))
    return modified is not None and int(info.modified) <= modified


def _object_headers(call: Call, info: ObjectInfo) -> list[tuple[str, str]]:
    headers = [
        ("ETag", info.meta.etag),
        ("Last-Modified", http_date(info.modified)),
        ("Accept-Ranges", "bytes"),
        ("Content-Type", info.meta.content_type),
        *_version_header(info),
        *lock_headers(info),
        *((f"x-amz-meta-{k}", v) for k, v in info.meta.metadata),
    ]
    for param, header in _OVERRIDES.items():
        value = call.param(param)
        if value is not None:
            headers = [h for h in headers if h[0] != header] + [(header, value)]
    return headers


async def read_object(call: Call, info: ObjectInfo, start: int, stop: int, write: Write) -> None:
    """Bytes ``[start, stop)`` of the object, across its segments, fetching only what overlaps."""
    offset = 0
    for segment in info.segments:
        low, high = max(start, offset), min(stop, offset + segment.size)
        if low < high:
            await call.backend.read(segment, low - offset, high - offset, write)
        offset += segment.size


async def _get_or_head(call: Call, *, body: bool) -> Response:
    info = await call.backend.head(
        call.tenant, call.bucket, call.object_key, call.param("versionId")
    )
    headers = _object_headers(call, info)
    if _not_modified(call, info):
        return Response(304, [h for h in headers if h[0] in ("ETag", "Last-Modified")])
    try:
        span = _parse_range(call.header("range"), info.size)
    except S3Error:
        raise S3Error("InvalidRange", f"the object is {info.size} bytes") from None
    status, (start, stop) = (200, (0, info.size)) if span is None else (206, span)
    if span is not None:
        headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{info.size}"))
    headers.append(("Content-Length", str(stop - start)))

    async def stream(write: Write) -> None:
        if body:
            await read_object(call, info, start, stop, write)

    return Response(status, headers, stream=stream)


async def get_object(call: Call) -> Response:
    return await _get_or_head(call, body=True)


async def head_object(call: Call) -> Response:
    return await _get_or_head(call, body=False)


async def delete_object(call: Call) -> Response:
    deleted = await call.backend.delete(
        call.tenant, call.bucket, call.object_key, call.param("versionId")
    )
    headers = []
    if deleted.version_id and deleted.version_id != NULL_VERSION:
        headers.append(("x-amz-version-id", deleted.version_id))
    if deleted.delete_marker:
        headers.append(("x-amz-delete-marker", "true"))
    return Response(204, headers)


def _copy_source(call: Call) -> tuple[str, str, str | None]:
    text = unquote(call.header("x-amz-copy-source") or "").lstrip("/")
    path, _, query = text.partition("?")
    bucket, _, key = path.partition("/")
    version = query.removeprefix("versionId=") if query.startswith("versionId=") else None
    if not bucket or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be BUCKET/KEY")
    if not call.key.permits("GetObject", bucket):
        raise S3Error("AccessDenied", f"this key may not read {bucket}")
    return bucket, key, version


async def copy_object(call: Call) -> Response:
    source_bucket, source_key, version = _copy_source(call)
    source = await call.backend.head(call.tenant, source_bucket, source_key, version)
    meta = source.meta
    if (call.header("x-amz-metadata-directive") or "COPY").upper() == "REPLACE":
        meta = _object_meta(call, source.meta.etag)
    info = await call.backend.commit(
        call.tenant, call.bucket, call.object_key, source.segments, meta
    )
    tree: list[Tree] = [("LastModified", iso8601(info.modified)), ("ETag", meta.etag)]
    return Response(headers=_version_header(info), body=render("CopyObjectResult", tree))


HANDLERS: dict[str, Handler] = {
    "PutObject": put_object,
    "GetObject": get_object,
    "HeadObject": head_object,
    "DeleteObject": delete_object,
    "CopyObject": copy_object,
}
