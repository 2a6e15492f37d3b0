"""Fragment leases: signing and checking renewals, the holder's keep-or-free rule, and a
property over random lifecycles: nothing referenced or retained is ever freed, and every
unreferenced fragment goes within the lease and grace periods."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.leases import (
    DEFAULT_GRACE,
    LEASE_TTL,
    MAX_LEASE_TTL,
    Fate,
    FragmentLife,
    LeaseBounds,
    Retention,
    check_renewal,
    decide,
    eligible,
    free_at,
    initial_lease,
    sign_renewal,
)
from p2pstore.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from p2pstore.identity import MeshCA
from p2pstore.wire import LeaseItem

T0 = 1_772_366_400.0
ISSUED = datetime.fromtimestamp(T0, UTC) - timedelta(days=1)
CA = MeshCA.create_in_memory(mesh_name="leases", now=ISSUED)
STEWARD = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=ISSUED)
OTHER = CA.issue_in_memory(datacenter="dc-2", region="FR-GES", now=ISSUED)
HOLDER = bytes(range(20))
OBJECT = hashlib.sha256(b"object").digest()
IDS = tuple(hashlib.sha256(b"fragment %d" % i).digest() for i in range(4))
ITEM = LeaseItem(object_id=OBJECT, fragment_ids=IDS)
STEWARD_ID = STEWARD.identity.node_id


def test_a_renewal_checks_and_grants_its_expiry():
    renewal = sign_renewal(STEWARD, HOLDER, [ITEM], now=T0)
    assert check_renewal(renewal, STEWARD_ID, HOLDER, T0 + 1) == pytest.approx(T0 + LEASE_TTL)


def test_a_renewal_lives_at_most_the_longest_lease_whatever_it_says():
    renewal = sign_renewal(STEWARD, HOLDER, [ITEM], now=T0, ttl=10 * 365 * 86400)
    assert check_renewal(renewal, STEWARD_ID, HOLDER, T0) == pytest.approx(T0 + MAX_LEASE_TTL)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"holder": bytes(20)}, RemoteProtocolError),
        ({"issued_ms": int((T0 + 3600) * 1000)}, RemoteProtocolError),
        ({"expires_ms": int((T0 + 99 * 86400) * 1000)}, IntegrityError),
        ({"items": (dataclasses.replace(ITEM, fragment_ids=IDS[:1]),)}, IntegrityError),
    ],
)
def test_a_renewal_that_was_altered_or_misdirected_is_refused(change, error):
    renewal = dataclasses.replace(sign_renewal(STEWARD, HOLDER, [ITEM], now=T0), **change)
    with pytest.raises(error):
        check_renewal(renewal, STEWARD_ID, HOLDER, T0)


def test_a_renewal_signed_by_another_key_than_the_sessions_is_refused():
    renewal = sign_renewal(OTHER, HOLDER, [ITEM], now=T0)
    with pytest.raises(IntegrityError):
        check_renewal(renewal, STEWARD_ID, HOLDER, T0)


def test_a_steward_cannot_sign_more_fragments_than_a_query():
    items = [LeaseItem(object_id=OBJECT, fragment_ids=(IDS[0],) * 1024)] * 2
    with pytest.raises(LocalProtocolError):
        sign_renewal(STEWARD, HOLDER, items, now=T0)


def test_only_the_closest_known_nodes_are_eligible():
    key = bytes(20)
    known = [i.to_bytes(20, "big") for i in range(1, 20)]
    assert eligible((3).to_bytes(20, "big"), key, known, width=4)
    assert not eligible((6).to_bytes(20, "big"), key, known, width=4)
    assert eligible((200).to_bytes(20, "big"), key, [], width=4)


def test_retention_only_grows():
    first = Retention(T0_INT := int(T0) + 100, False)
    assert first.extended(Retention(5, False)) == first
    assert first.extended(Retention(0, True)) == Retention(T0_INT, True)
    assert Retention(0, True).holds(10**12)


def test_a_lapsed_lease_frees_after_the_grace_only():
    life = FragmentLife(stored_at=T0, leased_until=T0 + 10)
    assert decide(life, T0 + 10 + DEFAULT_GRACE - 1, grace=DEFAULT_GRACE, up_since=T0) is Fate.KEEP
    assert decide(life, T0 + 10 + DEFAULT_GRACE, grace=DEFAULT_GRACE, up_since=T0) is Fate.FREE


def test_a_holder_just_started_waits_a_grace_before_judging():
    life = FragmentLife(stored_at=T0, leased_until=T0 + 10)
    later = T0 + 100 * 86400
    assert decide(life, later, grace=DEFAULT_GRACE, up_since=later - 60) is Fate.KEEP


def test_retention_and_legal_hold_beat_any_lease():
    lapsed = FragmentLife(T0, T0, Retention(int(T0) + 365 * 86400))
    assert decide(lapsed, T0 + 300 * 86400, grace=0, up_since=T0) is Fate.KEEP
    held = FragmentLife(T0, T0, Retention(0, True))
    assert free_at(held, grace=0, up_since=T0) is None


def test_orphans_go_a_grace_after_they_were_stored_and_legacy_fragments_stay():
    assert free_at(FragmentLife(T0, None), grace=5, up_since=T0) == T0 + 5
    assert free_at(FragmentLife(None, None), grace=5, up_since=T0) is None
    assert initial_lease(T0, T0 + 1) == T0 + 1 + LEASE_TTL


def test_one_stewards_share_is_bounded():
    bounds = LeaseBounds(quota_bytes=1000, share=4)
    assert bounds.allows(200, 50)
    assert not bounds.allows(200, 51)


# -- the property ---------------------------------------------------------------------------

TICK = 6 * 3600.0
"""A steward round in the model (renewals and sweeps happen once per tick)."""
HOLDERS = 4
QUOTA = 8
HOSTILE = b"hostile"
HONEST = (b"honest-1", b"honest-2")


@dataclasses.dataclass
class Copy:
    stored_at: float
    obj: int
    leases: dict[bytes, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Holder:
    up: bool = True
    up_since: float = T0
    down_until: float = 0.0
    copies: dict[int, Copy] = dataclasses.field(default_factory=dict)
    retention: dict[int, Retention] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Obj:
    fragments: list[int]
    placement: dict[int, int]
    names: int = 0
    retention: Retention = dataclasses.field(default_factory=Retention)


class World:
    """Objects, names and holders; honest stewards renew what is referenced, a hostile one
    releases and keeps garbage; holders free by :func:`decide`."""

    def __init__(self) -> None:
        self.now = T0
        self.holders = [Holder() for _ in range(HOLDERS)]
        self.objects: list[Obj] = []
        self.next_fragment = 0
        self.garbage_since: dict[tuple[int, int], float] = {}
        self.hostile_kept: set[tuple[int, int]] = set()
        self.bounds = LeaseBounds(QUOTA)

    def referenced(self, obj: int) -> bool:
        o = self.objects[obj]
        return o.names > 0 or o.retention.holds(self.now)

    def wanted(self, holder: int, fragment: int) -> bool:
        copy = self.holders[holder].copies[fragment]
        o = self.objects[copy.obj]
        return o.placement.get(fragment) == holder and self.referenced(copy.obj)

    def put(self, names: int, holders: list[int], interrupted: bool, retain_days: int) -> None:
        obj = len(self.objects)
        fragments = []
        for holder in holders:
            fragment = self.next_fragment
            self.next_fragment += 1
            fragments.append(fragment)
            self._store(holder, fragment, obj, receipt=not interrupted)
        o = Obj(fragments, dict(zip(fragments, holders, strict=True)))
        self.objects.append(o)
        if not interrupted:
            o.names = names
            o.retention = Retention(int(self.now) + retain_days * 86400 if retain_days else 0)

    def _store(self, holder: int, fragment: int, obj: int, *, receipt: bool) -> None:
        h = self.holders[holder]
        if not h.up:
            return
        copy = h.copies.setdefault(fragment, Copy(self.now, obj))
        copy.stored_at = self.now
        if receipt:
            self._lease(holder, fragment, b"self", initial_lease(copy.stored_at, self.now))

    def rename(self, obj: int, delta: int) -> None:
        """One name more (a convergent put of the same bytes: its fragments are stored
        again, and stated) or one fewer."""
        if obj < len(self.objects):
            o = self.objects[obj]
            o.names = max(0, o.names + delta)
            if delta > 0:
                for fragment, holder in o.placement.items():
                    self._store(holder, fragment, obj, receipt=True)

    def retain(self, obj: int, days: int) -> None:
        if obj < len(self.objects):
            o = self.objects[obj]
            o.retention = o.retention.extended(Retention(int(self.now) + days * 86400))

    def repair(self, obj: int, index: int, holder: int) -> None:
        if obj < len(self.objects) and self.objects[obj].fragments:
            o = self.objects[obj]
            fragment = o.fragments[index % len(o.fragments)]
            if self.holders[holder].up:
                o.placement[fragment] = holder
                self._store(holder, fragment, obj, receipt=True)

    def crash(self, holder: int, ticks: int) -> None:
        h = self.holders[holder]
        h.up = False
        h.down_until = self.now + ticks * TICK

    def hostile_release(self, obj: int) -> None:
        """The hostile steward signs leases that are already over on every copy of obj."""
        if obj >= len(self.objects):
            return
        for fragment, holder in self.objects[obj].placement.items():
            copy = self.holders[holder].copies.get(fragment)
            if copy is not None and self.holders[holder].up:
                copy.leases[HOSTILE] = max(copy.leases.get(HOSTILE, 0.0), self.now - 1)

    def hostile_keep(self, holder: int) -> None:
        """The hostile steward starts keeping every garbage copy of ``holder`` it can."""
        for fragment in self.holders[holder].copies:
            if not self.wanted(holder, fragment):
                self.hostile_kept.add((holder, fragment))

    def tick(self) -> None:
        self.now += TICK
        for h in self.holders:
            if not h.up and self.now >= h.down_until:
                h.up, h.up_since = True, self.now
        self._sweep()  # before this round's renewals reach it: the pessimistic order
        self._renew()
        self._track()
        self._check_liveness()

    def _lease(self, holder: int, fragment: int, steward: bytes, expiry: float) -> None:
        copy = self.holders[holder].copies[fragment]
        copy.leases[steward] = max(copy.leases.get(steward, 0.0), expiry)

    def _renew(self) -> None:
        for obj, o in enumerate(self.objects):
            if not self.referenced(obj):
                continue
            for fragment, holder in o.placement.items():
                h = self.holders[holder]
                if h.up and fragment in h.copies:
                    for steward in HONEST:
                        self._lease(holder, fragment, steward, self.now + LEASE_TTL)
                    if o.retention.retain_until or o.retention.legal_hold:
                        h.retention[obj] = h.retention.get(obj, Retention()).extended(o.retention)
        for holder, fragment in sorted(self.hostile_kept):
            h = self.holders[holder]
            if not h.up or fragment not in h.copies:
                continue
            kept = sum(
                1
                for f, c in h.copies.items()
                if f != fragment and c.leases.get(HOSTILE, 0.0) > self.now
            )
            if self.bounds.allows(kept, 1):
                self._lease(holder, fragment, HOSTILE, self.now + 10 * 365 * 86400)
                copy = h.copies[fragment]
                copy.leases[HOSTILE] = min(copy.leases[HOSTILE], self.now + MAX_LEASE_TTL)

    def _track(self) -> None:
        for holder, h in enumerate(self.holders):
            for fragment in h.copies:
                key = (holder, fragment)
                if self.wanted(holder, fragment):
                    self.garbage_since.pop(key, None)
                else:
                    self.garbage_since.setdefault(key, self.now)

    def _sweep(self) -> None:
        for holder, h in enumerate(self.holders):
            if not h.up:
                continue
            for fragment, copy in list(h.copies.items()):
                life = FragmentLife(
                    copy.stored_at,
                    max(copy.leases.values()) if copy.leases else None,
                    h.retention.get(copy.obj, Retention()),
                )
                if decide(life, self.now, grace=DEFAULT_GRACE, up_since=h.up_since) is Fate.FREE:
                    assert not self.wanted(holder, fragment), (
                        f"freed fragment {fragment} of object {copy.obj} on holder {holder} "
                        f"while it is referenced or retained"
                    )
                    del h.copies[fragment]
                    self.garbage_since.pop((holder, fragment), None)
            hostile = sum(1 for c in h.copies.values() if c.leases.get(HOSTILE, 0.0) > self.now)
            assert hostile <= self.bounds.per_steward

    def _check_liveness(self) -> None:
        for (holder, fragment), since in self.garbage_since.items():
            h = self.holders[holder]
            if not h.up or (holder, fragment) in self.hostile_kept:
                continue
            retained = h.retention.get(h.copies[fragment].obj, Retention())
            if retained.legal_hold:
                continue
            deadline = max(since + LEASE_TTL, h.up_since, retained.retain_until) + DEFAULT_GRACE
            assert self.now <= deadline + TICK, (
                f"garbage fragment {fragment} on holder {holder} outlived its deadline by "
                f"{(self.now - deadline) / 3600:.0f} h"
            )


holder_ids = st.integers(0, HOLDERS - 1)
objects = st.integers(0, 12)
operations = st.one_of(
    st.tuples(
        st.just("put"),
        st.integers(1, 2),
        st.lists(holder_ids, min_size=1, max_size=3),
        st.booleans(),
        st.sampled_from([0, 0, 0, 20]),
    ),
    st.tuples(st.just("name"), objects),
    st.tuples(st.just("unname"), objects),
    st.tuples(st.just("overwrite"), objects, st.lists(holder_ids, min_size=1, max_size=3)),
    st.tuples(st.just("retain"), objects, st.integers(1, 30)),
    st.tuples(st.just("repair"), objects, st.integers(0, 2), holder_ids),
    st.tuples(st.just("crash"), holder_ids, st.integers(1, 60)),
    st.tuples(st.just("release"), objects),
    st.tuples(st.just("keep"), holder_ids),
    st.tuples(st.just("wait"), st.integers(1, 30)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, max_size=40))
def test_nothing_referenced_is_freed_and_garbage_goes_in_time(script):
    world = World()
    for op, *args in script:
        if op == "put":
            names, holders, interrupted, retain_days = args
            world.put(names, holders, interrupted, retain_days)
        elif op in ("name", "unname"):
            world.rename(args[0], 1 if op == "name" else -1)
        elif op == "overwrite":
            world.rename(args[0], -1)
            world.put(1, args[1], False, 0)
        elif op == "retain":
            world.retain(*args)
        elif op == "repair":
            world.repair(*args)
        elif op == "crash":
            world.crash(*args)
        elif op == "release":
            world.hostile_release(args[0])
        elif op == "keep":
            world.hostile_keep(args[0])
        for _ in range(args[0] if op == "wait" else 1):
            world.tick()
    settle = int((30 * 86400 + LEASE_TTL + DEFAULT_GRACE + 61 * TICK) / TICK) + 2
    for _ in range(settle):
        world.tick()
    for holder, h in enumerate(world.holders):
        for fragment in h.copies:
            assert world.wanted(holder, fragment) or (holder, fragment) in world.hostile_kept
