"""What a node holds for others (RecordStore) and what it republishes (PublishedRecords)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from p2pstore.core.announcements import Announcement
from p2pstore.core.records import (
    RULES,
    PublishedRecords,
    PutResult,
    RecordKind,
    RecordRejected,
    RecordStore,
    RejectReason,
    held_size,
    next_sequence,
    renew,
    sign_record,
    verify_record,
)
from p2pstore.errors import LocalProtocolError
from p2pstore.identity import MeshCA, node_id_from_public_key

T0 = 1_772_366_400
KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(4)]
IDS = [node_id_from_public_key(k.public_key()) for k in KEYS]
SLOTS = [hashlib.sha256(bytes([i])).digest()[:20] for i in range(3)]
PLACEMENT = RecordKind.PLACEMENT


def placement(signer=0, slot=0, sequence=1, expires_at=T0 + 600, value=b"v"):
    return sign_record(
        KEYS[signer], PLACEMENT, SLOTS[slot], value, sequence=sequence, expires_at=expires_at
    )


def publisher_id(record):
    return hashlib.sha256(record.publisher_key).digest()[:20]


def refused(store, record, now=T0):
    with pytest.raises(RecordRejected) as caught:
        store.put(record, now)
    return caught.value


# -- replacement rules ---------------------------------------------------------------------


def test_a_publisher_s_versions_replace_each_other_in_order():
    store = RecordStore(10, 10_000)
    first = placement(sequence=5, value=b"first")
    assert store.put(first, T0) is PutResult.STORED
    assert store.put(first, T0 + 1) is PutResult.UNCHANGED
    renewal = placement(sequence=5, expires_at=T0 + 900, value=b"first")
    assert store.put(renewal, T0) is PutResult.REPLACED
    newer = placement(sequence=6, expires_at=T0 + 300, value=b"second")
    assert store.put(newer, T0) is PutResult.REPLACED
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
    store.put(placement(sequence=9, expires_at=T0 + 10), T0)
    assert store.put(placement(sequence=1, expires_at=T0 + 100), T0 + 10) is PutResult.STORED
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
        store.put(record, T0)
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
        store.put(record, T0)
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
    store.put(short, T0)
    store.put(long, T0)
    error = refused(store, placement(signer=2))
    assert error.reason is RejectReason.FULL
    assert not error.sender_at_fault
    assert "next closest peer" in str(error)
    assert store.get(PLACEMENT, SLOTS[0], T0) == sorted([short, long], key=publisher_id)
    assert store.put(placement(signer=1, sequence=2), T0) is PutResult.REPLACED  # no new slot
    assert store.put(placement(signer=2), T0 + 10) is PutResult.STORED  # short expired
    assert len(store) == 2


def test_bytes_and_publishers_per_key_are_bounded():
    by_bytes = RecordStore(100, 2 * held_size(placement(value=b"x" * 100)))
    by_bytes.put(placement(signer=0, value=b"x" * 100), T0)
    by_bytes.put(placement(signer=1, value=b"x" * 100), T0)
    assert refused(by_bytes, placement(signer=2)).reason is RejectReason.FULL
    grown = placement(signer=0, sequence=2, value=b"x" * 101)
    assert refused(by_bytes, grown).reason is RejectReason.FULL
    assert by_bytes.put(placement(signer=0, sequence=2, value=b"x" * 99), T0) is PutResult.REPLACED

    per_key = RecordStore(100, 100_000, max_per_key=2)
    per_key.put(placement(signer=0), T0)
    per_key.put(placement(signer=1), T0)
    assert refused(per_key, placement(signer=2)).reason is RejectReason.FULL
    assert per_key.put(placement(signer=2, slot=1), T0) is PutResult.STORED


def test_limits_must_be_positive():
    with pytest.raises(LocalProtocolError):
        RecordStore(0, 100)


# -- the store against a model -------------------------------------------------------------


class RecordStoreMachine(RuleBasedStateMachine):
    """Random puts, time steps and expiries, checked against a dict of what must be visible."""

    @initialize(
        max_records=st.integers(1, 8),
        max_bytes=st.integers(300, 5000),
        max_per_key=st.integers(1, 4),
    )
    def setup(self, max_records, max_bytes, max_per_key):
        self.store = RecordStore(max_records, max_bytes, max_per_key)
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
        expected = self.expected_outcome(where, record)
        if record.expires_at <= self.now:
            return
        try:
            outcome = self.store.put(record, self.now)
        except RecordRejected as error:
            outcome = error.reason
        assert outcome == expected
        if isinstance(outcome, PutResult):
            previous = self.highest.get(where) if where in self.live() else None
            assert previous is None or (record.sequence, record.expires_at) >= previous
            self.highest[where] = (record.sequence, record.expires_at)
            self.model[where] = record
            self.sent.append(record)

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
    assert store.put(record, T0) is PutResult.STORED
    assert published.due(T0 + every - 1) == []
    assert published.next_due() == T0 + every
    (renewed,) = published.due(T0 + every)
    assert (renewed.sequence, renewed.value) == (record.sequence, record.value)
    assert renewed.expires_at == T0 + every + RULES[PLACEMENT].max_ttl
    assert store.put(renewed, T0 + every) is PutResult.REPLACED
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
    store.put(first, T0 + 1)
    assert store.put(third, T0 + 1) is PutResult.REPLACED
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
    assert refused(store, record).reason is RejectReason.UNVERIFIABLE
    (renewed,) = published.due(T0 + RULES[RecordKind.ANNOUNCEMENT].republish_every)
    assert renewed.expires_at > record.expires_at
