"""AWS Signature Version 4, checked the way S3 checks it: in the Authorization header or in a
presigned URL's query.

Strategy: pure.  The app hands over what arrived (method, decoded path, query pairs, headers),
``now`` and a way to find an access key's secret; :func:`authenticate` answers who signed and
how the body is to be checked (:class:`Authorized`), or raises :class:`S3Error` with S3's code.
The canonical request is rebuilt from decoded values with S3's encoding (every byte but
``A-Za-z0-9-_.~`` escaped, the path encoded once with its slashes kept), so a client that
escaped differently but equivalently still verifies.  Signatures are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from p2pstore.gateway.s3errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = 15 * 60
"""Seconds a signed request's date may differ from the gateway's clock (S3's rule)."""
MAX_EXPIRES = 7 * 24 * 3600
"""The longest a presigned URL may live (S3's rule)."""
_HEX = frozenset("0123456789abcdef")

SecretLookup = Callable[[str], "str | None"]
"""An access key id -> its secret, or None for an unknown key."""


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the signature covers, as it arrived: header names in lower case."""

    method: str
    path: str
    """Decoded (``/bucket/a b``), without the query."""
    query: tuple[tuple[str, str], ...]
    """Decoded pairs, in the order sent."""
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return ",".join(values) if values else None

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)


@dataclass(frozen=True, slots=True)
class Credential:
    """``AKID/20130524/us-east-1/s3/aws4_request``."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True, slots=True)
class Authorized:
    """A verified request: who signed it, and what its body must satisfy."""

    access_key: str
    payload: str
    """``UNSIGNED-PAYLOAD``, a streaming marker, or the hex SHA-256 the body must have."""
    signature: str
    """The request's signature: the seed of a streaming body's chunk signatures."""
    signing_key: bytes
    timestamp: str
    scope: str


def parse_query(raw: str) -> tuple[tuple[str, str], ...]:
    """``a=1&b&c=%20`` -> decoded pairs (``+`` stays a plus, as SigV4 clients escape spaces)."""
    pairs = []
    for part in raw.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return tuple(pairs)


def _encode(text: str, *, keep_slash: bool) -> str:
    return quote(text, safe="/~" if keep_slash else "~")


def _canonical_value(value: str) -> str:
    return " ".join(value.strip().split())


def canonical_request(
    request: SignedRequest,
    signed_headers: Sequence[str],
    payload: str,
    *,
    omit_param: str | None = None,
) -> str:
    """The canonical request text; ``omit_param`` (a presigned URL's signature) is left out."""
    query = sorted(
        (_encode(name, keep_slash=False), _encode(value, keep_slash=False))
        for name, value in request.query
        if name != omit_param
    )
    lines = [f"{name}:{_canonical_value(request.header(name) or '')}" for name in signed_headers]
    return "\n".join(
        [
            request.method,
            _encode(request.path or "/", keep_slash=True),
            "&".join(f"{name}={value}" for name, value in query),
            *lines,
            "",
            ";".join(signed_headers),
            payload,
        ]
    )


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def signing_key(secret: str, credential: Credential) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (credential.date, credential.region, credential.service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def chunk_string_to_sign(timestamp: str, scope: str, previous: str, chunk_sha256: str) -> str:
    """What one chunk of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` body is signed over."""
    return "\n".join(
        [f"{ALGORITHM}-PAYLOAD", timestamp, scope, previous, EMPTY_SHA256, chunk_sha256]
    )


def parse_credential(text: str) -> Credential:
    parts = text.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f"the credential {text!r} is not KEY/DATE/REGION/SERVICE/aws4_request",
        )
    return Credential(parts[0], parts[1], parts[2], parts[3])


def parse_timestamp(text: str) -> float:
    """``20130524T000000Z`` -> seconds since the epoch; S3's error for anything else."""
    try:
        moment = datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise S3Error(
            "AccessDenied", f"the request's date {text!r} is not YYYYMMDDTHHMMSSZ"
        ) from None
    return moment.timestamp()


def _parse_authorization(value: str) -> tuple[Credential, tuple[str, ...], str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error(
            "InvalidRequest",
            "the authorization mechanism you have provided is not supported; "
            f"please use {ALGORITHM}",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, field_value = part.strip().partition("=")
        fields[name] = field_value
    missing = {"Credential", "SignedHeaders", "Signature"} - fields.keys()
    if missing:
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f"the Authorization header lacks {', '.join(sorted(missing))}",
        )
    headers = tuple(fields["SignedHeaders"].split(";"))
    return parse_credential(fields["Credential"]), headers, fields["Signature"]


def _check_payload_marker(payload: str) -> str:
    if payload in (UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_UNSIGNED_TRAILER):
        return payload
    if len(payload) == 64 and set(payload) <= _HEX:
        return payload
    if payload.startswith("STREAMING-"):
        raise S3Error("NotImplemented", f"x-amz-content-sha256 {payload} is not supported")
    raise S3Error(
        "InvalidArgument", f"x-amz-content-sha256 {payload!r} is not a SHA-256 or a marker"
    )


def _verify(
    request: SignedRequest,
    *,
    credential: Credential,
    signed_headers: tuple[str, ...],
    signature: str,
    payload: str,
    timestamp: str,
    region: str,
    secret_of: SecretLookup,
    omit_param: str | None,
) -> Authorized:
    if credential.service != "s3":
        raise S3Error(
            "AuthorizationHeaderMalformed", f"the service {credential.service!r} is not s3"
        )
    if credential.region != region:
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f"the region {credential.region!r} is wrong; this gateway expects {region!r}",
        )
    if credential.date != timestamp[:8]:
        raise S3Error("AuthorizationHeaderMalformed", "the credential's date is not the request's")
    if "host" not in signed_headers or list(signed_headers) != sorted(set(signed_headers)):
        raise S3Error(
            "AuthorizationHeaderMalformed", "SignedHeaders must be sorted, unique and name host"
        )
    if any(request.header(name) is None for name in signed_headers):
        raise S3Error("AccessDenied", "a header named in SignedHeaders is missing")
    secret = secret_of(credential.access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", f"no access key {credential.access_key!r} here")
    key = signing_key(secret, credential)
    canonical = canonical_request(request, signed_headers, payload, omit_param=omit_param)
    expected = sign(key, string_to_sign(timestamp, credential.scope, canonical))
    if not hmac.compare_digest(expected, signature):
        raise S3Error(
            "SignatureDoesNotMatch",
            "the request signature we calculated does not match the signature you provided; "
            "check your key and signing method",
        )
    return Authorized(credential.access_key, payload, signature, key, timestamp, credential.scope)


def authenticate(
    request: SignedRequest, *, now: float, region: str, secret_of: SecretLookup
) -> Authorized:
    """Check the request's signature (header or presigned URL) at time ``now``.

    Raises :class:`S3Error`: ``AccessDenied`` for an unsigned or expired request,
    ``SignatureDoesNotMatch``, ``InvalidAccessKeyId``, ``RequestTimeTooSkewed``,
    ``AuthorizationHeaderMalformed``, ``InvalidRequest`` for other schemes.
    """
    header = request.header("authorization")
    if header is not None:
        credential, signed_headers, signature = _parse_authorization(header)
        timestamp = request.header("x-amz-date")
        if timestamp is None:
            raise S3Error("AccessDenied", "a signed request needs an x-amz-date header")
        moment = parse_timestamp(timestamp)
        if abs(now - moment) > MAX_SKEW:
            raise S3Error(
                "RequestTimeTooSkewed",
                "the difference between the request time and the gateway's time is too large",
            )
        payload = request.header("x-amz-content-sha256")
        if payload is None:
            raise S3Error("InvalidRequest", "a signed request needs x-amz-content-sha256")
        return _verify(
            request,
            credential=credential,
            signed_headers=signed_headers,
            signature=signature,
            payload=_check_payload_marker(payload),
            timestamp=timestamp,
            region=region,
            secret_of=secret_of,
            omit_param=None,
        )
    if request.param("X-Amz-Signature") is None:
        raise S3Error("AccessDenied", "anonymous requests are not served: sign with an access key")
    return _authenticate_presigned(request, now=now, region=region, secret_of=secret_of)


def _authenticate_presigned(
    request: SignedRequest, *, now: float, region: str, secret_of: SecretLookup
) -> Authorized:
    def param(name: str) -> str:
        value = request.param(name)
        if value is None:
            raise S3Error("AuthorizationQueryParametersError", f"the query lacks {name}")
        return value

    if param("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error("InvalidRequest", f"only {ALGORITHM} presigned URLs are supported")
    timestamp = param("X-Amz-Date")
    moment = parse_timestamp(timestamp)
    try:
        expires = int(param("X-Amz-Expires"))
    except ValueError:
        expires = -1
    if not 1 <= expires <= MAX_EXPIRES:
        raise S3Error(
            "AuthorizationQueryParametersError",
            f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES}",
        )
    if now < moment - MAX_SKEW:
        raise S3Error("AccessDenied", "the request is not valid yet")
    if now > moment + expires:
        raise S3Error("AccessDenied", "request has expired")
    payload = request.param("X-Amz-Content-Sha256") or UNSIGNED_PAYLOAD
    return _verify(
        request,
        credential=parse_credential(param("X-Amz-Credential")),
        signed_headers=tuple(param("X-Amz-SignedHeaders").split(";")),
        signature=param("X-Amz-Signature"),
        payload=_check_payload_marker(payload),
        timestamp=timestamp,
        region=region,
        secret_of=secret_of,
        omit_param="X-Amz-Signature",
    )
