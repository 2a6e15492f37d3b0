"""A stateful hypothesis test of the routing table against a small model of its promises."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from p2pstore.core.contact import ID_BITS, ID_SPACE, Contact, id_from_long, long_id
from p2pstore.core.routing import RoutingTable, UpdateKind


def at_depth(base: int, shared_bits: int, noise: bytes) -> int:
    """An id sharing exactly ``shared_bits`` leading bits with ``base``: the bucket it lands in
    is chosen directly, so far buckets fill up (and near ones split) in few steps."""
    if shared_bits == ID_BITS:
        return base
    below = ID_BITS - shared_bits - 1
    return base ^ (1 << below) ^ (long_id(noise) & ((1 << below) - 1))


class RoutingTableMachine(RuleBasedStateMachine):
    ids = Bundle("ids")

    @initialize(
        local=st.integers(0, ID_SPACE - 1),
        k=st.integers(1, 4),
        max_failures=st.integers(1, 3),
        cache=st.integers(0, 3),
    )
    def start(self, local, k, max_failures, cache):
        self.local = local
        self.table = RoutingTable(
            id_from_long(local), k=k, max_failures=max_failures, replacement_cache=cache
        )
        self.now = 0.0
        self.failures: dict[bytes, int] = {}  # model: consecutive failures of stored contacts

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def stored(self) -> set[bytes]:
        return {c.id for c in self.table.contacts()}

    @rule(
        target=ids,
        fresh=st.lists(
            st.tuples(
                st.one_of(st.integers(0, 3), st.integers(0, ID_BITS)),
                st.binary(min_size=20, max_size=20),
            ),
            min_size=1,
            max_size=8,
        ),
    )
    def hear_from_new_peers(self, fresh):
        new = [id_from_long(at_depth(self.local, shared, noise)) for shared, noise in fresh]
        for node_id in new:
            self.update(node_id, port=1)
        return multiple(*new)

    @rule(node_id=ids, port=st.integers(1, 3))
    def hear_again(self, node_id, port):
        self.update(node_id, port)

    def update(self, node_id: bytes, port: int) -> None:
        before = self.stored()
        result = self.table.update(Contact(node_id, f"h:{port}", "dc", "r"), self.tick())
        after = self.stored()
        if long_id(node_id) == self.local:
            assert result.kind is UpdateKind.IGNORED
        elif result.kind in (UpdateKind.ADDED, UpdateKind.REFRESHED):
            assert node_id in after
            assert (result.kind is UpdateKind.REFRESHED) == (node_id in before)
            assert self.table.get(node_id).address == f"h:{port}"  # latest address kept
        else:
            assert node_id not in after
            assert len(self.table.bucket_for(node_id).nodes) == self.table.k
            if result.kind is UpdateKind.PING_NEEDED:
                assert result.ping.id in after
                assert self.table.bucket_for(result.ping.id) is self.table.bucket_for(node_id)
        assert before <= after  # updates never drop anyone
        self.failures[node_id] = 0
        for promoted in after - before:
            self.failures[promoted] = 0

    @rule(node_id=ids)
    def record_success(self, node_id):
        known = node_id in self.stored() or node_id in {c.id for c in self.table.replacements()}
        assert self.table.record_success(node_id, self.tick()) == known
        self.failures[node_id] = 0

    def fail(self, node_id: bytes, dropped: bool, before: set[bytes]) -> None:
        after = self.stored()
        if node_id in before:
            self.failures[node_id] = self.failures.get(node_id, 0) + 1
            assert dropped == (self.failures[node_id] >= self.table.max_failures)
            assert self.table.liveness(node_id) is None or self.table.liveness(node_id).stale
        else:
            assert not dropped
        assert before - after == ({node_id} if dropped else set())
        assert len(after - before) <= 1  # at most one waiting contact promoted
        for promoted in after - before:
            self.failures[promoted] = 0
        if dropped:
            self.failures.pop(node_id, None)

    @rule(node_id=ids)
    def record_failure(self, node_id):
        before = self.stored()
        self.fail(node_id, self.table.record_failure(node_id, self.tick()), before)

    @rule(node_id=ids, alive=st.booleans())
    def ping_result(self, node_id, alive):
        before = self.stored()
        dropped = self.table.ping_result(node_id, alive, self.tick())
        if alive:
            assert not dropped and self.stored() == before
            self.failures[node_id] = 0
        else:
            self.fail(node_id, dropped, before)

    @precondition(lambda self: len(self.table) > 0)
    @rule(data=st.data())
    def remove(self, data):
        before = self.stored()
        victim = data.draw(st.sampled_from(sorted(before)))
        assert self.table.remove(victim)
        assert victim not in self.stored()
        for promoted in self.stored() - before:
            self.failures[promoted] = 0

    @rule(
        target_id=st.one_of(ids, st.integers(0, ID_SPACE - 1).map(id_from_long)),
        count=st.integers(0, 25),
        exclude_some=st.booleans(),
    )
    def closest_is_brute_force(self, target_id, count, exclude_some):
        contents = self.table.contacts()
        exclude = {c.id for c in contents[::2]} if exclude_some else set()
        expected = sorted(
            (c for c in contents if c.id not in exclude),
            key=lambda c: c.long_id ^ long_id(target_id),
        )[:count]
        assert self.table.closest(target_id, count, exclude=exclude) == expected
        # Without stale contacts: those whose failures the model counts since last heard from.
        live = [c for c in contents if c.id not in exclude and not self.failures.get(c.id)]
        expected_live = sorted(live, key=lambda c: c.long_id ^ long_id(target_id))[:count]
        assert (
            self.table.closest(target_id, count, exclude=exclude, include_stale=False)
            == expected_live
        )

    @invariant()
    def buckets_are_well_formed(self):
        table = self.table
        assert table.buckets[0].range[0] == 0 and table.buckets[-1].range[1] == ID_SPACE
        seen: set[bytes] = set()
        for left, right in itertools.pairwise(table.buckets):
            assert left.range[1] == right.range[0]
        for bucket in table.buckets:
            assert len(bucket.nodes) <= table.k
            assert len(bucket.replacement_nodes) <= table.replacement_cache
            assert not bucket.replacement_nodes or len(bucket.nodes) == table.k
            depth = bucket.depth()
            if not bucket.covers(self.local):  # only the local id's path was ever split
                shift = ID_BITS - depth
                assert bucket.range[0] >> shift == (self.local >> shift) ^ 1
            for node in [*bucket.nodes.values(), *bucket.replacement_nodes.values()]:
                assert bucket.covers(node.long_id)
                assert node.id not in seen
                seen.add(node.id)
        assert id_from_long(self.local) not in seen
        assert len(table) == len(table.contacts())


RoutingTableMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRoutingTable = RoutingTableMachine.TestCase
