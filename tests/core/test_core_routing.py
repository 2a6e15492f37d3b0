"""Routing table: behaviour, and one check per ``kademlia.routing`` defect we fix.

Each defect check runs on our table and on the unmodified package; the package run is a
strict xfail, so the test fails if the package ever behaves (and our subclass is no longer needed).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable as PackageTable
from kademlia.storage import ForgetfulStorage

from p2pstore.core.contact import ID_SPACE, Contact, id_from_long, xor_distance
from p2pstore.core.routing import Bucket, RoutingTable, Update, UpdateKind
from p2pstore.errors import LocalProtocolError

LOCAL = id_from_long(0)
TOP = 1 << 159  # first id of the upper half of the id space


def contact(value: int) -> Contact:
    return Contact(id_from_long(value), f"10.0.0.{value % 250}:7400", "dc-a", "FR-GES")


class StubProtocol:
    """What kademlia.routing.RoutingTable calls on its protocol."""

    def __init__(self) -> None:
        self.pinged: list[bytes] = []

    async def _pong(self) -> None:
        return None

    def call_ping(self, node: Node):
        self.pinged.append(node.id)
        return self._pong()


@pytest.fixture
def scheduled(monkeypatch):
    """Record (and close) coroutines handed to asyncio.ensure_future instead of running them."""
    calls = []

    def fake_ensure_future(coro, *args, **kwargs):
        calls.append(coro)
        coro.close()

    monkeypatch.setattr(asyncio, "ensure_future", fake_ensure_future)
    return calls


# --- adapters: the same few operations on our table and on the package's -----------------------


class Ours:
    def __init__(self, local: bytes, k: int) -> None:
        self.table = RoutingTable(local, k=k)

    def add(self, value: int) -> bytes | None:
        update = self.table.update(contact(value), now=1.0)
        return update.ping.id if update.ping is not None else None

    def known(self, value: int) -> bool:
        return id_from_long(value) in self.table

    def ids(self) -> list[bytes]:
        return [c.id for c in self.table.contacts()]

    def nearest(self, target: bytes, count: int) -> list[bytes]:
        return [c.id for c in self.table.closest(target, count)]


class Package:
    def __init__(self, local: bytes, k: int) -> None:
        self.protocol = StubProtocol()
        self.table = PackageTable(self.protocol, k, Node(local))

    def add(self, value: int) -> bytes | None:
        before = len(self.protocol.pinged)
        result = self.table.add_contact(Node(id_from_long(value)))
        return result or (self.protocol.pinged[-1] if len(self.protocol.pinged) > before else None)

    def known(self, value: int) -> bool:
        return not self.table.is_new_node(Node(id_from_long(value)))

    def ids(self) -> list[bytes]:
        return [n.id for b in self.table.buckets for n in b.get_nodes()]

    def nearest(self, target: bytes, count: int) -> list[bytes]:
        return [n.id for n in self.table.find_neighbors(Node(target), count)]


both = pytest.mark.parametrize(
    "impl",
    [
        pytest.param(Ours, id="p2pstore"),
        pytest.param(
            Package, id="kademlia", marks=pytest.mark.xfail(strict=True, raises=AssertionError)
        ),
    ],
)


@both
def test_an_id_on_a_split_point_is_found_where_it_was_stored(impl, scheduled):
    # The package splits [0, 2**160] into [0, 2**159] and [2**159 + 1, 2**160] but looks ids up
    # with `long_id < upper`: 2**159 is stored in the lower bucket and searched in the upper.
    table = impl(LOCAL, k=2)
    for value in (TOP + 5, TOP, 1):  # the third add splits the full root bucket
        table.add(value)
    assert all(table.known(v) for v in (TOP + 5, TOP, 1))
    table.add(TOP)  # heard from again: must refresh, not store a second copy
    assert sorted(table.ids()) == sorted(set(table.ids()))


@both
def test_no_clock_is_read(impl, scheduled, monkeypatch):
    def no_clock() -> float:
        raise AssertionError("the routing table read the clock")

    monkeypatch.setattr(time, "monotonic", no_clock)
    monkeypatch.setattr(time, "time", no_clock)
    table = impl(LOCAL, k=2)
    for value in (TOP + 1, TOP + 2, 3, 4, 5):
        table.add(value)
    table.nearest(id_from_long(7), 2)


@both
def test_a_full_bucket_returns_whom_to_ping_and_schedules_nothing(impl, scheduled):
    # Far half [2**159, 2**160) fills with A, B; C falls there too and the bucket cannot split
    # (chosen so that even the package's prefix rule refuses: A and B share 5 leading bits).
    a, b, c = (0b111110 << 154) | 1, (0b111111 << 154) | 1, (0b111110 << 154) | 2
    table = impl(LOCAL, k=2)
    assert table.add(a) is None
    assert table.add(b) is None
    assert table.add(c) == id_from_long(a)
    assert scheduled == []


def test_package_fire_and_forgets_the_ping(scheduled):
    """What the check above catches: the package's add_contact returns nothing and hands
    ``call_ping(oldest)`` to asyncio itself, so a driver cannot act on the answer."""
    a, b, c = (0b111110 << 154) | 1, (0b111111 << 154) | 1, (0b111110 << 154) | 2
    protocol = StubProtocol()
    table = PackageTable(protocol, 2, Node(LOCAL))
    results = [table.add_contact(Node(id_from_long(v))) for v in (a, b, c)]
    assert results == [None, None, None]
    assert protocol.pinged == [id_from_long(a)]
    assert len(scheduled) == 1


class OursWithFailures:
    def __init__(self) -> None:
        self.table = RoutingTable(LOCAL, k=4, max_failures=3)
        self.table.update(contact(TOP), now=0.0)

    def miss(self) -> None:
        self.table.record_failure(id_from_long(TOP), now=1.0)

    def present(self) -> bool:
        return id_from_long(TOP) in self.table


class PackageWithFailures:
    def __init__(self) -> None:
        self.node = Node(id_from_long(TOP))
        self.protocol = KademliaProtocol(Node(LOCAL), ForgetfulStorage(), 4)
        self.protocol.router.add_contact(self.node)

    def miss(self) -> None:
        self.protocol.handle_call_response((False, None), self.node)

    def present(self) -> bool:
        return not self.protocol.router.is_new_node(self.node)


@pytest.mark.parametrize(
    "impl",
    [
        pytest.param(OursWithFailures, id="p2pstore"),
        pytest.param(
            PackageWithFailures,
            id="kademlia",
            marks=pytest.mark.xfail(strict=True, raises=AssertionError),
        ),
    ],
)
def test_one_missed_reply_does_not_evict(impl):
    table = impl()
    assert table.present()
    table.miss()
    assert table.present()
    table.miss()
    assert table.present()


@both
def test_only_the_bucket_holding_the_local_id_splits(impl, scheduled):
    # A = 10..., B = 11..., C = 101...: all in the half without the local id (0...).  With k = 2
    # that half must keep 2 contacts whatever the arrival order; the package splits it when its
    # current contents happen to share a prefix length not divisible by 5.
    values = ((0b10 << 158) | 7, (0b11 << 158) | 7, (0b101 << 157) | 9)
    shapes = set()
    for order in itertools.permutations(values):
        table = impl(LOCAL, k=2)
        for value in order:
            table.add(value)
        far = [i for i in table.ids() if i[0] & 0x80]
        assert len(far) == 2
        shapes.add(len(table.table.buckets))
    assert len(shapes) == 1


@both
def test_closest_is_the_exact_xor_order(impl, scheduled):
    rng = random.Random(7)
    local = id_from_long(rng.randrange(ID_SPACE))
    table = impl(local, k=4)
    for _ in range(300):
        table.add(rng.randrange(ID_SPACE))
    stored = table.ids()
    for _ in range(50):
        target = id_from_long(rng.randrange(ID_SPACE))
        expected = sorted(stored, key=lambda i: xor_distance(i, target))[:4]
        assert table.nearest(target, 4) == expected


# --- our table's own behaviour ------------------------------------------------------------------


def test_update_outcomes_and_eviction_ping_cycle():
    table = RoutingTable(LOCAL, k=2, max_failures=2)
    a, b, c, d = (contact(v) for v in (TOP | 1, TOP | 2, TOP | 3, TOP | 4))
    assert table.update(Contact(LOCAL, "me:1", "dc", "r"), 0.0).kind is UpdateKind.IGNORED
    assert table.update(a, 0.0).kind is UpdateKind.ADDED
    assert table.update(b, 1.0).kind is UpdateKind.ADDED
    assert table.update(a, 2.0).kind is UpdateKind.REFRESHED  # a is now the most recent
    first = table.update(c, 3.0)
    assert first == Update(UpdateKind.PING_NEEDED, b)
    assert table.update(d, 4.0).kind is UpdateKind.QUEUED  # one ping per bucket at a time
    assert [x.id for x in table.replacements()] == [c.id, d.id]
    assert table.ping_result(b.id, alive=True, now=5.0) is False
    assert [x.id for x in table.contacts()] == [a.id, b.id]
    again = table.update(c, 6.0)
    assert again == Update(UpdateKind.PING_NEEDED, a)
    assert table.ping_result(a.id, alive=False, now=7.0) is False  # stale, not yet dropped
    assert table.liveness(a.id).stale
    assert table.ping_result(a.id, alive=False, now=8.0) is True
    # the most recently seen waiting contact (c, re-heard at 6.0) took a's place
    assert {x.id for x in table.contacts()} == {b.id, c.id}
    assert [x.id for x in table.replacements()] == [d.id]
    assert table.liveness(a.id) is None


def test_success_clears_staleness_and_failures_must_be_consecutive():
    table = RoutingTable(LOCAL, k=2, max_failures=2)
    a = contact(TOP | 1)
    table.update(a, 0.0)
    assert table.record_failure(a.id, 1.0) is False
    assert table.liveness(a.id) == table.liveness(a.id).__class__(1, 0.0, 1.0)
    assert table.record_success(a.id, 2.0) is True
    assert not table.liveness(a.id).stale
    assert table.record_failure(a.id, 3.0) is False
    assert table.record_failure(a.id, 4.0) is True
    assert a.id not in table
    assert table.record_failure(a.id, 5.0) is False  # unknown ids are ignored


def test_a_failing_waiting_contact_is_forgotten_and_the_cache_is_bounded():
    table = RoutingTable(LOCAL, k=1, replacement_cache=2)
    table.update(contact(TOP | 1), 0.0)
    for value in (TOP | 2, TOP | 3, TOP | 4):
        table.update(contact(value), 1.0)
    assert [c.id for c in table.replacements()] == [id_from_long(TOP | 3), id_from_long(TOP | 4)]
    assert table.liveness(id_from_long(TOP | 2)) is None
    assert table.record_failure(id_from_long(TOP | 4), 2.0) is False
    assert [c.id for c in table.replacements()] == [id_from_long(TOP | 3)]
    assert table.remove(id_from_long(TOP | 1)) is True
    assert [c.id for c in table.contacts()] == [id_from_long(TOP | 3)]


def test_buckets_are_prefix_aligned_and_refresh_targets_fall_in_stale_ones():
    rng = random.Random(3)
    table = RoutingTable(LOCAL, k=2, now=0.0)
    for _ in range(64):
        table.update(contact(rng.randrange(ID_SPACE)), now=0.0)
    assert len(table.buckets) > 3
    for bucket in table.buckets:
        lower, upper = bucket.range
        width = upper - lower
        assert width & (width - 1) == 0 and lower % width == 0
    fresh = table.buckets[-1]
    table.mark_refreshed(id_from_long(fresh.range[0]), now=50.0)
    targets = table.buckets_to_refresh(now=100.0, interval=60.0, rng=random.Random(1))
    assert len(targets) == len(table.buckets) - 1
    for target in targets:
        assert table.bucket_for(target) is not fresh
    assert table.buckets_to_refresh(now=100.0, interval=60.0, rng=random.Random(1)) == targets
    assert table.buckets_to_refresh(now=59.0, interval=60.0, rng=random.Random(1)) == []


def test_split_keeps_waiting_contacts_and_promotes_them_where_there_is_room():
    bucket = Bucket(0, ID_SPACE, 2, 4, now=5.0)
    for value in (TOP | 1, TOP | 2):
        assert bucket.add_node(contact(value))
    assert not bucket.add_node(contact(3))
    low, high = bucket.split()
    assert [n.long_id for n in low.nodes.values()] == [3]
    assert len(high.nodes) == 2 and not low.replacement_nodes
    assert low.last_updated == high.last_updated == 5.0
    assert (low.depth(), high.depth()) == (1, 1)
    with pytest.raises(LocalProtocolError):
        Bucket(4, 5, 2, 2, now=0.0).split()
    with pytest.raises(LocalProtocolError):
        bucket.touch_last_updated()


def test_closest_honours_count_and_exclude():
    table = RoutingTable(LOCAL, k=3)
    for value in (1, 2, 3, TOP | 1):
        table.update(contact(value), 0.0)
    target = id_from_long(2)
    assert [c.long_id for c in table.closest(target)] == [2, 3, 1]
    assert [c.long_id for c in table.closest(target, 2, exclude=[target])] == [3, 1]
    assert table.closest(target, 0) == []


def test_contact_is_a_validated_immutable_node():
    c = contact(5)
    assert isinstance(c, Node) and c.long_id == 5
    assert c.distance_to(Node(id_from_long(3))) == 6
    with pytest.raises(AttributeError):
        c.address = "elsewhere:1"  # type: ignore[misc]
    with pytest.raises(LocalProtocolError):
        Contact(b"\x00" * 19, "a:1", "dc", "r")
    with pytest.raises(LocalProtocolError):
        Contact(LOCAL, "", "dc", "r")
    with pytest.raises(LocalProtocolError):
        RoutingTable(LOCAL, k=0)
    with pytest.raises(LocalProtocolError):
        RoutingTable(LOCAL).update(Node(LOCAL), 0.0)  # type: ignore[arg-type]
