"""The messages that keep fragments alive: a steward's signed lease renewal to one holder.

A holder keeps a fragment while a lease on it is renewed (``core.leases``); an object's
stewards renew the leases of every holder of its fragments, one ``RenewLeases`` per holder
per round carrying all its objects' fragments (at most ``MAX_IDS_PER_QUERY`` fragment ids in
all, like ``StateFragments``).  The renewal is signed by the steward's node key (``steward_key``,
which must hash to the session's node id): the lease is the steward's claim and nobody else's.
Retention travels beside it as the tenant's own signed words (``RetentionProof``: the tenant's
reference binding the object to a bucket version, and the bucket entry carrying the date or
hold), so a holder enforces a retention no steward can forge or shorten.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Final

import msgpack

from p2pstore.errors import LocalProtocolError, RemoteProtocolError

from .buckets import BucketEntry
from .dht import MAX_PUBLISHER_CERTIFICATE, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH
from .fragments import MAX_IDS_PER_QUERY, FragmentId
from .messages import Message, NodeId, message
from .schema import Bound, Record, decode_record, record, schema_of

OBJECT_ID_LENGTH: Final = 32
MAX_LEASE_OBJECTS: Final = 256
"""Objects one renewal speaks about (their fragment ids are at most ``MAX_IDS_PER_QUERY``)."""
MAX_RETENTION_PROOFS: Final = 64
"""Retention proofs one renewal carries (a steward sends each once per holder, then on change)."""
MAX_REFERENCE_BYTES: Final = MAX_PUBLISHER_CERTIFICATE + 512
MAX_TIME_MS: Final = 1 << 62
MAX_REFERENCES_PER_RECORD: Final = 64
"""References one REFERENCES record carries (one live one is enough to keep an object)."""
MAX_REFERENCES_VALUE: Final = MAX_REFERENCES_PER_RECORD * (MAX_REFERENCE_BYTES + 256)

Reason = Annotated[str, Bound(max_len=512)]
TimeMs = Annotated[int, Bound(min=0, max=MAX_TIME_MS)]


@record
@dataclasses.dataclass(frozen=True, slots=True)
class LeaseItem(Record):
    """The fragments of one object a renewal leases on its holder."""

    object_id: bytes = dataclasses.field(
        metadata={"min_len": OBJECT_ID_LENGTH, "max_len": OBJECT_ID_LENGTH}
    )
    fragment_ids: tuple[FragmentId, ...] = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_IDS_PER_QUERY}
    )


@record
@dataclasses.dataclass(frozen=True, slots=True)
class Reference(Record):
    """A tenant's signed word that an object is referenced (``core.references``): either by
    a version of a bucket (``bucket_token``, ``name``, ``version`` set, ``expires_ms`` 0), or
    by a lease the signer keeps renewing itself (bucket fields empty, ``expires_ms`` set)."""

    object_id: bytes = dataclasses.field(
        metadata={"min_len": OBJECT_ID_LENGTH, "max_len": OBJECT_ID_LENGTH}
    )
    tenant: str = dataclasses.field(metadata={"max_len": 63})
    bucket_token: bytes = dataclasses.field(metadata={"max_len": 32})
    name: bytes = dataclasses.field(metadata={"max_len": 32})
    version: bytes = dataclasses.field(metadata={"max_len": 16})
    issued_ms: TimeMs
    expires_ms: TimeMs
    signer_key: bytes = dataclasses.field(
        metadata={"min_len": PUBLIC_KEY_LENGTH, "max_len": PUBLIC_KEY_LENGTH}
    )
    certificate: bytes = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_PUBLISHER_CERTIFICATE}
    )
    signature: bytes = dataclasses.field(
        metadata={"min_len": SIGNATURE_LENGTH, "max_len": SIGNATURE_LENGTH}
    )


@record
@dataclasses.dataclass(frozen=True, slots=True)
class ReferenceList(Record):
    """The value of a REFERENCES record: references to the object under the record's key."""

    references: tuple[Reference, ...] = dataclasses.field(
        metadata={"max_len": MAX_REFERENCES_PER_RECORD}
    )


def encode_references(references: tuple[Reference, ...]) -> bytes:
    """A REFERENCES record's value.  Raises :class:`LocalProtocolError` beyond the bounds."""
    try:
        listed = ReferenceList(references=references)
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode references: {exc}") from exc
    fields = [schema_of(Reference).values(r) for r in listed.references]
    packed: bytes = msgpack.packb([fields], use_bin_type=True)
    return packed


def decode_references(data: bytes) -> tuple[Reference, ...]:
    """Decode a REFERENCES record's value.

    Raises :class:`RemoteProtocolError` (and nothing else) if it is too long, not msgpack,
    has trailing bytes or a field of the wrong type or size."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError(f"a reference list is bytes, not {type(data).__name__}")
    if len(data) > MAX_REFERENCES_VALUE:
        raise RemoteProtocolError(f"a reference list of {len(data)} bytes is over the limit")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=len(data),
            max_bin_len=len(data),
            max_array_len=max(MAX_REFERENCES_PER_RECORD, len(schema_of(Reference).names)),
            max_map_len=0,
            max_ext_len=0,
        )
    except msgpack.exceptions.ExtraData:
        raise RemoteProtocolError("trailing bytes after a reference list") from None
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"invalid UTF-8 in a reference list: {exc.reason}") from None
    except (ValueError, TypeError, OverflowError, msgpack.exceptions.UnpackException) as exc:
        raise RemoteProtocolError(f"a reference list is not valid msgpack: {exc}") from None
    if type(raw) is not tuple:
        raise RemoteProtocolError("a reference list is a msgpack array")
    listed: ReferenceList = decode_record(ReferenceList, raw)
    return listed.references


@record
@dataclasses.dataclass(frozen=True, slots=True)
class RetentionProof(Record):
    """Why an object may not be freed before a date: the tenant's bucket reference to the
    object and the bucket entry (PUT or RETAIN of that version) setting the date or hold."""

    reference: Reference
    entry: BucketEntry


@message(47)
@dataclasses.dataclass(frozen=True, slots=True)
class RenewLeases(Message):
    """A steward's lease on fragments of ``holder``, valid from ``issued_ms`` to
    ``expires_ms`` (Unix ms), signed by ``steward_key`` over every other field."""

    holder: NodeId
    issued_ms: TimeMs
    expires_ms: TimeMs
    items: tuple[LeaseItem, ...] = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_LEASE_OBJECTS}
    )
    retention: tuple[RetentionProof, ...] = dataclasses.field(
        metadata={"max_len": MAX_RETENTION_PROOFS}
    )
    steward_key: bytes = dataclasses.field(
        metadata={"min_len": PUBLIC_KEY_LENGTH, "max_len": PUBLIC_KEY_LENGTH}
    )
    signature: bytes = dataclasses.field(
        metadata={"min_len": SIGNATURE_LENGTH, "max_len": SIGNATURE_LENGTH}
    )


@message(48)
@dataclasses.dataclass(frozen=True, slots=True)
class RenewLeasesReply(Message):
    """How many fragment leases the holder applied, and why it refused the others."""

    applied: int = dataclasses.field(metadata={"min": 0, "max": MAX_IDS_PER_QUERY})
    refused: tuple[Reason, ...] = dataclasses.field(metadata={"max_len": MAX_LEASE_OBJECTS})
