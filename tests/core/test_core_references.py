"""References: who may sign one, when a bucket version's reference stops being live, and what
retention a holder may be shown."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from bucket_fixtures import ALICE, MALLORY, NODE, T0, TRUST, signed, token, verified

from p2pstore.core.bucket_entries import Op
from p2pstore.core.leases import Retention
from p2pstore.core.references import (
    ReferenceRejected,
    judge,
    retention_shown,
    sign_reference,
    verify_reference,
)
from p2pstore.errors import LocalProtocolError
from p2pstore.wire import RetentionProof

OBJECT = hashlib.sha256(b"the object").digest()
DAY = 86400


def bucket_reference(entry, signer=ALICE, object_id=OBJECT):
    return sign_reference(
        signer,
        object_id,
        now=T0,
        bucket_token=entry.bucket_token,
        name=entry.name,
        version=entry.version,
    )


def test_a_lease_reference_is_live_until_it_expires():
    reference = sign_reference(ALICE, OBJECT, now=T0, expires=T0 + 30 * DAY)
    verify_reference(reference, T0, trust=TRUST)
    assert judge(reference, [], T0 + 29 * DAY).live
    assert not judge(reference, [], T0 + 30 * DAY).live


def test_a_bucket_reference_lives_until_its_version_is_erased():
    put = signed(Op.PUT)
    reference = bucket_reference(put)
    verify_reference(reference, T0, trust=TRUST)
    assert judge(reference, [verified(put)], T0).live
    marker = signed(Op.MARKER, at=T0 + 1)
    assert judge(reference, [verified(put), verified(marker, T0 + 1)], T0 + 2).live
    erase = signed(Op.ERASE, at=T0 + 2, version=put.version)
    assert not judge(reference, [verified(put), verified(erase, T0 + 3)], T0 + 3).live


def test_an_erasure_waits_for_retention_and_legal_hold():
    put = signed(Op.PUT, retain_until=int(T0) + 30 * DAY)
    erase = signed(Op.ERASE, at=T0 + 1, version=put.version)
    reference = bucket_reference(put)
    entries = [verified(put), verified(erase, T0 + 1)]
    assert judge(reference, entries, T0 + 29 * DAY).live
    assert not judge(reference, entries, T0 + 31 * DAY).live
    hold = signed(Op.RETAIN, at=T0 + 2, version=put.version, legal_hold=True)
    assert judge(reference, [*entries, verified(hold, T0 + 2)], T0 + 400 * DAY).live


def test_a_version_nobody_shows_is_not_live():
    put = signed(Op.PUT)
    reference = bucket_reference(put)
    other = signed(Op.PUT, name="other.txt")
    assert not judge(reference, [verified(other)], T0).live


def test_references_are_signed_by_a_tenants_client():
    put = signed(Op.PUT)
    with pytest.raises(LocalProtocolError):
        sign_reference(ALICE, OBJECT, now=T0)  # neither a lease nor a version
    forged = dataclasses.replace(bucket_reference(put), object_id=bytes(32))
    with pytest.raises(ReferenceRejected):
        verify_reference(forged, T0, trust=TRUST)
    with pytest.raises(LocalProtocolError):
        bucket_reference(put, signer=NODE)  # a node acts for no tenant
    by_node = sign_reference(NODE, OBJECT, now=T0, expires=T0 + DAY)
    with pytest.raises(ReferenceRejected, match="not a client"):
        verify_reference(by_node, T0, trust=TRUST)


def test_retention_is_shown_only_with_the_tenants_words_for_the_same_version():
    put = signed(Op.PUT, retain_until=int(T0) + 30 * DAY)
    proof = RetentionProof(reference=bucket_reference(put), entry=put)
    assert retention_shown(proof, T0, trust=TRUST) == (OBJECT, Retention(int(T0) + 30 * DAY))
    other = signed(Op.PUT, name="other.txt", retain_until=int(T0) + 900 * DAY)
    with pytest.raises(ReferenceRejected):
        retention_shown(dataclasses.replace(proof, entry=other), T0, trust=TRUST)
    foreign = signed(Op.PUT, signer=MALLORY, name="x")
    with pytest.raises(ReferenceRejected):
        retention_shown(
            RetentionProof(reference=bucket_reference(put), entry=foreign), T0, trust=TRUST
        )
    assert token("a.txt") == put.name
