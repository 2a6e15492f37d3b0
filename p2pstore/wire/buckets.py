"""Bucket index entries and the messages replicas exchange them with.

Strategy: an entry is self-contained like a DHT record -- it carries its signer's key, mesh
certificate (which names the tenant) and signature -- so any replica passes it on and any reader
checks it without trusting the replica.  Sizes are bounded here; what an entry *means* (ops,
signature, the merge) lives in :mod:`p2pstore.core.bucket_index`.  Names and metadata travel
only inside ``payload``, sealed by the tenant (:mod:`p2pstore.codec.bucket_keys`); ``name`` is a
keyed token, so replicas group versions by name without learning it.

Entries are also stored on their own (a client's local index): :func:`encode_entry` and
:func:`decode_entry` give one entry's canonical bytes, whose sha256 is its digest.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Final

import msgpack

from p2pstore.errors import LocalProtocolError, RemoteProtocolError

from .dht import MAX_PUBLISHER_CERTIFICATE, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH
from .messages import Message, NodeId, message
from .schema import Bound, Record, decode_record, record, schema_of

TOKEN_LENGTH: Final = 32
"""Bucket and name tokens: HMAC-SHA256 outputs."""
VERSION_LENGTH: Final = 16
MAX_TENANT_LENGTH: Final = 63
MAX_ENTRY_PAYLOAD: Final = 4 * 1024
"""A sealed name, read cap, size, mtime and user metadata fit in 4 KiB."""
MAX_ENTRY_BYTES: Final = MAX_ENTRY_PAYLOAD + MAX_PUBLISHER_CERTIFICATE + 512
"""The most one encoded entry may take (payload, certificate and fixed fields)."""
MAX_ENTRIES_PER_MESSAGE: Final = 256
"""At most about 2.2 MiB of entries per message, well inside a frame."""
MAX_TIMESTAMP: Final = 2**62
"""Milliseconds (and retention seconds) are ints below this, so msgpack keeps them in 64 bits."""
MAX_CURSOR: Final = 64

Token = Annotated[bytes, Bound(min_len=TOKEN_LENGTH, max_len=TOKEN_LENGTH)]
Reason = Annotated[str, Bound(max_len=512)]
VersionId = Annotated[bytes, Bound(min_len=VERSION_LENGTH, max_len=VERSION_LENGTH)]


@record
@dataclasses.dataclass(frozen=True, slots=True)
class BucketEntry(Record):
    """One signed change to a bucket's index: a version written (``op`` put or delete marker),
    a version erased, or its retention extended.  The bucket is ``(tenant, bucket_token)``."""

    tenant: str = dataclasses.field(metadata={"min_len": 1, "max_len": MAX_TENANT_LENGTH})
    bucket_token: Token
    name: Token
    version: VersionId
    op: int = dataclasses.field(metadata={"min": 0, "max": 255})
    timestamp: int = dataclasses.field(metadata={"min": 0, "max": MAX_TIMESTAMP})
    """Milliseconds since the epoch, by the signer's clock."""
    retain_until: int = dataclasses.field(metadata={"min": 0, "max": MAX_TIMESTAMP})
    """Unix seconds before which the version may not be erased (0: no retention)."""
    legal_hold: bool
    payload: bytes = dataclasses.field(metadata={"max_len": MAX_ENTRY_PAYLOAD})
    signer_key: bytes = dataclasses.field(
        metadata={"min_len": PUBLIC_KEY_LENGTH, "max_len": PUBLIC_KEY_LENGTH}
    )
    certificate: bytes = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_PUBLISHER_CERTIFICATE}
    )
    signature: bytes = dataclasses.field(
        metadata={"min_len": SIGNATURE_LENGTH, "max_len": SIGNATURE_LENGTH}
    )


def encode_entry(entry: BucketEntry) -> bytes:
    """The canonical bytes of ``entry`` (a msgpack array of its fields)."""
    try:
        packed: bytes = msgpack.packb(schema_of(BucketEntry).values(entry), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode a bucket entry: {exc}") from exc
    return packed


def decode_entry(data: bytes) -> BucketEntry:
    """Decode one entry's bytes.

    Raises :class:`RemoteProtocolError` (and nothing else) if ``data`` is longer than
    ``MAX_ENTRY_BYTES``, not msgpack, has trailing bytes, or a field is of the wrong type or size.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError(f"a bucket entry is bytes, not {type(data).__name__}")
    if len(data) > MAX_ENTRY_BYTES:
        raise RemoteProtocolError(
            f"a bucket entry of {len(data)} bytes is over the {MAX_ENTRY_BYTES}-byte limit"
        )
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=len(data),
            max_bin_len=len(data),
            max_array_len=len(schema_of(BucketEntry).names),
            max_map_len=0,
            max_ext_len=0,
        )
    except msgpack.exceptions.ExtraData:
        raise RemoteProtocolError("trailing bytes after a bucket entry") from None
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"invalid UTF-8 in a bucket entry: {exc.reason}") from None
    except (ValueError, TypeError, OverflowError, msgpack.exceptions.UnpackException) as exc:
        raise RemoteProtocolError(f"a bucket entry is not valid msgpack: {exc}") from None
    if type(raw) is not tuple:
        raise RemoteProtocolError("a bucket entry is a msgpack array of its fields")
    return decode_record(BucketEntry, raw)


@message(50)
@dataclasses.dataclass(frozen=True, slots=True)
class BucketPush(Message):
    """Offer entries of one bucket index to a replica (a client's write, or anti-entropy)."""

    bucket: NodeId
    entries: tuple[BucketEntry, ...] = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_ENTRIES_PER_MESSAGE}
    )


@message(51)
@dataclasses.dataclass(frozen=True, slots=True)
class BucketPushReply(Message):
    """How many entries were new to the replica, and why the others were refused, if any."""

    added: int = dataclasses.field(metadata={"min": 0, "max": MAX_ENTRIES_PER_MESSAGE})
    refused: tuple[Reason, ...] = dataclasses.field(metadata={"max_len": MAX_ENTRIES_PER_MESSAGE})


@message(52)
@dataclasses.dataclass(frozen=True, slots=True)
class BucketPull(Message):
    """Ask a replica for a bucket's entries in digest order, after ``cursor`` (empty: from the
    start)."""

    bucket: NodeId
    cursor: bytes = dataclasses.field(metadata={"max_len": MAX_CURSOR})


@message(53)
@dataclasses.dataclass(frozen=True, slots=True)
class BucketPullReply(Message):
    """One page of entries; ``cursor`` is where the next page starts (empty: no more), and
    ``summary`` the digest of everything the replica holds for the bucket, so two replicas
    that agree stop after one round trip."""

    entries: tuple[BucketEntry, ...] = dataclasses.field(
        metadata={"max_len": MAX_ENTRIES_PER_MESSAGE}
    )
    cursor: bytes = dataclasses.field(metadata={"max_len": MAX_CURSOR})
    summary: bytes = dataclasses.field(metadata={"max_len": MAX_CURSOR})


MAX_VERSION_ENTRIES: Final = 8
"""Entries a replica keeps about one version: its write, retention, hold and erasure winners."""


@message(54)
@dataclasses.dataclass(frozen=True, slots=True)
class BucketVersionQuery(Message):
    """Ask a replica for the entries it holds about one version of one name (a steward checks
    that a tenant's reference to an object is still live, without reading the whole bucket)."""

    bucket: NodeId
    name: Token
    version: VersionId


@message(55)
@dataclasses.dataclass(frozen=True, slots=True)
class BucketVersionReply(Message):
    """The entries a replica holds about the version asked for (none: it knows nothing)."""

    entries: tuple[BucketEntry, ...] = dataclasses.field(metadata={"max_len": MAX_VERSION_ENTRIES})
