"""Signed bucket entries: who may sign for a tenant, and every way a forged one is refused."""

from __future__ import annotations

import dataclasses

import pytest
from bucket_fixtures import (
    ALICE,
    ALICE_LAPTOP,
    BUCKET,
    BUCKET_TOKEN,
    CA,
    MALLORY,
    NO_TENANT,
    NODE,
    T0,
    TRUST,
    signed,
    token,
    verified,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pstore.core.bucket_entries import (
    MAX_SKEW_MS,
    EntryReason,
    Op,
    bucket_id,
    sign_entry,
    signed_bytes,
    verify_entry,
    version_id,
)
from p2pstore.errors import EntryRejected, LocalProtocolError
from p2pstore.identity import Role, public_key_bytes


def rejected(entry, now: float = T0, trust=TRUST) -> str:
    with pytest.raises(EntryRejected) as caught:
        verify_entry(entry, now, trust=trust)
    return caught.value.reason


def test_a_tenant_machine_signs_an_entry_every_replica_accepts():
    entry = signed(Op.PUT)
    checked = verified(entry)
    assert checked.bucket == BUCKET
    assert checked.signer == ALICE.node_id
    assert checked.certificate is not None and checked.certificate.tenant == "univ-strasbourg"
    assert entry.version == version_id(entry)


def test_every_client_identity_of_the_tenant_may_sign():
    assert verified(signed(signer=ALICE_LAPTOP)).bucket == BUCKET


def test_the_bucket_id_names_its_tenant():
    assert bucket_id("univ-strasbourg", BUCKET_TOKEN) != bucket_id("other-tenant", BUCKET_TOKEN)


@pytest.mark.parametrize("signer", [NO_TENANT, NODE], ids=["client-without-tenant", "node"])
def test_an_identity_acting_for_no_tenant_cannot_sign(signer):
    with pytest.raises(LocalProtocolError, match="no tenant"):
        signed(signer=signer)


def test_another_tenant_cannot_write_into_a_bucket_by_claiming_its_tenant():
    theirs = signed(signer=MALLORY)
    forged = dataclasses.replace(theirs, tenant="univ-strasbourg")
    forged = dataclasses.replace(forged, version=version_id(forged))
    forged = dataclasses.replace(forged, signature=MALLORY.sign(signed_bytes(forged)))
    assert rejected(forged) == EntryReason.WRONG_TENANT


def test_a_throw_away_key_with_a_tenant_certificate_is_uncertified():
    key = Ed25519PrivateKey.generate()
    entry = signed()
    forged = dataclasses.replace(entry, signer_key=public_key_bytes(key.public_key()))
    forged = dataclasses.replace(forged, signature=key.sign(signed_bytes(forged)))
    assert rejected(forged) == EntryReason.UNCERTIFIED


def test_a_changed_field_breaks_the_signature():
    entry = signed(Op.RETAIN, version=bytes(16), retain_until=T0 + 100)
    assert rejected(dataclasses.replace(entry, retain_until=T0 + 1)) == EntryReason.BAD_SIGNATURE
    assert rejected(dataclasses.replace(entry, signature=bytes(64))) == EntryReason.BAD_SIGNATURE


def test_a_written_version_cannot_be_given_another_content():
    """Even a tenant key cannot make an old version id say something else."""
    old = signed(Op.PUT, payload=b"original")
    forged = dataclasses.replace(signed(Op.PUT, payload=b"ransom note"), version=old.version)
    forged = dataclasses.replace(forged, signature=ALICE.sign(signed_bytes(forged)))
    assert rejected(forged) == EntryReason.BAD_VERSION


CA_TIME = ALICE.identity.not_before


def test_revoked_signers_are_refused():
    thief = CA.issue_in_memory(
        datacenter="laptop", region="FR", role=Role.CLIENT, now=CA_TIME, tenant="univ-strasbourg"
    )
    entry = signed(signer=thief)
    assert verified(entry).signer == thief.node_id
    CA.revoke_in_memory(thief.identity.serial, now=CA_TIME)
    assert rejected(entry, trust=CA.trust_anchor()) == EntryReason.REVOKED


def test_an_entry_outlives_its_certificate_but_cannot_be_dated_outside_it():
    entry = signed()
    much_later = ALICE.identity.not_after.timestamp() + 86400 * 365
    assert verified(entry, now=much_later).bucket == BUCKET
    after_expiry = signed(at=ALICE.identity.not_after.timestamp() + 60)
    assert rejected(after_expiry, now=much_later) == EntryReason.UNCERTIFIED


def test_entries_from_the_future_are_refused_beyond_the_clock_skew():
    assert verified(signed(at=T0 + MAX_SKEW_MS / 1000 - 1)).bucket == BUCKET
    assert rejected(signed(at=T0 + MAX_SKEW_MS / 1000 + 1)) == EntryReason.FUTURE


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"op": 9}, "unknown op"),
        ({"op": int(Op.ERASE), "payload": b"x"}, "no payload"),
        ({"op": int(Op.ERASE), "payload": b"", "retain_until": 5}, "no retention"),
        ({"op": int(Op.RETAIN), "payload": b""}, "retention date or a legal hold"),
        ({"op": int(Op.RELEASE), "payload": b"x"}, "no payload"),
        ({"op": int(Op.RELEASE), "payload": b"", "retain_until": 5}, "no retention"),
        ({"op": int(Op.RELEASE), "payload": b"", "legal_hold": True}, "no retention"),
        ({"op": int(Op.PUT), "payload": b""}, "sealed name"),
        ({"tenant": "Not A Tenant"}, "tenant"),
    ],
)
def test_malformed_entries_are_refused_before_any_crypto(changes, problem):
    entry = dataclasses.replace(signed(Op.PUT), **changes)
    with pytest.raises(EntryRejected, match=problem) as caught:
        verify_entry(entry, T0, trust=TRUST)
    assert caught.value.reason == EntryReason.MALFORMED


def test_erase_and_retain_must_name_a_version():
    with pytest.raises(LocalProtocolError, match="names the version"):
        sign_entry(ALICE, bucket_token=BUCKET_TOKEN, name=token("a"), op=Op.ERASE, timestamp=1)


def test_refusals_say_whose_fault_they_are():
    assert EntryRejected("x", reason=EntryReason.BAD_SIGNATURE).sender_at_fault
    assert not EntryRejected("x", reason=EntryReason.FULL).sender_at_fault
