"""A tenant's bucket keys: bucket and name tokens, and the sealed payload of an index entry.

Strategy: a tenant keeps one 32-byte secret, the *tenant key*, on its own machines (gateways,
clients); the mesh never sees it.  Everything else is derived with HMAC-SHA256 under distinct
labels, so one bucket's keys say nothing about another's:

* bucket token = HMAC(tenant key, "bucket-token" || bucket name): with the tenant it gives the
  bucket's DHT id, so any machine of the tenant finds a bucket from its name alone;
* bucket key = HMAC(tenant key, "bucket-key" || bucket name), and from it the name key and the
  payload key;
* name token = HMAC(name key, object name): *deterministic*, so a replica groups the versions of
  one name and a client asks for one name, without either learning the name.  The trade-off:
  a replica sees how many names a bucket has, how many versions each, when each was written
  and by which machine, and that two entries are about the same name -- but not the names, nor
  their order, so prefix listing is done by the client over a local copy of the index;
* payload = AES-256-GCM under a per-entry key HMAC(payload key, 16 random bytes) with a zero
  nonce (a fresh key per entry, so random nonces cannot collide however many entries a bucket
  has), associated data binding it to its bucket, name token and op.  It holds the name itself
  (checked against the token on opening), the read cap, the size, the mtime and user metadata.

The tenant's list of buckets is itself a bucket (the *root*, under its own label), whose names
are bucket names and whose payloads carry their settings.  Pure: entropy is passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from typing import Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pstore.errors import IntegrityError, LocalProtocolError
from p2pstore.wire.buckets import MAX_ENTRY_PAYLOAD

TENANT_KEY_BYTES: Final = 32
SALT_BYTES: Final = 16
MAX_NAME_BYTES: Final = 1024
"""Object names are at most 1024 bytes of UTF-8 (as in S3)."""
MAX_METADATA_BYTES: Final = 2048
MAX_CAP_CHARS: Final = 512
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_LABEL = b"p2pstore/bucket/v1/"
_ROOT = "\0root"
"""The root bucket's name: no valid bucket name contains a NUL."""


def validate_bucket_name(name: str) -> str:
    """Check a bucket name (3-63 of ``a-z 0-9 . -``, starting and ending with a letter or
    digit, as in S3); return it.  Raises :class:`LocalProtocolError` otherwise."""
    if not isinstance(name, str) or _BUCKET.fullmatch(name) is None:
        raise LocalProtocolError(
            f"invalid bucket name {name!r}: use 3 to 63 lowercase letters, digits, '.' and '-', "
            f"starting and ending with a letter or digit (e.g. 'archives-2026')"
        )
    return name


def validate_object_name(name: str) -> str:
    """Check an object name (1-1024 bytes of UTF-8, no NUL); return it.

    Raises :class:`LocalProtocolError` otherwise.
    """
    try:
        size = len(name.encode("utf-8"))
    except (AttributeError, UnicodeEncodeError):
        raise LocalProtocolError(f"an object name is UTF-8 text, not {name!r:.80}") from None
    if not 1 <= size <= MAX_NAME_BYTES or "\0" in name:
        raise LocalProtocolError(
            f"an object name is 1 to {MAX_NAME_BYTES} bytes of UTF-8 without NUL ({size} given)"
        )
    return name


def _mac(key: bytes, label: bytes, data: bytes = b"") -> bytes:
    return hmac.new(key, _LABEL + label + b"\0" + data, hashlib.sha256).digest()


@dataclasses.dataclass(frozen=True, slots=True)
class EntryPayload:
    """What a PUT (or delete marker) says once opened; ``mtime`` in milliseconds."""

    name: str
    cap: str = ""
    size: int = 0
    mtime: int = 0
    metadata: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        validate_object_name(self.name)
        if not isinstance(self.cap, str) or len(self.cap) > MAX_CAP_CHARS:
            raise LocalProtocolError(f"a read cap is at most {MAX_CAP_CHARS} characters")
        if type(self.size) is not int or type(self.mtime) is not int:
            raise LocalProtocolError("size and mtime are ints")
        if not (0 <= self.size < 2**63 and 0 <= self.mtime < 2**62):
            raise LocalProtocolError("size or mtime out of range")
        meta_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in self.metadata)
        if meta_bytes > MAX_METADATA_BYTES:
            raise LocalProtocolError(
                f"user metadata is at most {MAX_METADATA_BYTES} bytes ({meta_bytes} given)"
            )

    def pack(self) -> bytes:
        fields = [self.name, self.cap, self.size, self.mtime, [list(kv) for kv in self.metadata]]
        packed: bytes = msgpack.packb(fields, use_bin_type=True)
        return packed

    @classmethod
    def unpack(cls, data: bytes) -> EntryPayload:
        """Raises :class:`IntegrityError` if ``data`` is not a payload (it was authenticated,
        so a tenant machine wrote garbage)."""
        try:
            raw = msgpack.unpackb(data, raw=False, max_map_len=0, max_ext_len=0)
            name, cap, size, mtime, metadata = raw
            pairs = tuple((str(k), str(v)) for k, v in metadata)
            if not all(isinstance(x, str) for pair in metadata for x in pair):
                raise TypeError("metadata keys and values are strings")
            return cls(name, cap, size, mtime, pairs)
        except (ValueError, TypeError, LocalProtocolError, msgpack.UnpackException) as exc:
            raise IntegrityError(f"a bucket entry's payload is malformed: {exc}") from None


class BucketKeys:
    """The keys of one bucket of a tenant (see the module docstring)."""

    __slots__ = ("_name_key", "_payload_key", "bucket_token", "name")

    def __init__(self, tenant_key: bytes, bucket: str) -> None:
        """Raises :class:`LocalProtocolError` if the tenant key is not 32 bytes or the bucket
        name is invalid."""
        if not isinstance(tenant_key, bytes) or len(tenant_key) != TENANT_KEY_BYTES:
            raise LocalProtocolError(f"a tenant key is {TENANT_KEY_BYTES} bytes")
        if bucket != _ROOT:
            validate_bucket_name(bucket)
        self.name = bucket
        label = bucket.encode()
        self.bucket_token = _mac(tenant_key, b"bucket-token", label)
        bucket_key = _mac(tenant_key, b"bucket-key", label)
        self._name_key = _mac(bucket_key, b"names")
        self._payload_key = _mac(bucket_key, b"payload")

    @classmethod
    def root(cls, tenant_key: bytes) -> BucketKeys:
        """The keys of the tenant's list of buckets."""
        return cls(tenant_key, _ROOT)

    def name_token(self, name: str) -> bytes:
        """The token replicas see for ``name``.  Raises :class:`LocalProtocolError` if the name
        is invalid."""
        return _mac(self._name_key, b"name", validate_object_name(name).encode())

    def seal(self, payload: EntryPayload, *, op: int, salt: bytes) -> bytes:
        """Encrypt ``payload`` for an entry of ``op``; ``salt`` is 16 fresh random bytes.

        Raises :class:`LocalProtocolError` if the salt is not 16 bytes or the sealed payload
        would exceed an entry's limit.
        """
        if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
            raise LocalProtocolError(f"a payload salt is {SALT_BYTES} fresh random bytes")
        token = self.name_token(payload.name)
        key = _mac(self._payload_key, b"entry", salt)
        sealed = salt + AESGCM(key).encrypt(bytes(12), payload.pack(), self._ad(token, op))
        if len(sealed) > MAX_ENTRY_PAYLOAD:
            raise LocalProtocolError(
                f"the name, cap and metadata take {len(sealed)} bytes sealed, over an entry's "
                f"{MAX_ENTRY_PAYLOAD}: use a shorter name or less metadata"
            )
        return sealed

    def open(self, sealed: bytes, *, name_token: bytes, op: int) -> EntryPayload:
        """Decrypt an entry's payload and check it names ``name_token``.

        Raises :class:`IntegrityError` if it was not sealed with this bucket's key for this
        name token and op, or is malformed.
        """
        if len(sealed) <= SALT_BYTES:
            raise IntegrityError("a sealed payload is too short")
        key = _mac(self._payload_key, b"entry", sealed[:SALT_BYTES])
        try:
            plain = AESGCM(key).decrypt(bytes(12), sealed[SALT_BYTES:], self._ad(name_token, op))
        except InvalidTag:
            raise IntegrityError(
                f"a payload of bucket {self.name!r} does not open with this tenant key: another "
                f"tenant key sealed it, or it was altered"
            ) from None
        payload = EntryPayload.unpack(plain)
        if self.name_token(payload.name) != name_token:
            raise IntegrityError("a sealed payload names another object than its token")
        return payload

    def _ad(self, name_token: bytes, op: int) -> bytes:
        return _LABEL + b"payload-ad\0" + self.bucket_token + name_token + bytes([op & 0xFF])
