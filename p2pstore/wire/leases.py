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

from .buckets import BucketEntry
from .dht import MAX_PUBLISHER_CERTIFICATE, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH
from .fragments import MAX_IDS_PER_QUERY, FragmentId
from .messages import Message, NodeId, message
from .schema import Bound, Record, record

OBJECT_ID_LENGTH: Final = 32
MAX_LEASE_OBJECTS: Final = 256
"""Objects one renewal speaks about (their fragment ids are at most ``MAX_IDS_PER_QUERY``)."""
MAX_RETENTION_PROOFS: Final = 64
"""Retention proofs one renewal carries (a steward sends each once per holder, then on change)."""
MAX_REFERENCE_BYTES: Final = MAX_PUBLISHER_CERTIFICATE + 512
MAX_TIME_MS: Final = 1 << 62

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
