"""Which S3 operation a request is: the bucket and key from a path-style (``/bucket/key``) or
virtual-host-style (``bucket.s3.example.org/key``) address, the operation from the method and
the sub-resource in the query.

Strategy: pure and total.  Every request maps to an operation name, S3's own (``PutObject``,
``ListObjectsV2``...); a query parameter that is neither a known argument nor a known
sub-resource names an operation the gateway does not know (``NotImplemented``), so an
unsupported feature is never mistaken for a plain read or write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from p2pstore.gateway.s3errors import S3Error

ARGUMENTS = frozenset(
    {
        "versionId", "uploadId", "partNumber", "prefix", "delimiter", "max-keys", "marker",
        "continuation-token", "start-after", "fetch-owner", "encoding-type", "list-type",
        "key-marker", "version-id-marker", "upload-id-marker", "max-uploads", "max-parts",
        "part-number-marker", "response-content-type", "response-content-disposition",
        "response-cache-control", "response-content-encoding", "response-content-language",
        "response-expires", "x-id", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
        "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Content-Sha256",
        "X-Amz-Security-Token",
    }
)  # fmt: skip
"""Query parameters that are arguments of an operation, not a sub-resource naming one."""

_BUCKET_OPS: dict[tuple[str, str], str] = {
    ("GET", ""): "ListObjects",
    ("GET", "list-type"): "ListObjectsV2",
    ("GET", "location"): "GetBucketLocation",
    ("GET", "versioning"): "GetBucketVersioning",
    ("GET", "versions"): "ListObjectVersions",
    ("GET", "uploads"): "ListMultipartUploads",
    ("GET", "object-lock"): "GetObjectLockConfiguration",
    ("PUT", ""): "CreateBucket",
    ("PUT", "versioning"): "PutBucketVersioning",
    ("PUT", "object-lock"): "PutObjectLockConfiguration",
    ("HEAD", ""): "HeadBucket",
    ("DELETE", ""): "DeleteBucket",
    ("POST", "delete"): "DeleteObjects",
}
_OBJECT_OPS: dict[tuple[str, str], str] = {
    ("GET", ""): "GetObject",
    ("GET", "uploadId"): "ListParts",
    ("GET", "retention"): "GetObjectRetention",
    ("GET", "legal-hold"): "GetObjectLegalHold",
    ("HEAD", ""): "HeadObject",
    ("PUT", ""): "PutObject",
    ("PUT", "uploadId"): "UploadPart",
    ("PUT", "retention"): "PutObjectRetention",
    ("PUT", "legal-hold"): "PutObjectLegalHold",
    ("DELETE", ""): "DeleteObject",
    ("DELETE", "uploadId"): "AbortMultipartUpload",
    ("POST", "uploads"): "CreateMultipartUpload",
    ("POST", "uploadId"): "CompleteMultipartUpload",
}
_COPIES = {"PutObject": "CopyObject", "UploadPart": "UploadPartCopy"}
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Route:
    operation: str
    bucket: str | None
    key: str | None


def check_bucket_name(name: str) -> None:
    """Raise ``InvalidBucketName`` unless ``name`` follows S3's rules for new buckets."""
    if not _BUCKET_NAME.fullmatch(name) or ".." in name or _IP_LIKE.fullmatch(name):
        raise S3Error(
            "InvalidBucketName",
            f"{name!r}: a bucket name is 3-63 lower-case letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit",
            resource=name,
        )


def bucket_from_host(host: str, domains: Sequence[str]) -> str | None:
    """``photos.s3.example.org:9000`` -> ``photos`` when ``s3.example.org`` is a domain."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower().rstrip(".")
    for domain in domains:
        suffix = "." + domain.lower()
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def route(
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    *,
    domains: Sequence[str] = (),
    has_copy_source: bool = False,
) -> Route:
    """The operation, bucket and key of a request (``path`` decoded).

    Raises ``NotImplemented`` for a sub-resource or method the gateway does not know, and
    ``InvalidArgument`` for a key over 1024 bytes."""
    bucket = bucket_from_host(host, domains)
    rest = path.removeprefix("/")
    if bucket is None and rest:
        bucket, _, rest = rest.partition("/")
    key = rest or None
    if key is not None and len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise S3Error("InvalidArgument", "an object key is at most 1024 bytes", resource=key)
    subresources = sorted({name for name, _ in query if name not in ARGUMENTS})
    marker = subresources[0] if len(subresources) == 1 else ""
    if len(subresources) > 1:
        marker = "+".join(subresources)
    if not marker:
        if key is not None and any(name == "uploadId" for name, _ in query):
            marker = "uploadId"
        elif key is None and any(name == "list-type" for name, _ in query):
            marker = "list-type"
    if bucket is None:
        if method == "GET" and not marker:
            return Route("ListBuckets", None, None)
        raise S3Error("NotImplemented", f"{method} on the service with {marker!r}")
    table = _BUCKET_OPS if key is None else _OBJECT_OPS
    operation = table.get((method, marker))
    if operation is None:
        what = f"?{marker}" if marker else "without a sub-resource"
        raise S3Error(
            "NotImplemented",
            f"{method} {'an object' if key else 'a bucket'} {what} is not implemented",
            resource=path,
        )
    if has_copy_source:
        operation = _COPIES.get(operation, operation)
    return Route(operation, bucket, key)
