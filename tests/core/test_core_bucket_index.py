"""The bucket index CRDT: merge is a join, retention only grows, a legal hold follows the last
decision, nothing valid can be hidden."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from bucket_fixtures import ALICE, ALICE_LAPTOP, BUCKET, T0, signed, token, unsigned, verified
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.bucket_entries import Op, VerifiedEntry, version_id
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.errors import LocalProtocolError

NAMES = [token(n) for n in ("a", "b", "c")]
SIGNERS = [bytes([i]) * 32 for i in (1, 2)]
BASE = signed(Op.PUT)


@st.composite
def entries(draw: st.DrawFn) -> VerifiedEntry:
    """Unsigned entries over a few names, versions and signers, so slots collide often."""
    op = draw(st.sampled_from(list(Op)))
    name = draw(st.sampled_from(NAMES))
    timestamp = draw(st.integers(0, 4)) * 1000
    payload = draw(st.sampled_from([b"p1", b"p2"])) if op in (Op.PUT, Op.MARKER) else b""
    retain = draw(st.sampled_from([0, 0, 10, 20, 30]))
    hold = draw(st.booleans()) if op not in (Op.ERASE, Op.RELEASE) else False
    if op in (Op.ERASE, Op.RELEASE):
        retain = 0
    if op is Op.RETAIN and not (retain or hold):
        retain = 10
    entry = dataclasses.replace(
        BASE,
        name=name,
        op=int(op),
        timestamp=timestamp,
        payload=payload,
        retain_until=retain,
        legal_hold=hold,
        signer_key=draw(st.sampled_from(SIGNERS)),
        signature=draw(st.sampled_from([b"\1" * 64, b"\2" * 64])),
    )
    if op in (Op.PUT, Op.MARKER):
        entry = dataclasses.replace(entry, version=version_id(entry))
    else:  # erase or retain one of the versions a PUT/MARKER of this name could have
        target_op = draw(st.sampled_from([Op.PUT, Op.MARKER]))
        target = dataclasses.replace(
            entry, op=int(target_op), payload=draw(st.sampled_from([b"p1", b"p2"]))
        )
        target = dataclasses.replace(target, timestamp=draw(st.integers(0, 4)) * 1000)
        entry = dataclasses.replace(entry, version=version_id(target))
    return unsigned(entry)


def index_of(items: list[VerifiedEntry]) -> BucketIndex:
    index = BucketIndex(BUCKET)
    index.merge(items)
    return index


def views(index: BucketIndex, now: float) -> object:
    return (
        [(n, index.versions(n, now)) for n in index.names()],
        list(index.live(now)),
        sorted((v.name, v.version) for v in index.erased(now)),
    )


lists = st.lists(entries(), max_size=25)


@settings(max_examples=200)
@given(lists, st.randoms(use_true_random=False))
def test_the_order_entries_arrive_in_does_not_matter(items, rng):
    shuffled = list(items)
    rng.shuffle(shuffled)
    a, b = index_of(items), index_of(shuffled)
    assert a.summary() == b.summary()
    for now in (0, 15, 40):
        assert views(a, now) == views(b, now)


@settings(max_examples=200)
@given(lists, lists, lists)
def test_merge_is_commutative_associative_and_idempotent(xs, ys, zs):
    a, b, c = index_of(xs), index_of(ys), index_of(zs)
    ab, ba = index_of(a.entries() + b.entries()), index_of(b.entries() + a.entries())
    assert ab.summary() == ba.summary()
    left = index_of(ab.entries() + c.entries())
    bc = index_of(b.entries() + c.entries())
    right = index_of(a.entries() + bc.entries())
    assert left.summary() == right.summary() == index_of(xs + ys + zs).summary()
    before = a.summary()
    assert a.merge(a.entries()) == 0
    assert a.summary() == before


@settings(max_examples=200)
@given(lists, lists, st.sampled_from([0, 5, 15, 25, 40]))
def test_retention_only_grows_whatever_is_merged(xs, extra, now):
    """Adding entries (any key, any op) never shortens retention nor erases a version its
    retention protects: the ransomware rule, as a property of the merge."""
    small, big = index_of(xs), index_of(xs + extra)
    for name in small.names():
        after = {v.version: v for v in big.versions(name, now)}
        for view in small.versions(name, now):
            if now < view.retain_until:
                assert view.version in after
                assert after[view.version].retain_until >= view.retain_until


@settings(max_examples=200)
@given(lists)
def test_a_legal_hold_is_the_latest_decision_on_it(items):
    index = index_of(items)
    decisions: dict[tuple[bytes, bytes], list[VerifiedEntry]] = {}
    for item in items:
        if item.entry.legal_hold or item.op is Op.RELEASE:
            decisions.setdefault((item.entry.name, item.entry.version), []).append(item)
    for name in index.names():
        for view in index.versions(name, 0):
            said = decisions.get((name, view.version), [])
            last = min(said, key=lambda e: (-e.entry.timestamp, e.digest), default=None)
            assert view.legal_hold == (last is not None and last.op is Op.RETAIN)


@settings(max_examples=200)
@given(lists, st.sampled_from([0, 15, 40]))
def test_a_written_version_stays_visible_unless_erased_past_its_retention(items, now):
    index = index_of(items)
    visible = {(v.name, v.version) for n in index.names() for v in index.versions(n, now)}
    erased = {(v.name, v.version) for v in index.erased(now)}
    for item in items:
        if item.op in (Op.PUT, Op.MARKER):
            key = (item.entry.name, item.entry.version)
            assert (key in visible) != (key in erased)


@settings(max_examples=100)
@given(lists, st.data())
def test_a_replica_holding_a_subset_cannot_hide_what_a_reader_merges_from_others(items, data):
    """A hostile replica serves any subset it likes; a reader merging it with one honest
    replica sees exactly what the honest one says."""
    honest = index_of(items)
    subset = data.draw(st.lists(st.sampled_from(items), max_size=len(items))) if items else []
    reader = index_of(subset)
    reader.merge(honest.entries())
    assert reader.summary() == honest.summary()


def test_entries_kept_are_the_slot_winners_only():
    put = verified(signed(Op.PUT))
    again = verified(signed(Op.PUT, signer=ALICE_LAPTOP))
    assert again.entry.version == put.entry.version  # same content, another signer
    index = BucketIndex(BUCKET)
    index.add(put)
    index.add(again)
    assert len(index) == 1
    assert index.entries()[0].digest == min(put.digest, again.digest)


def test_current_version_is_the_newest_and_a_marker_deletes_the_name():
    index = BucketIndex(BUCKET)
    v1 = verified(signed(Op.PUT, payload=b"one", at=T0 - 20))
    v2 = verified(signed(Op.PUT, payload=b"two", at=T0 - 10))
    index.merge([v2, v1])
    current = index.current(token("a.txt"), T0)
    assert current is not None and current.payload == b"two"
    marker = verified(signed(Op.MARKER, payload=b"", at=T0 - 5))
    index.add(marker)
    assert index.current(token("a.txt"), T0).is_marker
    assert list(index.live(T0)) == []
    assert [v.payload for v in index.versions(token("a.txt"), T0)] == [b"", b"two", b"one"]


def test_ransomware_with_the_tenants_key_cannot_remove_a_retained_version():
    index = BucketIndex(BUCKET)
    retain = T0 + 30 * 86400
    original = verified(signed(Op.PUT, payload=b"thesis.pdf", at=T0 - 60, retain_until=retain))
    index.add(original)
    version = original.entry.version
    attack = [
        signed(Op.PUT, payload=b"encrypted by ransomware", at=T0),
        signed(Op.MARKER, payload=b"", at=T0 + 1),
        signed(Op.RETAIN, version=version, retain_until=T0 + 1, at=T0 + 2),
        signed(Op.ERASE, version=version, at=T0 + 3),
    ]
    for entry in attack:
        index.add(verified(entry, now=T0 + 10))
    name = token("a.txt")
    for now in (T0 + 10, retain - 1):
        kept = [v for v in index.versions(name, now) if v.version == version]
        assert kept and kept[0].payload == b"thesis.pdf" and kept[0].retain_until == retain
    assert [v.version for v in index.erased(retain)] == [version]


def test_a_legal_hold_keeps_a_version_past_its_date():
    index = BucketIndex(BUCKET)
    put = verified(signed(Op.PUT, at=T0 - 60))
    version = put.entry.version
    index.merge(
        [
            put,
            verified(signed(Op.RETAIN, version=version, legal_hold=True, at=T0 - 50)),
            verified(signed(Op.ERASE, version=version, at=T0 - 40)),
        ]
    )
    assert list(index.erased(T0 + 10**9)) == []
    assert index.current(token("a.txt"), T0 + 10**9).legal_hold


def test_a_lifted_hold_lets_the_erasure_through_but_never_the_retention_date():
    index = BucketIndex(BUCKET)
    put = verified(signed(Op.PUT, at=T0 - 60))
    version = put.entry.version
    index.merge(
        [
            put,
            verified(signed(Op.RETAIN, version=version, legal_hold=True, at=T0 - 50)),
            verified(signed(Op.RETAIN, version=version, retain_until=T0 + 100, at=T0 - 45)),
            verified(signed(Op.ERASE, version=version, at=T0 - 40)),
            verified(signed(Op.RELEASE, version=version, at=T0 - 30)),
        ]
    )
    view = index.current(token("a.txt"), T0)
    assert view is not None and not view.legal_hold and view.retain_until == T0 + 100
    assert list(index.erased(T0 + 99)) == []  # the date still holds it
    assert [v.version for v in index.erased(T0 + 100)] == [version]
    index.merge([verified(signed(Op.RETAIN, version=version, legal_hold=True, at=T0 - 20))])
    assert list(index.erased(T0 + 10**9)) == []  # put on again: kept again


def test_pages_cover_every_entry_once_in_digest_order():
    index = BucketIndex(BUCKET)
    index.merge(
        verified(signed(Op.PUT, name=f"n{i}", payload=b"x", at=T0 - i, signer=ALICE))
        for i in range(10)
    )
    seen, cursor = [], b""
    while True:
        page, cursor = index.page(cursor, 3)
        seen.extend(page)
        if not cursor:
            break
    assert [e.digest for e in seen] == sorted(e.digest for e in index.entries())
    assert len(seen) == 10


@settings(max_examples=100)
@given(lists, st.integers(1, 6))
def test_pages_of_any_size_cover_the_index_once(items, limit):
    index = index_of(items)
    seen, cursor = [], b""
    while True:
        page, cursor = index.page(cursor, limit)
        assert len(page) <= limit
        seen.extend(e.digest for e in page)
        if not cursor:
            break
    assert seen == [e.digest for e in index.entries()]


def test_an_entry_of_another_bucket_is_refused():
    other = BucketIndex(hashlib.sha256(b"x").digest()[:20])
    with pytest.raises(LocalProtocolError, match="joined into"):
        other.add(verified(signed()))
