"""The DHT's messages: FIND_NODE, FIND_VALUE and STORE, and the signed record they carry.

Strategy: a record is self-contained, so any holder can pass it on and any receiver can check
it without trusting the holder: it carries its publisher's public key, the publisher's mesh
certificate (so a holder checks that a member of the mesh, not a throw-away key, published it)
and signature (the publisher's node id is the hash of that key), and an absolute expiry in Unix
seconds, since records outlive the sessions and clocks of the peers that relay them.  Sizes are
bounded here; what a record *means* (its kinds, signature rules, replacement order) lives in
``p2pstore.core.records``.  Contacts in replies are hints — another peer's word about a third
one — used only to dial; a contact enters a routing table only through its own certificate.
"""

from __future__ import annotations

import dataclasses

from .messages import Message, NodeId, message
from .schema import Record, record

MAX_RECORD_VALUE = 8 * 1024 * 1024
"""Largest record value: a manifest (the codec caps manifests at 8 MiB, i.e. objects of about
115 GiB with the 4-of-8 rule and 4 MiB chunks).  Other record kinds set smaller limits."""

MAX_CONTACTS = 64
"""Contacts per reply (k = 20 by default; room for callers asking for more)."""

MAX_RECORDS_PER_REPLY = 16

PUBLIC_KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
MAX_PUBLISHER_CERTIFICATE = 4 * 1024
"""Largest publisher certificate a record carries (DER; a p2pstore certificate is ~600 bytes)."""


@record
@dataclasses.dataclass(frozen=True, slots=True)
class ContactInfo(Record):
    """A peer as another peer describes it: where to dial it and whom to expect there."""

    node_id: NodeId
    address: str = dataclasses.field(metadata={"min_len": 1, "max_len": 255})
    datacenter: str = dataclasses.field(metadata={"max_len": 64})
    region: str = dataclasses.field(metadata={"max_len": 16})


@record
@dataclasses.dataclass(frozen=True, slots=True)
class SignedRecord(Record):
    """A value stored under ``key`` in the DHT, signed by its publisher, whose DER certificate
    (issued by the mesh CA for ``publisher_key``) travels with it."""

    kind: int = dataclasses.field(metadata={"min": 0, "max": 255})
    key: NodeId
    value: bytes = dataclasses.field(metadata={"max_len": MAX_RECORD_VALUE})
    sequence: int = dataclasses.field(metadata={"min": 0})
    expires_at: int = dataclasses.field(metadata={"min": 0})
    publisher_key: bytes = dataclasses.field(
        metadata={"min_len": PUBLIC_KEY_LENGTH, "max_len": PUBLIC_KEY_LENGTH}
    )
    certificate: bytes = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_PUBLISHER_CERTIFICATE}
    )
    signature: bytes = dataclasses.field(
        metadata={"min_len": SIGNATURE_LENGTH, "max_len": SIGNATURE_LENGTH}
    )


@message(20)
@dataclasses.dataclass(frozen=True, slots=True)
class FindNode(Message):
    """Ask for the contacts a peer knows closest to ``target``."""

    target: NodeId


@message(21)
@dataclasses.dataclass(frozen=True, slots=True)
class FindNodeReply(Message):
    contacts: tuple[ContactInfo, ...] = dataclasses.field(metadata={"max_len": MAX_CONTACTS})


@message(22)
@dataclasses.dataclass(frozen=True, slots=True)
class FindValue(Message):
    """Ask for the records of ``kind`` under ``key``, or else the closest contacts."""

    kind: int = dataclasses.field(metadata={"min": 0, "max": 255})
    key: NodeId


@message(23)
@dataclasses.dataclass(frozen=True, slots=True)
class FindValueReply(Message):
    records: tuple[SignedRecord, ...] = dataclasses.field(
        metadata={"max_len": MAX_RECORDS_PER_REPLY}
    )
    contacts: tuple[ContactInfo, ...] = dataclasses.field(metadata={"max_len": MAX_CONTACTS})


@message(24)
@dataclasses.dataclass(frozen=True, slots=True)
class Store(Message):
    """Ask a peer to hold a record until it expires."""

    record: SignedRecord


@message(25)
@dataclasses.dataclass(frozen=True, slots=True)
class StoreReply(Message):
    stored: bool
    reason: str = dataclasses.field(metadata={"max_len": 512})
