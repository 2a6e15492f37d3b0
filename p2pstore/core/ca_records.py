"""Records the mesh CA signs itself: its revocation list and the mesh policy, in the DHT.

Strategy: what the whole mesh must agree on comes from the one party with authority over it,
so these records carry the CA's signature and certificate instead of a member's, live under a
key derived from the CA certificate, and are ordered by the number the CA gave the document
(the record's ``sequence``).  Holders keep the newest (a record store keeps one version per
publisher, and the CA is the only publisher under that key); readers take the highest valid
number among all they hear.  Any member may relay them; none can forge or roll one back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization

from p2pstore.core.mesh_policy import MeshPolicy
from p2pstore.core.records import (
    CA_KINDS,
    RULES,
    RecordKind,
    ca_record_key,
    sealed_record,
)
from p2pstore.errors import LocalProtocolError
from p2pstore.identity import MeshCA, public_key_bytes
from p2pstore.identity.ca_index import ed25519_key
from p2pstore.identity.revocation import parse_revocation_list
from p2pstore.wire.dht import SignedRecord


def sign_ca_record(
    ca: MeshCA, kind: RecordKind, value: bytes, *, sequence: int, expires_at: int
) -> SignedRecord:
    """A record of a ``CA_KINDS`` kind, signed with the CA key.

    Raises :class:`LocalProtocolError` for another kind.
    """
    if kind not in CA_KINDS:
        raise LocalProtocolError(f"the mesh CA does not publish {kind.name.lower()} records")
    key = ca_record_key(kind, ca.certificate)
    certificate = ca.certificate.public_bytes(serialization.Encoding.DER)
    publisher_key = public_key_bytes(ed25519_key(ca.certificate))
    return sealed_record(
        kind,
        key,
        value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=publisher_key,
        certificate=certificate,
        sign=ca.sign_statement,
    )


def revocation_record(ca: MeshCA, now: float) -> SignedRecord:
    """The CA's current revocation list as a DHT record, valid for the kind's longest TTL."""
    der = ca.revocation_list().public_bytes(serialization.Encoding.DER)
    number = parse_revocation_list(der, ca.certificate).number
    expires_at = math.floor(now) + RULES[RecordKind.REVOCATION].max_ttl
    return sign_ca_record(ca, RecordKind.REVOCATION, der, sequence=number, expires_at=expires_at)


def policy_record(ca: MeshCA, policy: MeshPolicy, now: float) -> SignedRecord:
    """``policy`` as a DHT record signed by the CA, valid for the kind's longest TTL."""
    expires_at = math.floor(now) + RULES[RecordKind.POLICY].max_ttl
    return sign_ca_record(
        ca, RecordKind.POLICY, policy.encode(), sequence=policy.sequence, expires_at=expires_at
    )


def newest(records: Iterable[SignedRecord], kind: RecordKind) -> SignedRecord | None:
    """The record of ``kind`` with the highest number among verified ``records``."""
    candidates = [record for record in records if record.kind == kind]
    return max(candidates, key=lambda record: record.sequence, default=None)
