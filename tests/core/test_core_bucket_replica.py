"""A replica's bucket indexes: only verified entries, bounded per tenant, revocation drops."""

from __future__ import annotations

import dataclasses
import hashlib

from bucket_fixtures import ALICE, BUCKET, CA, MALLORY, T0, TRUST, signed

from p2pstore.core.bucket_entries import EntryReason, Op, bucket_id
from p2pstore.core.bucket_replica import BucketReplica
from p2pstore.identity import Role


def test_a_replica_holds_verified_entries_and_refuses_forged_ones():
    replica = BucketReplica(100, 1 << 20)
    good = signed(Op.PUT)
    forged = dataclasses.replace(signed(Op.PUT, name="b"), signature=bytes(64))
    outcome = replica.push(BUCKET, [good, forged, good], T0, trust=TRUST)
    assert outcome.added == 1
    assert [r.reason for r in outcome.refused] == [EntryReason.BAD_SIGNATURE]
    assert len(replica) == 1
    assert replica.index(BUCKET).entries()[0].entry == good


def test_an_entry_pushed_under_another_bucket_is_refused():
    replica = BucketReplica(100, 1 << 20)
    other = hashlib.sha256(b"elsewhere").digest()[:20]
    outcome = replica.push(other, [signed()], T0, trust=TRUST)
    assert [r.reason for r in outcome.refused] == [EntryReason.WRONG_BUCKET]


def test_one_tenant_fills_at_most_its_share_and_another_still_finds_room():
    replica = BucketReplica(40, 1 << 20)  # a tenant may hold 10 entries
    flood = [signed(Op.PUT, name=f"junk-{i}", signer=MALLORY) for i in range(30)]
    theirs = bucket_id("other-tenant", flood[0].bucket_token)
    outcome = replica.push(theirs, flood, T0, trust=TRUST)
    assert outcome.added == 10
    assert {r.reason for r in outcome.refused} == {EntryReason.OVER_QUOTA}
    assert not outcome.refused[0].sender_at_fault
    assert replica.usage_of("other-tenant").records == 10
    assert replica.push(BUCKET, [signed()], T0, trust=TRUST).added == 1


def test_a_full_replica_refuses_without_evicting():
    replica = BucketReplica(4, 1 << 20, max_tenant_entries=10)
    entries = [signed(Op.PUT, name=f"n{i}") for i in range(6)]
    outcome = replica.push(BUCKET, entries, T0, trust=TRUST)
    assert outcome.added == 4
    assert {r.reason for r in outcome.refused} == {EntryReason.FULL}


def test_displaced_entries_free_their_charge():
    replica = BucketReplica(100, 1 << 20)
    put = signed(Op.PUT, at=T0 - 10)
    short = signed(Op.RETAIN, version=put.version, retain_until=T0 + 10, at=T0 - 5)
    long = signed(Op.RETAIN, version=put.version, retain_until=T0 + 99, at=T0 - 4)
    replica.push(BUCKET, [put, short], T0, trust=TRUST)
    assert len(replica) == 2
    replica.push(BUCKET, [long], T0, trust=TRUST)
    assert len(replica) == 2  # the longer retention displaced the shorter one
    assert replica.usage_of("univ-strasbourg").records == 2


def test_revoking_a_signer_drops_what_it_signed():
    thief = CA.issue_in_memory(
        datacenter="laptop",
        region="FR",
        role=Role.CLIENT,
        now=ALICE.identity.not_before,
        tenant="univ-strasbourg",
    )
    replica = BucketReplica(100, 1 << 20)
    honest = signed(Op.PUT, at=T0 - 10)
    erase = signed(Op.ERASE, version=honest.version, signer=thief)
    replica.push(BUCKET, [honest, erase], T0, trust=TRUST)
    assert len(replica) == 2
    CA.revoke_in_memory(thief.identity.serial, now=ALICE.identity.not_before)
    assert replica.drop_revoked(CA.trust_anchor()) == 1
    assert [e.entry for e in replica.index(BUCKET).entries()] == [honest]
    assert replica.usage_of("univ-strasbourg").records == 1
