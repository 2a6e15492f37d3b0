"""The handlers of operations on the service and on buckets."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from urllib.parse import quote

from p2pstore.gateway.app import Call, Handler, Response
from p2pstore.gateway.backend import ObjectInfo
from p2pstore.gateway.etag import check_md5, expected_md5
from p2pstore.gateway.listing import Page, list_page
from p2pstore.gateway.routing import check_bucket_name
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.s3xml import (
    MAX_XML_BYTES,
    Tree,
    iso8601,
    parse_delete,
    parse_versioning,
    render,
)

MAX_KEYS = 1000
Encode = Callable[[str], str]


def _owner(call: Call) -> Tree:
    return ("Owner", [("ID", call.tenant), ("DisplayName", call.tenant)])


async def list_buckets(call: Call) -> Response:
    buckets = [
        b
        for b in await call.backend.list_buckets(call.tenant)
        if call.key.buckets is None or b.name in call.key.buckets
    ]
    entries: list[Tree] = [
        ("Bucket", [("Name", b.name), ("CreationDate", iso8601(b.created))]) for b in buckets
    ]
    return Response(body=render("ListAllMyBucketsResult", [_owner(call), ("Buckets", entries)]))


async def create_bucket(call: Call) -> Response:
    check_bucket_name(call.bucket)
    await call.body.read_all(MAX_XML_BYTES)  # an optional location constraint
    await call.backend.create_bucket(call.tenant, call.bucket)
    if (call.header("x-amz-bucket-object-lock-enabled") or "").lower() == "true":
        await call.backend.set_object_lock(call.tenant, call.bucket, None)
    return Response(headers=[("Location", f"/{call.bucket}")])


async def head_bucket(call: Call) -> Response:
    await call.backend.bucket(call.tenant, call.bucket)
    return Response(headers=[("x-amz-bucket-region", call.settings.region)])


async def delete_bucket(call: Call) -> Response:
    await call.backend.delete_bucket(call.tenant, call.bucket)
    return Response(204)


async def get_bucket_location(call: Call) -> Response:
    await call.backend.bucket(call.tenant, call.bucket)
    region = "" if call.settings.region == "us-east-1" else call.settings.region
    return Response(body=render("LocationConstraint", region))


async def get_bucket_versioning(call: Call) -> Response:
    bucket = await call.backend.bucket(call.tenant, call.bucket)
    status: list[Tree] = [("Status", bucket.versioning)] if bucket.versioning else []
    return Response(body=render("VersioningConfiguration", status))


async def put_bucket_versioning(call: Call) -> Response:
    status = parse_versioning(await call.body.read_all(MAX_XML_BYTES))
    await call.backend.set_versioning(call.tenant, call.bucket, status)
    return Response()


def _max_keys(call: Call) -> int:
    text = call.param("max-keys")
    if text is None:
        return MAX_KEYS
    if not text.isdigit():
        raise S3Error("InvalidArgument", "max-keys must be a non-negative integer")
    return min(int(text), MAX_KEYS)


def _encoder(call: Call) -> Encode:
    if call.param("encoding-type") == "url":
        return lambda text: quote(text, safe="/")
    if call.param("encoding-type") not in (None, ""):
        raise S3Error("InvalidArgument", "encoding-type must be url")
    return lambda text: text


def _entry(info: ObjectInfo, encode: Encode, owner: Tree | None = None) -> Tree:
    fields: list[Tree] = [
        ("Key", encode(info.key)),
        ("LastModified", iso8601(info.modified)),
        ("ETag", info.meta.etag),
        ("Size", info.size),
        ("StorageClass", "STANDARD"),
    ]
    return ("Contents", fields + ([owner] if owner else []))


async def _page(call: Call, after: str, skip: str | None) -> Page:
    prefix = call.param("prefix") or ""

    async def fetch(cursor: str, limit: int) -> list[ObjectInfo]:
        return await call.backend.list_objects(call.tenant, call.bucket, prefix, cursor, limit)

    return await list_page(
        fetch,
        prefix=prefix,
        delimiter=call.param("delimiter") or "",
        after=after,
        max_keys=_max_keys(call),
        skip=skip,
    )


def _common(call: Call, page: Page, encode: Encode) -> list[Tree]:
    entries: list[Tree] = [("CommonPrefixes", [("Prefix", encode(p))]) for p in page.prefixes]
    head: list[Tree] = [
        ("Name", call.bucket),
        ("Prefix", encode(call.param("prefix") or "")),
        ("MaxKeys", _max_keys(call)),
        ("IsTruncated", page.truncated),
    ]
    if call.param("delimiter"):
        head.append(("Delimiter", encode(call.param("delimiter") or "")))
    if call.param("encoding-type") == "url":
        head.append(("EncodingType", "url"))
    return head + entries


def _parse_token(token: str) -> tuple[str, str | None]:
    """A continuation token: where the previous page stopped, and its last common prefix."""
    try:
        after, skip = json.loads(base64.urlsafe_b64decode(token.encode()).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        after = None
        skip = None
    if not isinstance(after, str) or not isinstance(skip, str | None):
        raise S3Error("InvalidArgument", "the continuation token is not valid")
    return after, skip


async def list_objects_v2(call: Call) -> Response:
    await call.backend.bucket(call.tenant, call.bucket)
    encode = _encoder(call)
    token = call.param("continuation-token")
    after, skip = call.param("start-after") or "", None
    if token is not None:
        after, skip = _parse_token(token)
    page = await _page(call, after, skip)
    owner = _owner(call) if call.param("fetch-owner") == "true" else None
    tree = _common(call, page, encode) + [_entry(o, encode, owner) for o in page.objects]
    tree.append(("KeyCount", len(page.objects) + len(page.prefixes)))
    if token is not None:
        tree.append(("ContinuationToken", token))
    if call.param("start-after"):
        tree.append(("StartAfter", encode(call.param("start-after") or "")))
    if page.truncated:
        next_token = base64.urlsafe_b64encode(
            json.dumps([page.cursor, page.skip]).encode("utf-8")
        ).decode()
        tree.append(("NextContinuationToken", next_token))
    return Response(body=render("ListBucketResult", tree))


async def list_objects(call: Call) -> Response:
    await call.backend.bucket(call.tenant, call.bucket)
    encode = _encoder(call)
    marker = call.param("marker") or ""
    delimiter = call.param("delimiter") or ""
    skip = marker if delimiter and marker.endswith(delimiter) else None  # a NextMarker prefix
    page = await _page(call, marker, skip)
    tree = _common(call, page, encode) + [_entry(o, encode, _owner(call)) for o in page.objects]
    tree.append(("Marker", encode(marker)))
    if page.truncated and call.param("delimiter"):
        last = max([o.key for o in page.objects] + page.prefixes)
        tree.append(("NextMarker", encode(last)))
    return Response(body=render("ListBucketResult", tree))


async def list_object_versions(call: Call) -> Response:
    await call.backend.bucket(call.tenant, call.bucket)
    encode = _encoder(call)
    limit = _max_keys(call)
    versions = await call.backend.list_versions(
        call.tenant,
        call.bucket,
        call.param("prefix") or "",
        call.param("key-marker") or "",
        limit + 1,
    )
    truncated = len(versions) > limit
    tree: list[Tree] = [
        ("Name", call.bucket),
        ("Prefix", encode(call.param("prefix") or "")),
        ("KeyMarker", encode(call.param("key-marker") or "")),
        ("MaxKeys", limit),
        ("IsTruncated", truncated),
    ]
    for info in versions[:limit]:
        fields: list[Tree] = [
            ("Key", encode(info.key)),
            ("VersionId", info.version_id),
            ("IsLatest", info.latest),
            ("LastModified", iso8601(info.modified)),
            _owner(call),
        ]
        if not info.delete_marker:
            fields += [("ETag", info.meta.etag), ("Size", info.size), ("StorageClass", "STANDARD")]
        tree.append(("DeleteMarker" if info.delete_marker else "Version", fields))
    if truncated:
        tree.append(("NextKeyMarker", encode(versions[limit - 1].key)))
    return Response(body=render("ListVersionsResult", tree))


async def delete_objects(call: Call) -> Response:
    await call.backend.bucket(call.tenant, call.bucket)
    body = await call.body.read_all(MAX_XML_BYTES)
    check_md5(expected_md5(call.header("content-md5")), call.body.md5.digest())
    objects, quiet = parse_delete(body)
    results: list[Tree] = []
    for item in objects:
        try:
            deleted = await call.backend.delete(call.tenant, call.bucket, item.key, item.version_id)
        except S3Error as error:
            results.append(
                ("Error", [("Key", item.key), ("Code", error.code), ("Message", error.message)])
            )
            continue
        if quiet:
            continue
        fields: list[Tree] = [("Key", item.key)]
        if item.version_id:
            fields.append(("VersionId", item.version_id))
        if deleted.delete_marker:
            fields += [("DeleteMarker", True), ("DeleteMarkerVersionId", deleted.version_id or "")]
        results.append(("Deleted", fields))
    return Response(body=render("DeleteResult", results))


HANDLERS: dict[str, Handler] = {
    "ListBuckets": list_buckets,
    "CreateBucket": create_bucket,
    "HeadBucket": head_bucket,
    "DeleteBucket": delete_bucket,
    "GetBucketLocation": get_bucket_location,
    "GetBucketVersioning": get_bucket_versioning,
    "PutBucketVersioning": put_bucket_versioning,
    "ListObjectsV2": list_objects_v2,
    "ListObjects": list_objects,
    "ListObjectVersions": list_object_versions,
    "DeleteObjects": delete_objects,
}
