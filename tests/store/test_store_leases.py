"""The lease table: what it records for the pure rules, bounded per steward, across reopens."""

from __future__ import annotations

import hashlib

import pytest

from p2pstore.core.leases import FragmentLife, Retention
from p2pstore.store.leases import LeaseTable

T0 = 1_772_366_400.0
DAY = 86400.0
GRACE = 7 * DAY
A, B, C = (hashlib.sha256(bytes([i])).digest() for i in range(3))
OBJECT = hashlib.sha256(b"object").digest()
OTHER_OBJECT = hashlib.sha256(b"other").digest()
HONEST, HOSTILE = b"h" * 20, b"x" * 20


@pytest.fixture(params=["memory", "disk"])
def table(request, tmp_path):
    path = ":memory:" if request.param == "memory" else tmp_path / "index.sqlite"
    opened = LeaseTable(path)
    yield opened
    opened.close()


def test_a_fresh_fragment_gets_one_initial_lease_when_stated(table):
    table.stored(A, 100, T0)
    assert table.stated([A, B], T0 + 3 * DAY) == 1
    assert table.life(A) == FragmentLife(T0, T0 + 3 * DAY)
    assert table.stated([A], T0 + 30 * DAY) == 0  # asked again: no second initial lease
    assert table.life(B) is None


def test_orphans_and_lapses_are_due_after_the_grace_only(table):
    table.stored(A, 100, T0)  # interrupted put: never stated
    table.stored(B, 100, T0)
    table.stated([B], T0 + 3 * DAY)
    assert table.due(T0 + GRACE - 1, grace=GRACE, up_since=T0, limit=10) == []
    assert table.due(T0 + GRACE, grace=GRACE, up_since=T0, limit=10) == [A]
    assert set(table.due(T0 + 10 * DAY, grace=GRACE, up_since=T0, limit=10)) == {A, B}
    assert table.due(T0 + 10 * DAY, grace=GRACE, up_since=T0 + 5 * DAY, limit=10) == []


def test_legacy_fragments_wait_for_a_first_lease(table):
    assert table.adopt([(A, 10), (B, 10)], None) == 2
    assert table.adopt([(A, 10)], T0) == 0
    assert table.due(T0 + 100 * DAY, grace=GRACE, up_since=T0, limit=10) == []
    table.renew(HONEST, [(OBJECT, A)], T0 + DAY, T0, 10**6)
    assert table.due(T0 + 100 * DAY, grace=GRACE, up_since=T0, limit=10) == [A]


def test_a_short_lease_never_shortens_a_longer_one(table):
    table.stored(A, 100, T0)
    table.renew(HONEST, [(OBJECT, A)], T0 + 3 * DAY, T0, 10**6)
    table.renew(HOSTILE, [(OBJECT, A)], T0 - 1, T0, 10**6)  # a "release"
    table.renew(HONEST, [(OBJECT, A)], T0 + DAY, T0, 10**6)
    assert table.life(A).leased_until == T0 + 3 * DAY


def test_one_stewards_live_leases_are_bounded_in_bytes(table):
    for fragment in (A, B, C):
        table.stored(fragment, 100, T0)
    applied = table.renew(HOSTILE, [(OBJECT, A), (OBJECT, B), (OBJECT, C)], T0 + DAY, T0, 250)
    assert (applied.applied, applied.over_share) == (2, 1)
    assert table.steward_bytes(HOSTILE, T0) == 200
    again = table.renew(HOSTILE, [(OBJECT, A), (OBJECT, B)], T0 + 2 * DAY, T0, 250)
    assert again.applied == 2  # renewing what it holds costs nothing more
    assert table.renew(HONEST, [(OBJECT, C)], T0 + DAY, T0, 250).applied == 1
    assert table.steward_bytes(HOSTILE, T0 + 3 * DAY) == 0  # lapsed leases count no more


def test_leases_on_fragments_not_held_are_ignored(table):
    assert table.renew(HONEST, [(OBJECT, A)], T0 + DAY, T0, 10**6).applied == 0
    assert table.life(A) is None


def test_retention_only_grows_and_keeps_a_lapsed_fragment(table):
    table.stored(A, 100, T0)
    table.renew(HONEST, [(OBJECT, A)], T0 + DAY, T0, 10**6)
    until = int(T0 + 30 * DAY)
    assert table.retain(OBJECT, Retention(until)) == Retention(until)
    assert table.retain(OBJECT, Retention(int(T0))) == Retention(until)
    assert table.retain(OTHER_OBJECT, Retention(0, True)) == Retention(0, True)
    assert table.due(T0 + 20 * DAY, grace=GRACE, up_since=T0, limit=10) == []
    assert table.due(until + GRACE, grace=GRACE, up_since=T0, limit=10) == [A]
    table.retain(OBJECT, Retention(0, True))
    assert table.due(T0 + 1000 * DAY, grace=GRACE, up_since=T0, limit=10) == []


def test_forget_drops_every_row(table):
    table.stored(A, 100, T0)
    table.renew(HONEST, [(OBJECT, A)], T0 + DAY, T0, 10**6)
    table.forget(A)
    assert table.life(A) is None
    assert table.steward_bytes(HONEST, T0) == 0
    assert table.known([A, B]) == set()


def test_the_table_survives_a_reopen(tmp_path):
    path = tmp_path / "index.sqlite"
    first = LeaseTable(path)
    assert first.created
    first.stored(A, 100, T0)
    first.renew(HONEST, [(OBJECT, A)], T0 + 3 * DAY, T0, 10**6)
    first.close()
    again = LeaseTable(path)
    assert not again.created
    assert again.life(A) == FragmentLife(T0, T0 + 3 * DAY)
    again.close()
