"""The simulated DHT: the real routing table and lookup, driven synchronously, give exact,
short lookups on a mesh built only by joining, and the same seed gives the same trace."""

from __future__ import annotations

import math
import random

import pytest

from p2pstore.core.contact import xor_distance
from p2pstore.errors import ConfigError, LocalProtocolError
from p2pstore.sim import SimulatedDht

N = 200
K = 20
LOOKUPS = 100


@pytest.fixture(scope="module")
def mesh() -> SimulatedDht:
    return SimulatedDht(N, k=K, seed=7)


def random_lookups(sim: SimulatedDht, count: int, seed: int):
    """(asker, result) for ``count`` lookups from random live peers to random targets."""
    rng = random.Random(seed)
    live = sim.live_peers()
    out = []
    for _ in range(count):
        asker = rng.choice(live)
        out.append((asker, sim.lookup(asker, rng.randbytes(20))))
    return out


def trace(sim: SimulatedDht, seed: int) -> list[tuple[int, int, int, tuple[bytes, ...]]]:
    return [
        (r.hops, r.queried, r.failed, tuple(c.id for c in r.closest))
        for _, r in random_lookups(sim, 30, seed)
    ]


def test_same_seed_same_mesh_and_same_lookups():
    first, second = SimulatedDht(N, seed=11), SimulatedDht(N, seed=11)
    assert first.ids == second.ids
    assert (first.rpcs, first.pings, first.now) == (second.rpcs, second.pings, second.now)
    for a, b in zip(first.tables, second.tables, strict=True):
        assert [c.id for c in a.contacts()] == [c.id for c in b.contacts()]
    assert trace(first, 3) == trace(second, 3)
    third = SimulatedDht(N, seed=12)
    assert third.ids != first.ids
    assert trace(third, 3) != trace(first, 3)


def test_lookups_find_the_true_k_closest_in_few_hops(mesh: SimulatedDht):
    results = random_lookups(mesh, LOOKUPS, seed=1)
    exact = sum(mesh.is_exact(asker, result) for asker, result in results)
    assert exact >= 0.99 * LOOKUPS
    mean_hops = sum(result.hops for _, result in results) / LOOKUPS
    assert 1 <= mean_hops <= math.log2(N) + 2
    assert all(result.complete and result.failed == 0 for _, result in results)
    # a query budget of k * alpha would already be generous on a healthy mesh of this size
    assert sum(result.queried for _, result in results) / LOOKUPS < K * 3


def test_looking_up_a_peer_finds_it_first_unless_it_asks(mesh: SimulatedDht):
    target = 5
    result = mesh.lookup(0, mesh.ids[target])
    assert result.closest[0].id == mesh.ids[target]
    own = mesh.lookup(target, mesh.ids[target])
    assert mesh.ids[target] not in [c.id for c in own.closest]
    assert [c.id for c in own.closest] == mesh.oracle(target, mesh.ids[target])


def test_tables_hold_only_other_real_peers_at_most_k_per_bucket(mesh: SimulatedDht):
    known = set(mesh.ids)
    for index, table in enumerate(mesh.tables):
        ids = [c.id for c in table.contacts()] + [c.id for c in table.replacements()]
        assert mesh.ids[index] not in ids
        assert set(ids) <= known
        assert all(len(bucket.nodes) <= K for bucket in table.buckets)
        # every peer heard from at least its bootstrap peer and the peers it queried
        assert len(table) >= min(K, N - 1)


def test_oracle_is_sorted_by_distance_and_leaves_out_the_asker(mesh: SimulatedDht):
    target = mesh.ids[9]
    answer = mesh.oracle(9, target, 10)
    assert len(answer) == 10 and target not in answer
    distances = [xor_distance(node_id, target) for node_id in answer]
    assert distances == sorted(distances)
    others = sorted((i for i in mesh.ids if i != target), key=lambda i: xor_distance(i, target))
    assert answer == others[:10]


def test_random_bootstrap_builds_an_equally_good_mesh():
    sim = SimulatedDht(120, seed=5, bootstrap="random")
    results = random_lookups(sim, 50, seed=2)
    assert sum(sim.is_exact(asker, result) for asker, result in results) >= 49


def test_dead_peers_cost_timeouts_but_lookups_route_around_them():
    sim = SimulatedDht(N, seed=9)
    victims = sim.kill(0.2, random.Random(4))
    assert len(victims) == round(0.2 * N) and len(sim.live_peers()) == N - len(victims)
    dead = {sim.ids[v] for v in victims}
    before = sim.now
    results = random_lookups(sim, 60, seed=6)
    assert sim.now > before
    assert any(result.failed for _, result in results)
    for asker, result in results:
        found = [c.id for c in result.closest]
        truth = sim.oracle(asker, result.target)
        assert dead.isdisjoint(found) and dead.isdisjoint(truth)
        # replies still name dead contacts nobody has found stale yet, which can push live
        # peers at the edge of the k closest out of every reply; the nearest are always found
        assert found[:5] == truth[:5]
        assert len(set(found) & set(truth)) >= K - 5
    exact = sum(sim.is_exact(asker, result) for asker, result in results)
    assert exact >= 0.75 * len(results)
    with pytest.raises(LocalProtocolError, match="dead"):
        sim.lookup(victims[0], sim.ids[0])


def test_a_failed_query_costs_the_rpc_timeout_in_virtual_time():
    sim = SimulatedDht(60, seed=3, rpc_latency=0.01, rpc_timeout=2.0)
    sim.kill(0.3, random.Random(1))
    rng = random.Random(8)
    for _ in range(20):
        asker = rng.choice(sim.live_peers())
        start = sim.now
        result = sim.lookup(asker, rng.randbytes(20))
        elapsed = sim.now - start
        assert elapsed >= result.hops * 0.01 - 1e-9
        if result.failed:
            assert elapsed >= 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 5, "k": 0},
        {"n": 5, "alpha": 0},
        {"n": 5, "rpc_latency": 0.0},
        {"n": 5, "rpc_latency": 3.0, "rpc_timeout": 1.0},
        {"n": 5, "bootstrap": "nearest"},
    ],
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ConfigError):
        SimulatedDht(seed=1, **kwargs)


def test_kill_takes_a_fraction(mesh: SimulatedDht):
    with pytest.raises(ConfigError, match="fraction"):
        mesh.kill(1.0, random.Random(0))
