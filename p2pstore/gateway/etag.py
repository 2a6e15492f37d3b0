"""ETags as S3 computes them: the MD5 of a single-part object, ``md5(md5s)-N`` of a multipart
one; and the Content-MD5 check."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from p2pstore.gateway.s3errors import S3Error


def single_part(md5: bytes) -> str:
    return f'"{md5.hex()}"'


def multipart(part_md5s: Sequence[bytes]) -> str:
    """``"<md5 of the parts' binary MD5s>-<number of parts>"``."""
    return f'"{hashlib.md5(b"".join(part_md5s)).hexdigest()}-{len(part_md5s)}"'  # noqa: S324


def unquote(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def part_md5(etag: str) -> bytes:
    """The binary MD5 a part's ETag names; ``InvalidPart`` for anything else."""
    try:
        digest = bytes.fromhex(unquote(etag))
    except ValueError:
        digest = b""
    if len(digest) != 16:
        raise S3Error("InvalidPart", f"{etag!r} is not the ETag of an uploaded part")
    return digest


def expected_md5(content_md5: str | None) -> bytes | None:
    """The digest a ``Content-MD5`` header promises; ``InvalidDigest`` if it is malformed."""
    if content_md5 is None:
        return None
    try:
        digest = base64.b64decode(content_md5, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise S3Error("InvalidDigest", "the Content-MD5 you specified is not valid")
    return digest


def check_md5(expected: bytes | None, actual: bytes) -> None:
    if expected is not None and expected != actual:
        raise S3Error("BadDigest", "the Content-MD5 you specified did not match what we received")


def matches(condition: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match list names ``etag`` (``*`` names any)."""
    wanted = {unquote(item) for item in condition.split(",")}
    return "*" in wanted or unquote(etag) in wanted
