"""What a node holds for others (RecordStore) and what it republishes (PublishedRecords)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from p2pstore.core.announcements import Announcement
from p2pstore.core.published import PublishedRecords, next_sequence, republish_period
from p2pstore.core.record_store import PutResult, RecordStore, held_size
from p2pstore.core.records import (
    MEMBER_KINDS,
    RULES,
    RecordKind,
    RecordRejected,
    RejectReason,
    renew,
    sign_record,
    signed_bytes,
    verify_record,
)
from p2pstore.errors import LocalProtocolError
from p2pstore.identity import MeshCA, Role, node_id_from_public_key
from p2pstore.wire import SignedRecord

T0 = 1_772_366_400
ISSUED = datetime.fromtimestamp(T0, UTC) - timedelta(days=30)
CA = MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED)
TRUST = CA.trust_anchor()
KEYS = [
    CA.issue_in_memory(
        datacenter=f"dc-{i}",
        region="FR-GES",
        role=Role.CLIENT if i % 2 else Role.NODE,
        now=ISSUED,
        key=Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32),
    )
    for i in range(4)
]
"""Publishers: nodes and clients of the mesh."""
IDS = [k.node_id for k in KEYS]
SLOTS = [hashlib.sha256(bytes([i])).digest()[:20] for i in range(3)]
PLACEMENT = RecordKind.PLACEMENT


def placement(signer=0, slot=0, sequence=1, expires_at=T0 + 600, value=b"v"):
    return sign_record(
        KEYS[signer], PLACEMENT, SLOTS[slot], value, sequence=sequence, expires_at=expires_at
    )


def publisher_id(record):
    return hashlib.sha256(record.publisher_key).digest()[:20]


def refused(store, record, now=T0, trust=TRUST):
    with pytest.raises(RecordRejected) as caught:
        store.put(record, now, trust=trust)
    return caught.value


# -- replacement rules ---------------------------------------------------------------------


def test_a_publisher_s_versions_replace_each_other_in_order():
    store = RecordStore(10, 10_000)
    first = placement(sequence=5, value=b"first")
    assert store.put(first, T0, trust=TRUST) is PutResult.STORED
    assert store.put(first, T0 + 1, trust=TRUST) is PutResult.UNCHANGED
    renewal = placement(sequence=5, expires_at=T0 + 900, value=b"first")
    assert store.put(renewal, T0, trust=TRUST) is PutResult.REPLACED
    newer = placement(sequence=6, expires_at=T0 + 300, value=b"second")
    assert store.put(newer, T0, trust=TRUST) is PutResult.REPLACED
    assert store.get(PLACEMENT, SLOTS[0], T0) == [newer]
    for stale in (
        placement(sequence=4, expires_at=T0 + 3000),
        placement(sequence=6, expires_at=T0 + 200, value=b"second"),
        placement(sequence=6, expires_at=T0 + 300, value=b"conflicting"),
    ):
        error = refused(store, stale)
        assert error.reason is RejectReason.STALE
        assert not error.sender_at_fault
    assert store.get(PLACEMENT, SLOTS[0], T0) == [newer]
    assert len(store) == 1
    assert store.bytes_held == held_size(newer)


def test_an_expired_version_no_longer_blocks_an_older_sequence():
    store = RecordStore(10, 10_000)
    store.put(placement(sequence=9, expires_at=T0 + 10), T0, trust=TRUST)
    assert (
        store.put(placement(sequence=1, expires_at=T0 + 100), T0 + 10, trust=TRUST)
        is PutResult.STORED
    )
    assert [r.sequence for r in store.get(PLACEMENT, SLOTS[0], T0 + 10)] == [1]


def test_get_orders_by_sequence_then_publisher_and_hides_the_expired():
    store = RecordStore(10, 10_000)
    records = [
        placement(signer=0, sequence=2),
        placement(signer=1, sequence=7),
        placement(signer=2, sequence=2, expires_at=T0 + 50),
        placement(signer=3, sequence=2),
        placement(signer=0, slot=1, sequence=99),
    ]
    for record in records:
        store.put(record, T0, trust=TRUST)
    got = store.get(PLACEMENT, SLOTS[0], T0)
    assert got[0] == records[1]
    ties = sorted([0, 2, 3], key=lambda i: IDS[i])
    assert got[1:] == [
        placement(signer=i, sequence=2, expires_at=records[i].expires_at) for i in ties
    ]
    assert records[2] not in store.get(PLACEMENT, SLOTS[0], T0 + 50)
    assert store.get(RecordKind.MANIFEST, SLOTS[0], T0) == []
    assert len(store) == 5  # still held until expire()
    assert store.expire(T0 + 50) == 1
    assert len(store) == 4
    assert store.expire(T0 + 50) == 0


def test_records_for_refresh_lists_every_live_record_by_kind_and_key():
    store = RecordStore(10, 10_000)
    a, b, c = placement(slot=2), placement(slot=0, signer=1), placement(slot=1, expires_at=T0 + 5)
    for record in (a, b, c):
        store.put(record, T0, trust=TRUST)
    order = sorted([a, b, c], key=lambda r: r.key)
    assert store.records_for_refresh(T0) == order
    assert store.records_for_refresh(T0 + 5) == [r for r in order if r is not c]


def test_invalid_records_are_refused_and_blamed_on_the_sender():
    store = RecordStore(10, 10_000)
    error = refused(store, placement(expires_at=T0))
    assert error.reason is RejectReason.EXPIRED
    assert error.sender_at_fault
    assert len(store) == 0


# -- limits --------------------------------------------------------------------------------


def test_a_full_store_refuses_rather_than_evicts_then_makes_room_as_records_expire():
    store = RecordStore(2, 10_000)
    short, long = placement(signer=0, expires_at=T0 + 10), placement(signer=1)
    store.put(short, T0, trust=TRUST)
    store.put(long, T0, trust=TRUST)
    error = refused(store, placement(signer=2))
    assert error.reason is RejectReason.FULL
    assert not error.sender_at_fault
    assert "next closest peer" in str(error)
    assert store.get(PLACEMENT, SLOTS[0], T0) == sorted([short, long], key=publisher_id)
    assert (
        store.put(placement(signer=1, sequence=2), T0, trust=TRUST) is PutResult.REPLACED
    )  # no new slot
    assert store.put(placement(signer=2), T0 + 10, trust=TRUST) is PutResult.STORED  # short expired
    assert len(store) == 2


def test_bytes_and_publishers_per_key_are_bounded():
    room = held_size(placement(signer=0, value=b"x" * 100))
    room += held_size(placement(signer=1, value=b"x" * 100))
    by_bytes = RecordStore(100, room, max_publisher_bytes=room)
    by_bytes.put(placement(signer=0, value=b"x" * 100), T0, trust=TRUST)
    by_bytes.put(placement(signer=1, value=b"x" * 100), T0, trust=TRUST)
    assert refused(by_bytes, placement(signer=2)).reason is RejectReason.FULL
    grown = placement(signer=0, sequence=2, value=b"x" * 101)
    assert refused(by_bytes, grown).reason is RejectReason.FULL
    assert (
        by_bytes.put(placement(signer=0, sequence=2, value=b"x" * 99), T0, trust=TRUST)
        is PutResult.REPLACED
    )

    per_key = RecordStore(100, 100_000, max_per_key=2)
    per_key.put(placement(signer=0), T0, trust=TRUST)
    per_key.put(placement(signer=1), T0, trust=TRUST)
    assert refused(per_key, placement(signer=2)).reason is RejectReason.FULL
    assert per_key.put(placement(signer=2, slot=1), T0, trust=TRUST) is PutResult.STORED


def test_limits_must_be_positive():
    with pytest.raises(LocalProtocolError):
        RecordStore(0, 100)
    with pytest.raises(LocalProtocolError):
        RecordStore(10, 100, max_publisher_bytes=0)


# -- per publisher -------------------------------------------------------------------------


def manifest(signer, junk, expires_at=T0 + 60):
    value = junk.to_bytes(4, "big") * 2048  # 8 KiB: any bytes are a "manifest" of their hash
    key = hashlib.sha256(value).digest()[:20]
    return sign_record(
        KEYS[signer], RecordKind.MANIFEST, key, value, sequence=1, expires_at=expires_at
    )


def test_one_identity_s_junk_manifests_stop_at_its_quota_and_others_still_get_room():
    """Issue 13's flood, scaled down 1024x: 64 junk manifests from one client would fill the
    store (512 KiB); it stops at a quarter, and the other members' records still fit."""
    store = RecordStore(100_000, 512 * 1024)
    assert (store.max_publisher_records, store.max_publisher_bytes) == (25_000, 128 * 1024)
    attacker = 1  # a client
    outcomes = []
    for junk in range(64):
        try:
            store.put(manifest(attacker, junk), T0, trust=TRUST)
            outcomes.append("stored")
        except RecordRejected as error:
            outcomes.append(error.reason)
            last = error
    stored = outcomes.count("stored")
    assert stored == 128 * 1024 // held_size(manifest(attacker, 0))
    assert outcomes == ["stored"] * stored + [RejectReason.OVER_QUOTA] * (64 - stored)
    assert not last.sender_at_fault and last.publisher == IDS[attacker]
    message = str(last)
    assert "over quota" in message and KEYS[attacker].identity.describe() in message
    usage = store.usage_of(IDS[attacker])
    assert f"{usage.records} of its 25000 records" in message
    assert f"{usage.bytes} of its {128 * 1024} bytes" in message
    assert store.bytes_held <= 128 * 1024
    for signer in (0, 2, 3):  # everyone else: a manifest and a placement each
        assert store.put(manifest(signer, 1000 + signer), T0, trust=TRUST) is PutResult.STORED
        assert store.put(placement(signer=signer), T0, trust=TRUST) is PutResult.STORED
    # Its records expire: room comes back for it, and only for what it is owed.
    later = manifest(attacker, 99, expires_at=T0 + 600)
    assert store.put(later, T0 + 60, trust=TRUST) is PutResult.STORED
    assert store.usage_of(IDS[attacker]).records == 1


def test_over_quota_counts_a_replacement_by_its_growth():
    small = held_size(placement(signer=0, value=b"x"))
    store = RecordStore(100, 100_000, max_publisher_records=2, max_publisher_bytes=2 * small + 10)
    store.put(placement(signer=0, slot=0, value=b"x"), T0, trust=TRUST)
    store.put(placement(signer=0, slot=1, value=b"x"), T0, trust=TRUST)
    assert refused(store, placement(signer=0, slot=2)).reason is RejectReason.OVER_QUOTA
    grown = placement(signer=0, slot=1, sequence=2, value=b"x" * 12)
    assert refused(store, grown).reason is RejectReason.OVER_QUOTA
    assert store.put(placement(signer=0, slot=1, sequence=2, value=b"x" * 11), T0, trust=TRUST)
    assert store.put(placement(signer=1, slot=2), T0, trust=TRUST) is PutResult.STORED


def test_a_forged_record_cannot_displace_another_publisher_s_record():
    store = RecordStore(100, 100_000)
    honest = placement(signer=0, sequence=5, value=b"the real holders")
    store.put(honest, T0, trust=TRUST)
    for certificate in (KEYS[0].certificate_der(), FORGED_ELSEWHERE.certificate_der()):
        attack = forged(PLACEMENT, SLOTS[0], b"nobody", 1 << 62, T0 + 600, certificate)
        assert refused(store, attack).reason is RejectReason.UNCERTIFIED
    # A member's own record at any sequence sits beside the honest one, never in its place.
    rival = placement(signer=1, sequence=1 << 62, value=b"nobody")
    assert store.put(rival, T0, trust=TRUST) is PutResult.STORED
    assert store.get(PLACEMENT, SLOTS[0], T0) == [rival, honest]


def test_revoking_a_publisher_drops_its_records_and_refuses_new_ones():
    store = RecordStore(100, 100_000)
    for signer in range(3):
        store.put(placement(signer=signer), T0, trust=TRUST)
        store.put(placement(signer=signer, slot=1), T0, trust=TRUST)
    revoking = dataclasses.replace(TRUST, revoked_serials={KEYS[1].identity.serial})
    changes = store.changes
    assert store.drop_revoked(revoking) == {IDS[1]: 2}
    assert store.changes > changes  # the saver writes the file again
    assert store.drop_revoked(revoking) == {}
    assert all(publisher_id(r) != IDS[1] for r in store.records_for_refresh(T0))
    assert len(store) == 4 and store.usage_of(IDS[1]).records == 0
    assert (
        refused(store, placement(signer=1, slot=2), trust=revoking).reason is RejectReason.REVOKED
    )


def test_a_record_lives_no_longer_than_its_publisher_s_certificate():
    issued = datetime.fromtimestamp(T0, UTC) - timedelta(hours=12)
    brief = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=issued, valid_days=1)
    ends = int(brief.identity.not_after.timestamp())
    record = sign_record(brief, PLACEMENT, SLOTS[0], b"v", sequence=1, expires_at=ends + 3600)
    store = RecordStore(100, 100_000)
    store.put(record, ends - 10, trust=TRUST)
    assert store.get(PLACEMENT, SLOTS[0], ends - 1) == [record]
    assert store.get(PLACEMENT, SLOTS[0], ends) == []
    assert store.expire(ends) == 1


def test_usage_is_reported_by_publisher_role():
    store = RecordStore(100, 100_000)
    store.put(placement(signer=0), T0, trust=TRUST)  # a node
    store.put(placement(signer=1), T0, trust=TRUST)  # a client
    store.put(placement(signer=3, slot=1), T0, trust=TRUST)  # a client
    by_role = store.usage_by_role()
    assert by_role[Role.NODE].records == 1 and by_role[Role.CLIENT].records == 2
    assert by_role[Role.CLIENT].bytes == store.bytes_held - by_role[Role.NODE].bytes


# -- the store against a model -------------------------------------------------------------


THROWAWAY = Ed25519PrivateKey.from_private_bytes(b"\x66" * 32)
FORGED_ELSEWHERE = MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED).issue_in_memory(
    datacenter="dc-9", region="FR-GES", now=ISSUED, key=THROWAWAY
)


def forged(kind, key, value, sequence, expires_at, certificate):
    """A record signed by ``THROWAWAY`` carrying ``certificate`` (see tests/net/hostile.py)."""
    public = THROWAWAY.public_key().public_bytes_raw()
    fields = dict(
        sequence=sequence, expires_at=expires_at, publisher_key=public, certificate=certificate
    )
    signature = THROWAWAY.sign(signed_bytes(kind, key, value, **fields))
    return SignedRecord(kind=int(kind), key=key, value=value, signature=signature, **fields)


class RecordStoreMachine(RuleBasedStateMachine):
    """Random puts by members and by forgers, time steps, expiries and revocations, checked
    against a dict of what must be visible: whatever the order, forged records are never
    held, no member passes its quota, and a revoked member's records are gone."""

    @initialize(
        max_records=st.integers(1, 8),
        max_bytes=st.integers(800, 12_000),
        max_per_key=st.integers(1, 4),
        publisher_records=st.integers(1, 8),
        publisher_bytes=st.integers(800, 12_000),
    )
    def setup(self, max_records, max_bytes, max_per_key, publisher_records, publisher_bytes):
        self.store = RecordStore(
            max_records,
            max_bytes,
            max_per_key,
            max_publisher_records=publisher_records,
            max_publisher_bytes=publisher_bytes,
        )
        self.trust = TRUST
        self.now = T0
        self.model = {}  # (kind, key, publisher) -> the record that must be visible
        self.highest = {}  # (kind, key, publisher) -> (sequence, expires_at) while held
        self.sent = []  # every record the store accepted

    def live(self):
        return {slot: r for slot, r in self.model.items() if r.expires_at > self.now}

    def expected_outcome(self, slot, record):
        live = self.live()
        held = live.get(slot)
        if held == record:
            return PutResult.UNCHANGED
        if held is not None and (record.sequence, record.expires_at) <= (
            held.sequence,
            held.expires_at,
        ):
            return RejectReason.STALE
        own = [r for s, r in live.items() if s[2] == slot[2] and s != slot]
        if len(own) + 1 > self.store.max_publisher_records or (
            sum(held_size(r) for r in own) + held_size(record) > self.store.max_publisher_bytes
        ):
            return RejectReason.OVER_QUOTA
        used = sum(held_size(r) for r in live.values())
        used += held_size(record) - (held_size(held) if held else 0)
        same_key = sum(1 for s in live if s[:2] == slot[:2])
        if used > self.store.max_bytes or (
            held is None
            and (len(live) >= self.store.max_records or same_key >= self.store.max_per_key)
        ):
            return RejectReason.FULL
        return PutResult.REPLACED if held is not None else PutResult.STORED

    @rule(
        signer=st.integers(0, 3),
        kind=st.sampled_from([RecordKind.PLACEMENT, RecordKind.MANIFEST]),
        slot=st.integers(0, 2),
        sequence=st.integers(0, 3),
        ttl=st.sampled_from([1, 5, 30, 600]),
        size=st.sampled_from([1, 50, 400]),
    )
    def put(self, signer, kind, slot, sequence, ttl, size):
        value = bytes([slot]) * size
        key = hashlib.sha256(value).digest()[:20] if kind is RecordKind.MANIFEST else SLOTS[slot]
        record = sign_record(
            KEYS[signer], kind, key, value, sequence=sequence, expires_at=self.now + ttl
        )
        self.check_put(record)

    @rule(data=st.data(), extra=st.sampled_from([0, 0, 1, 100]))
    def put_again(self, data, extra):
        """Republish a record stored before, as it is or renewed to expire ``extra`` s later."""
        if not self.sent:
            return
        record = data.draw(st.sampled_from(self.sent))
        if extra and record.expires_at + extra > self.now:
            signer = KEYS[IDS.index(publisher_id(record))]
            record = renew(record, signer, self.now, ttl=record.expires_at + extra - self.now)
        self.check_put(record)

    def check_put(self, record):
        where = (RecordKind(record.kind), record.key, publisher_id(record))
        revoked = KEYS[IDS.index(where[2])].identity.serial in self.trust.revoked_serials
        expected = RejectReason.REVOKED if revoked else self.expected_outcome(where, record)
        if record.expires_at <= self.now:
            return
        try:
            outcome = self.store.put(record, self.now, trust=self.trust)
        except RecordRejected as error:
            outcome = error.reason
        assert outcome == expected
        if isinstance(outcome, PutResult):
            previous = self.highest.get(where) if where in self.live() else None
            assert previous is None or (record.sequence, record.expires_at) >= previous
            self.highest[where] = (record.sequence, record.expires_at)
            self.model[where] = record
            self.sent.append(record)

    @rule(
        kind=st.sampled_from(list(MEMBER_KINDS)),
        slot=st.integers(0, 2),
        sequence=st.sampled_from([0, 3, 1 << 62]),
        certificate=st.sampled_from(["member", "garbage", "other-mesh"]),
    )
    def forge(self, kind, slot, sequence, certificate):
        """A throw-away key signs a record carrying a member's, junk or another mesh's
        certificate: refused, and nothing held changes."""
        der = {
            "member": KEYS[slot].certificate_der(),
            "garbage": b"\x30\x00",
            "other-mesh": FORGED_ELSEWHERE.certificate_der(),
        }[certificate]
        publisher = node_id_from_public_key(THROWAWAY.public_key())
        value = b"junk" * 100
        key = {
            RecordKind.MANIFEST: hashlib.sha256(value).digest()[:20],
            RecordKind.ANNOUNCEMENT: publisher,
        }.get(kind, SLOTS[slot])
        before = self.store.records_for_refresh(self.now)
        with pytest.raises(RecordRejected) as caught:
            self.store.put(
                forged(kind, key, value, sequence, self.now + 60, der), self.now, trust=self.trust
            )
        assert caught.value.reason in {RejectReason.UNCERTIFIED, RejectReason.REVOKED}
        assert self.store.records_for_refresh(self.now) == before

    @rule(signer=st.integers(0, 3))
    def revoke(self, signer):
        serial = KEYS[signer].identity.serial
        self.trust = dataclasses.replace(
            self.trust, revoked_serials=self.trust.revoked_serials | {serial}
        )
        dropped = self.store.drop_revoked(self.trust)
        gone = {s: r for s, r in self.model.items() if s[2] == IDS[signer]}
        live = {s for s in self.live() if s[2] == IDS[signer]}
        # Expired records not yet forgotten may be dropped too; the live ones must be.
        assert len(live) <= dropped.get(IDS[signer], 0) <= len(gone)
        assert set(dropped) <= {IDS[signer]}
        self.model = {s: r for s, r in self.model.items() if s not in gone}
        assert self.store.usage_of(IDS[signer]).records == 0

    @rule(step=st.sampled_from([1, 4, 29, 200]))
    def advance(self, step):
        self.now += step

    @rule()
    def expire(self):
        removed = self.store.expire(self.now)
        assert len(self.store) == len(self.live())
        assert removed >= 0
        self.model = self.live()
        assert self.store.bytes_held == sum(held_size(r) for r in self.model.values())

    @invariant()
    def bounded(self):
        assert len(self.store) <= self.store.max_records
        assert self.store.bytes_held <= self.store.max_bytes
        assert len(self.store) >= len(self.live())
        for publisher in IDS:
            usage = self.store.usage_of(publisher)
            assert usage.records <= self.store.max_publisher_records
            assert usage.bytes <= self.store.max_publisher_bytes
        by_role = self.store.usage_by_role()
        assert sum(u.records for u in by_role.values()) == len(self.store)
        assert sum(u.bytes for u in by_role.values()) == self.store.bytes_held
        assert self.store.usage_of(node_id_from_public_key(THROWAWAY.public_key())).records == 0

    @invariant()
    def visible_records_match_the_model(self):
        live = self.live()
        groups = {slot[:2] for slot in live} | {
            (k, key) for k in (RecordKind.PLACEMENT, RecordKind.MANIFEST) for key in SLOTS
        }
        for kind, key in groups:
            got = self.store.get(kind, key, self.now)
            assert all(r.expires_at > self.now for r in got)
            want = [r for s, r in live.items() if s[:2] == (kind, key)]
            want.sort(key=lambda r: (-r.sequence, publisher_id(r)))
            assert got == want
        assert sorted(self.store.records_for_refresh(self.now), key=repr) == sorted(
            live.values(), key=repr
        )


TestRecordStoreMachine = RecordStoreMachine.TestCase
TestRecordStoreMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


# -- the publisher's side ------------------------------------------------------------------


def test_sequences_grow_with_time_and_never_repeat():
    assert next_sequence(None, T0 + 0.25) == T0 * 1000 + 250
    assert next_sequence(T0 * 1000 + 250, T0 + 0.25) == T0 * 1000 + 251
    assert next_sequence(10**15, T0) == 10**15 + 1


def test_a_publisher_republishes_renewed_records_when_due():
    published = PublishedRecords(KEYS[0])
    store = RecordStore(10, 100_000)
    every = RULES[PLACEMENT].republish_every
    record = published.publish(PLACEMENT, SLOTS[0], b"where", T0)
    assert store.put(record, T0, trust=TRUST) is PutResult.STORED
    assert published.due(T0 + every - 1) == []
    assert published.next_due() == T0 + every
    (renewed,) = published.due(T0 + every)
    assert (renewed.sequence, renewed.value) == (record.sequence, record.value)
    assert renewed.expires_at == T0 + every + RULES[PLACEMENT].max_ttl
    assert store.put(renewed, T0 + every, trust=TRUST) is PutResult.REPLACED
    assert published.due(T0 + every + 1) == []
    assert published.next_due() == T0 + 2 * every
    assert published.due(T0 + every + 5, interval=5) == [published.get(PLACEMENT, SLOTS[0])]


def test_a_new_version_outranks_the_old_even_after_a_restart():
    first = PublishedRecords(KEYS[0]).publish(PLACEMENT, SLOTS[0], b"old", T0)
    again = PublishedRecords(KEYS[0])  # restarted: no memory of `first`
    second = again.publish(PLACEMENT, SLOTS[0], b"new", T0 + 1)
    third = again.publish(PLACEMENT, SLOTS[0], b"newer", T0 + 1)
    assert first.sequence < second.sequence < third.sequence
    store = RecordStore(10, 100_000)
    store.put(first, T0 + 1, trust=TRUST)
    assert store.put(third, T0 + 1, trust=TRUST) is PutResult.REPLACED
    assert refused(store, second, T0 + 1).reason is RejectReason.STALE


def test_a_publisher_keeps_only_its_own_records():
    published = PublishedRecords(KEYS[0])
    with pytest.raises(LocalProtocolError, match="signed"):
        published.add(placement(signer=1), T0)
    published.add(placement(signer=0, expires_at=T0 + 100), T0)
    (renewed,) = published.due(T0 + 50, interval=50)
    assert renewed.expires_at == T0 + 150  # keeps the lifetime it was given
    assert len(published) == 1
    assert published.remove(PLACEMENT, SLOTS[0])
    assert not published.remove(PLACEMENT, SLOTS[0])
    assert published.due(T0 + 10**6) == []
    assert published.next_due() is None
    with pytest.raises(LocalProtocolError, match="ttl"):
        published.publish(PLACEMENT, SLOTS[0], b"v", T0, ttl=RULES[PLACEMENT].max_ttl + 1)


def test_a_node_announces_itself_and_holders_check_it_against_the_ca():
    issued = datetime.fromtimestamp(T0, UTC) - timedelta(days=1)
    ca = MeshCA.create_in_memory(mesh_name="grand-est", now=issued)
    node = ca.issue_in_memory(datacenter="nancy-1", region="FR-GES", now=issued)
    value = Announcement("nancy:7400", "nancy-1", "FR-GES", 10**12, node.certificate_der())
    published = PublishedRecords(node)
    record = published.publish(RecordKind.ANNOUNCEMENT, node.node_id, value.encode(), T0)
    store = RecordStore(10, 100_000)
    assert store.put(record, T0, trust=ca.trust_anchor()) is PutResult.STORED
    assert verify_record(record, T0, trust=ca.trust_anchor()).announcement == value
    revoking = dataclasses.replace(ca.trust_anchor(), revoked_serials={node.identity.serial})
    assert refused(store, record, trust=revoking).reason is RejectReason.REVOKED
    (renewed,) = published.due(T0 + RULES[RecordKind.ANNOUNCEMENT].republish_every)
    assert renewed.expires_at > record.expires_at


def test_each_kind_is_republished_at_its_own_period():
    """Manifests and placements daily, announcements every 15 minutes: the rule the node's DHT
    and the simulator's traffic model both read (nodes once republished everything every 30
    minutes)."""
    assert republish_period(RecordKind.MANIFEST) == 24 * 3600
    assert republish_period(PLACEMENT) == 24 * 3600
    assert republish_period(RecordKind.ANNOUNCEMENT) == 15 * 60
    assert republish_period(PLACEMENT, ttl=3600) == 900  # a short-lived record: a quarter of it
    published = PublishedRecords(KEYS[0])
    published.add(placement(signer=0, expires_at=T0 + 400), T0)
    assert published.next_due() == T0 + 100  # renewed long before it expires
    (renewed,) = published.due(T0 + 100)
    assert renewed.expires_at == T0 + 500


def test_a_due_record_whose_value_changed_goes_out_as_a_new_version():
    published = PublishedRecords(KEYS[0])
    first = published.publish(PLACEMENT, SLOTS[0], b"old", T0)
    every = republish_period(PLACEMENT)
    slot = (int(PLACEMENT), SLOTS[0])
    assert published.due(T0 + 1, values={slot: b"new"}) == []  # not due: nothing is sent
    (same,) = published.due(T0 + every, values={slot: b"old"})
    assert (same.sequence, same.value) == (first.sequence, b"old")
    (changed,) = published.due(T0 + 2 * every, values={slot: b"new"})
    assert changed.value == b"new" and changed.sequence > first.sequence
    assert published.get(PLACEMENT, SLOTS[0]) == changed
    assert published.next_due() == T0 + 3 * every
