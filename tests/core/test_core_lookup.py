"""Iterative lookups: exact on a static network, robust to dead peers, terminating on any input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.contact import ID_SPACE, Contact, id_from_long, xor_distance
from p2pstore.core.lookup import Lookup
from p2pstore.core.routing import RoutingTable
from p2pstore.errors import LocalProtocolError

K = 20


def contact(node_id: bytes) -> Contact:
    return Contact(node_id, f"mem:{node_id.hex()[:8]}", "dc-a", "FR-GES")


class StaticNetwork:
    """Peers with tables filled by hearing from every other peer once, in random order."""

    def __init__(self, size: int, seed: int, k: int = K) -> None:
        rng = random.Random(seed)
        self.ids = sorted({id_from_long(rng.randrange(ID_SPACE)) for _ in range(size)})
        self.contacts = {node_id: contact(node_id) for node_id in self.ids}
        self.tables = {}
        for node_id in self.ids:
            table = RoutingTable(node_id, k=k)
            others = [c for c in self.contacts.values() if c.id != node_id]
            rng.shuffle(others)
            for other in others:
                table.update(other, now=0.0)
            self.tables[node_id] = table

    def oracle(self, target: bytes, alive, exclude: bytes, k: int = K) -> list[bytes]:
        live = [i for i in self.ids if i in alive and i != exclude]
        return sorted(live, key=lambda i: xor_distance(i, target))[:k]


def drive(lookup: Lookup, answer, rng: random.Random) -> list[Contact]:
    """Run a lookup to the end, completing in-flight queries in random order; returns every
    contact it was told to query (queries still in flight at the end are simply dropped)."""
    sent: list[Contact] = []
    pending: list[Contact] = []
    while not lookup.done:
        fresh = lookup.next_queries()
        sent.extend(fresh)
        pending.extend(fresh)
        assert len(lookup.in_flight) <= lookup.alpha
        assert pending, "a lookup that is not done must have something in flight"
        node = pending.pop(rng.randrange(len(pending)))
        answer(lookup, node)
    assert lookup.next_queries() == []
    return sent


@pytest.fixture(scope="module")
def network() -> StaticNetwork:
    return StaticNetwork(300, seed=11)


def test_lookups_find_the_exact_k_closest_on_a_static_network(network):
    rng = random.Random(5)
    alive = set(network.ids)
    hops, queries = [], []
    for _ in range(60):
        source = rng.choice(network.ids)
        target = (
            id_from_long(rng.randrange(ID_SPACE)) if rng.random() < 0.5 else rng.choice(network.ids)
        )
        table = network.tables[source]
        lookup = Lookup(target, table.closest(target), local_id=source)

        def answer(lk, node, target=target):
            lk.on_reply(node.id, network.tables[node.id].closest(target))

        drive(lookup, answer, rng)
        result = lookup.result()
        assert result.complete and result.failed == 0
        assert [c.id for c in result.closest] == network.oracle(target, alive, source)
        hops.append(result.hops)
        queries.append(result.queried)
    assert min(hops) >= 1 and max(hops) <= 6
    assert max(queries) <= 8 * K


@pytest.mark.parametrize("failures_seen", [1, 3], ids=["stale", "dropped"])
def test_lookups_route_around_peers_that_vanished(failures_seen):
    """30% of peers vanish; every survivor's table has since seen each dead contact fail
    ``failures_seen`` times (stale after 1, dropped after max_failures = 3).  Survivors answer
    FIND_NODE without stale contacts.  (With tables that have noticed nothing, replies are
    padded with dead contacts and hide the live ones just beyond the k nearest.)"""
    network = StaticNetwork(300, seed=11)
    rng = random.Random(9)
    dead = set(rng.sample(network.ids, k=len(network.ids) * 3 // 10))
    alive = set(network.ids) - dead
    for node_id in alive:
        table = network.tables[node_id]
        for gone in dead:
            for _ in range(failures_seen):
                table.record_failure(gone, now=1.0)
        assert all(table.liveness(c.id).stale for c in table.contacts() if c.id in dead)
    exact = 0
    runs = 60
    for _ in range(runs):
        source = rng.choice(sorted(alive))
        target = id_from_long(rng.randrange(ID_SPACE))
        lookup = Lookup(target, network.tables[source].closest(target), local_id=source)

        def answer(lk, node, target=target):
            if node.id in dead:
                lk.on_failure(node.id)
            else:
                lk.on_reply(node.id, network.tables[node.id].closest(target, include_stale=False))

        sent = drive(lookup, answer, rng)
        result = lookup.result()
        assert result.failed <= sum(c.id in dead for c in sent)
        assert all(c.id in alive for c in result.closest)
        exact += [c.id for c in result.closest] == network.oracle(target, alive, source)
    assert exact >= 0.95 * runs


def test_a_value_lookup_stops_at_the_first_holder(network):
    rng = random.Random(2)
    source, holder = network.ids[0], network.ids[150]
    lookup = Lookup(
        holder, network.tables[source].closest(holder), local_id=source, find_value=True
    )

    def answer(lk, node):
        if node.id == holder:
            lk.on_value(node.id, b"manifest")
        else:
            lk.on_reply(node.id, network.tables[node.id].closest(holder))

    drive(lookup, answer, rng)
    result = lookup.result()
    assert result.value == b"manifest" and result.value_from.id == holder
    assert holder not in {c.id for c in result.closest}
    assert result.hops >= 1
    for late in lookup.in_flight:  # outcomes of abandoned queries are ignored
        lookup.on_failure(late.id)
    assert lookup.result() == result


def test_seeds_that_are_the_answer_take_one_hop():
    ids = [id_from_long(i) for i in range(1, 6)]
    local = id_from_long(ID_SPACE - 1)
    lookup = Lookup(id_from_long(0), [contact(i) for i in ids], local_id=local, k=3, alpha=5)
    first = lookup.next_queries()
    assert [c.id for c in first] == ids[:3]  # only the k closest are worth asking
    for node in first:
        lookup.on_reply(node.id, [contact(local), contact(ids[4])])
    assert lookup.done
    result = lookup.result()
    assert [c.id for c in result.closest] == ids[:3]
    assert (result.hops, result.queried, result.failed) == (1, 3, 0)


def test_a_failure_is_replaced_by_the_next_closest():
    ids = [id_from_long(i) for i in range(1, 6)]
    lookup = Lookup(
        id_from_long(0), [contact(i) for i in ids], local_id=id_from_long(99), k=2, alpha=1
    )
    (first,) = lookup.next_queries()
    assert lookup.next_queries() == []  # alpha = 1
    lookup.on_failure(first.id)
    (second,) = lookup.next_queries()
    lookup.on_reply(second.id, [])
    (third,) = lookup.next_queries()
    assert [first.id, second.id, third.id] == ids[:3]
    lookup.on_reply(third.id, [])
    assert [c.id for c in lookup.result().closest] == ids[1:3]


def test_misuse_is_a_local_protocol_error():
    local = id_from_long(0)
    lookup = Lookup(id_from_long(5), [contact(id_from_long(4))], local_id=local)
    with pytest.raises(LocalProtocolError):
        lookup.result()
    with pytest.raises(LocalProtocolError):
        lookup.on_reply(id_from_long(4), [])  # not queried yet
    with pytest.raises(LocalProtocolError):
        lookup.on_value(id_from_long(4), b"x")  # FIND_NODE lookup
    with pytest.raises(LocalProtocolError):
        Lookup(id_from_long(5), [], local_id=local, alpha=0)
    empty = Lookup(id_from_long(5), [contact(local)], local_id=local)
    assert empty.done and empty.result().closest == () and empty.next_queries() == []


# --- termination on hostile inputs ---------------------------------------------------------------

behaviours = st.sampled_from(["honest", "liar", "silent", "inventor"])


@settings(max_examples=120, deadline=None)
@given(
    universe=st.lists(st.integers(1, 2**16), min_size=1, max_size=40, unique=True),
    roles=st.lists(behaviours, min_size=40, max_size=40),
    k=st.integers(1, 6),
    alpha=st.integers(1, 4),
    order_seed=st.integers(0, 2**32),
    max_queries=st.one_of(st.none(), st.integers(1, 30)),
)
def test_lookups_terminate_on_any_reply_graph(universe, roles, k, alpha, order_seed, max_queries):
    """Honest peers answer from the universe; liars answer random universe ids (and the local
    id, and the target); silent peers time out; inventors answer ids nobody has, forever."""
    rng = random.Random(order_seed)
    ids = [id_from_long(v << 140) for v in universe]
    role = {node_id: roles[i % len(roles)] for i, node_id in enumerate(ids)}
    local, target = id_from_long(7), id_from_long(rng.randrange(ID_SPACE))
    seen: dict[bytes, Contact] = {}

    def told(contacts):  # what the lookup will take from a reply: its k nearest the target
        unique = {c.id: c for c in contacts}.values()
        for c in sorted(unique, key=lambda c: xor_distance(c.id, target))[:k]:
            seen.setdefault(c.id, c)
        return contacts

    seeds = [contact(i) for i in rng.sample(ids, k=min(len(ids), 3))]
    seen.update((c.id, c) for c in seeds)
    lookup = Lookup(target, seeds, local_id=local, k=k, alpha=alpha, max_queries=max_queries)
    queried: list[bytes] = []
    failed: set[bytes] = set()

    def answer(lk, node):
        queried.append(node.id)
        kind = role.get(node.id, "silent")
        if kind == "silent":
            failed.add(node.id)
            lk.on_failure(node.id)
        elif kind == "honest":
            lk.on_reply(
                node.id,
                told(sorted((contact(i) for i in ids), key=lambda c: c.distance_to(node))[:k]),
            )
        elif kind == "liar":
            picks = [contact(i) for i in rng.sample(ids, k=min(len(ids), 2 * k))]
            lk.on_reply(node.id, told([*picks, contact(local), contact(target), picks[0]]))
        else:
            made_up = [contact(id_from_long(rng.randrange(ID_SPACE))) for _ in range(k)]
            for c in made_up:
                role[c.id] = "inventor"
            lk.on_reply(node.id, told(made_up))

    budget = 8 * k if max_queries is None else max_queries
    sent = [c.id for c in drive(lookup, answer, rng)]
    result = lookup.result()
    assert result.queried == len(sent) <= budget
    assert len(set(sent)) == len(sent)  # nobody is asked twice
    assert set(queried) <= set(sent)
    assert local not in sent and local not in {c.id for c in result.closest}
    closest = [c.id for c in result.closest]
    assert len(closest) <= k
    assert closest == sorted(closest, key=lambda i: xor_distance(i, target))
    assert set(closest) <= set(queried) - failed
    assert result.failed == len(failed)
    if result.complete:  # the k closest of everything it heard of that did not fail
        heard = sorted(set(seen) - failed - {local}, key=lambda i: xor_distance(i, target))
        assert closest == heard[:k]
