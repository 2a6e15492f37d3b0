"""Test helpers: requests signed by botocore (an independent SigV4 implementation), and an
aws-chunked body signed chunk by chunk."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from p2pstore.gateway.sigv4 import (
    Authorized,
    SignedRequest,
    chunk_string_to_sign,
    parse_query,
    sign,
)


def as_signed(request: AWSRequest) -> SignedRequest:
    """What the gateway sees of a request botocore prepared."""
    parts = urlsplit(request.url)
    from urllib.parse import unquote

    headers = [(name.lower(), str(value)) for name, value in request.headers.items()]
    if not any(name == "host" for name, _ in headers):
        headers.append(("host", parts.netloc))
    return SignedRequest(
        method=request.method,
        path=unquote(parts.path),
        query=parse_query(parts.query),
        headers=tuple(headers),
    )


def botocore_signed(
    method: str,
    url: str,
    *,
    access_key: str,
    secret: str,
    region: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    presign_expires: int | None = None,
) -> SignedRequest:
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    credentials = Credentials(access_key, secret)
    if presign_expires is None:
        request.context["payload_signing_enabled"] = True
        S3SigV4Auth(credentials, "s3", region).add_auth(request)
    else:
        S3SigV4QueryAuth(credentials, "s3", region, expires=presign_expires).add_auth(request)
    return as_signed(request)


def chunked_body(auth: Authorized, payload: bytes, chunk: int) -> bytes:
    """``payload`` as a signed aws-chunked body in chunks of ``chunk`` bytes."""
    out = []
    previous = auth.signature
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for piece in pieces:
        digest = hashlib.sha256(piece).hexdigest()
        previous = sign(
            auth.signing_key, chunk_string_to_sign(auth.timestamp, auth.scope, previous, digest)
        )
        out.append(f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + b"\r\n")
    return b"".join(out)


def sign_headers(
    method: str,
    url: str,
    *,
    access_key: str,
    secret: str,
    payload: str,
    headers: dict[str, str],
    now: float,
    region: str = "us-east-1",
) -> tuple[dict[str, str], Authorized]:
    """Headers that sign a request with any payload marker (botocore cannot make streaming
    ones); the signing functions are the gateway's, checked against botocore elsewhere."""
    import time as _time
    from urllib.parse import unquote, urlsplit

    from p2pstore.gateway.sigv4 import (
        Credential,
        canonical_request,
        signing_key,
        string_to_sign,
    )

    parts = urlsplit(url)
    timestamp = _time.strftime("%Y%m%dT%H%M%SZ", _time.gmtime(now))
    all_headers = {
        **{k.lower(): v for k, v in headers.items()},
        "host": parts.netloc,
        "x-amz-date": timestamp,
        "x-amz-content-sha256": payload,
    }
    signed = tuple(sorted(all_headers))
    request = SignedRequest(
        method, unquote(parts.path), parse_query(parts.query), tuple(all_headers.items())
    )
    credential = Credential(access_key, timestamp[:8], region, "s3")
    key = signing_key(secret, credential)
    signature = sign(
        key,
        string_to_sign(timestamp, credential.scope, canonical_request(request, signed, payload)),
    )
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{credential.scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return all_headers, Authorized(access_key, payload, signature, key, timestamp, credential.scope)
