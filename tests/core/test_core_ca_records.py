"""Records the mesh CA signs itself (its revocation list): accepted only with the CA's own
signature, certificate and key, ordered by the CRL number; a member can neither forge one nor
roll a holder or a node back to an older one."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.ca_records import newest, revocation_record, sign_ca_record
from p2pstore.core.record_store import PutResult, RecordStore
from p2pstore.core.records import (
    RULES,
    RecordKind,
    RejectReason,
    ca_record_key,
    sign_record,
    signed_bytes,
    verify_record,
)
from p2pstore.errors import IdentityError, LocalProtocolError, RecordRejected
from p2pstore.identity import MeshCA
from p2pstore.identity.revocation import MAX_CRL_BYTES, newer_trust, parse_revocation_list
from p2pstore.wire import SignedRecord

T0 = 1_772_366_400
ISSUED = datetime.fromtimestamp(T0, UTC) - timedelta(days=1)
CA = MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED)
OTHER = MeshCA.create_in_memory(mesh_name="elsewhere", now=ISSUED)
MEMBER = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=ISSUED)
VICTIM = CA.issue_in_memory(datacenter="dc-2", region="FR-GES", now=ISSUED)


def fresh_ca() -> MeshCA:
    return MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED)


def rejected(record: SignedRecord, ca: MeshCA = CA) -> str:
    with pytest.raises(RecordRejected) as caught:
        verify_record(record, T0, trust=ca.trust_anchor())
    return caught.value.reason


def ca_signed(ca: MeshCA, **fields: object) -> SignedRecord:
    """A record with ``fields`` changed, signed again by ``ca`` (as a CA-key thief could)."""
    base = revocation_record(ca, T0)
    record = dataclasses.replace(base, **fields)  # type: ignore[arg-type]
    data = signed_bytes(
        record.kind,
        record.key,
        record.value,
        sequence=record.sequence,
        expires_at=record.expires_at,
        publisher_key=record.publisher_key,
        certificate=record.certificate,
    )
    return dataclasses.replace(record, signature=ca.sign_statement(data))


def test_the_cas_revocation_list_verifies_and_is_charged_to_the_ca():
    record = revocation_record(CA, T0)
    info = verify_record(record, T0, trust=CA.trust_anchor())
    assert info.kind is RecordKind.REVOCATION
    assert record.key == ca_record_key(RecordKind.REVOCATION, CA.certificate)
    assert info.certificate.datacenter == "mesh-ca"
    assert record.sequence == CA.trust_anchor().crl_number == 1


def test_a_member_cannot_sign_one():
    with pytest.raises(LocalProtocolError, match="only the mesh CA"):
        sign_record(MEMBER, RecordKind.REVOCATION, b"k" * 20, b"x", sequence=9, expires_at=T0 + 9)
    honest = revocation_record(CA, T0)
    forged = dataclasses.replace(
        honest,
        sequence=honest.sequence + 100,
        publisher_key=MEMBER.public_key_bytes(),
        certificate=MEMBER.certificate_der(),
    )
    data = signed_bytes(
        forged.kind,
        forged.key,
        forged.value,
        sequence=forged.sequence,
        expires_at=forged.expires_at,
        publisher_key=forged.publisher_key,
        certificate=forged.certificate,
    )
    forged = dataclasses.replace(forged, signature=MEMBER.sign(data))
    assert rejected(forged) == RejectReason.UNCERTIFIED


def test_tampered_foreign_misplaced_or_misnumbered_records_are_refused():
    honest = revocation_record(CA, T0)
    assert rejected(dataclasses.replace(honest, sequence=honest.sequence + 1)) == (
        RejectReason.BAD_SIGNATURE
    )
    assert rejected(revocation_record(OTHER, T0)) == RejectReason.UNCERTIFIED
    assert rejected(ca_signed(CA, key=b"\x01" * 20)) == RejectReason.BAD_KEY
    assert rejected(ca_signed(CA, sequence=honest.sequence + 5)) == RejectReason.BAD_VALUE
    assert rejected(ca_signed(CA, value=b"not a crl")) == RejectReason.BAD_VALUE
    other_crl = OTHER.revocation_list().public_bytes(serialization.Encoding.DER)
    assert rejected(ca_signed(CA, value=other_crl)) == RejectReason.BAD_VALUE
    big = ca_signed(CA, value=b"\x00" * (MAX_CRL_BYTES + 1))
    assert rejected(big) == RejectReason.TOO_LARGE
    late = ca_signed(CA, expires_at=T0 + RULES[RecordKind.REVOCATION].max_ttl + 3600)
    assert rejected(late) == RejectReason.TOO_FAR_IN_FUTURE


def test_a_holder_keeps_the_newest_list_and_refuses_an_older_one():
    ca = fresh_ca()
    victim = ca.issue_in_memory(datacenter="dc-2", region="FR-GES", now=ISSUED)
    old = revocation_record(ca, T0)
    ca.revoke_in_memory(victim.identity.serial, now=ISSUED + timedelta(hours=1))
    new = revocation_record(ca, T0)
    store = RecordStore(100, 1 << 20)
    trust = ca.trust_anchor()
    assert store.put(old, T0, trust=trust) is PutResult.STORED
    assert store.put(new, T0, trust=trust) is PutResult.REPLACED
    with pytest.raises(RecordRejected) as caught:
        store.put(old, T0, trust=trust)
    assert caught.value.reason == RejectReason.STALE
    assert store.get(int(RecordKind.REVOCATION), new.key, T0) == [new]
    assert newest([old, new, old], RecordKind.REVOCATION) == new


def test_a_node_never_goes_back_to_an_older_list():
    ca = fresh_ca()
    victim = ca.issue_in_memory(datacenter="dc-2", region="FR-GES", now=ISSUED)
    first = parse_revocation_list(revocation_record(ca, T0).value, ca.certificate)
    ca.revoke_in_memory(victim.identity.serial, now=ISSUED + timedelta(hours=1))
    second = parse_revocation_list(revocation_record(ca, T0).value, ca.certificate)
    start = ca.trust_anchor()
    assert start.crl_number == second.number == first.number + 1
    assert newer_trust(start, first) is None
    assert newer_trust(start, second) is None
    ca.revoke_in_memory(victim.identity.serial, now=ISSUED + timedelta(hours=2))
    third = parse_revocation_list(revocation_record(ca, T0).value, ca.certificate)
    adopted = newer_trust(start, third)
    assert adopted is not None and victim.identity.serial in adopted.revoked_serials
    assert adopted.crl_number == third.number


@given(st.binary(max_size=2000))
def test_garbage_is_never_taken_for_a_revocation_list(junk):
    with pytest.raises(IdentityError):
        parse_revocation_list(junk, CA.certificate)


def test_the_ca_signs_only_p2pstore_statements():
    with pytest.raises(IdentityError):
        CA.sign_statement(b"\x30\x82 a certificate body")
    with pytest.raises(LocalProtocolError):
        sign_ca_record(CA, RecordKind.MANIFEST, b"x", sequence=1, expires_at=T0 + 10)
