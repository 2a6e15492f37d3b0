"""The simulator's DHT pieces: the id-space oracle, converged tables, and lazily replayed
probes that drop a dead contact exactly when the real node would."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.contact import Contact
from p2pstore.sim.dht_driver import SimulatedDht
from p2pstore.sim.idspace import IdIndex
from p2pstore.sim.mesh_dht import holder_check_messages

HOUR = 3600.0


@settings(max_examples=150)
@given(
    ids=st.lists(st.integers(0, 2**160 - 1), min_size=1, max_size=60, unique=True),
    key=st.integers(0, 2**160 - 1),
    count=st.integers(0, 10),
    dead=st.sets(st.integers(0, 59)),
)
def test_the_oracle_is_the_brute_force_answer(ids, key, count, dead):
    index = IdIndex()
    for peer, long_id in enumerate(ids):
        index.add(long_id, peer)
    keep = lambda peer: peer not in dead  # noqa: E731
    expected = sorted((p for p in range(len(ids)) if keep(p)), key=lambda p: ids[p] ^ key)
    assert index.closest(key, count, keep) == expected[:count]
    assert index.closest(key, count) == sorted(range(len(ids)), key=lambda p: ids[p] ^ key)[:count]


def test_converged_tables_give_exact_lookups():
    dht = SimulatedDht(400, seed=3, bootstrap="converged")
    rng = random.Random(9)
    exact = 0
    for _ in range(50):
        asker = rng.randrange(400)
        exact += dht.is_exact(asker, dht.lookup(asker, rng.randbytes(20)))
    assert exact == 50
    assert min(len(table) for table in dht.tables) >= dht.k


def test_replayed_probes_drop_a_dead_contact_after_max_failures_intervals():
    dht = SimulatedDht(60, seed=4, bootstrap="converged", probe_interval=HOUR, max_failures=3)
    watcher = 0
    victim = dht.index[dht.tables[watcher].contacts()[0].id]
    dht.set_alive(victim, False)  # at time 0
    victim_id = dht.ids[victim]
    dht.now = 2.5 * HOUR  # two probe rounds missed
    dht.catch_up(watcher)
    assert dht.tables[watcher].liveness(victim_id).failures == 2
    dht.now = 3.5 * HOUR  # the third: dropped, as the trio driver drops it
    dht.catch_up(watcher)
    assert victim_id not in dht.tables[watcher]
    # a contact that missed one probe and came back is healthy after the next round
    other = dht.index[dht.tables[watcher].contacts()[0].id]
    dht.set_alive(other, False)
    dht.now = 4.6 * HOUR
    dht.catch_up(watcher)
    assert dht.tables[watcher].liveness(dht.ids[other]).failures == 1
    dht.set_alive(other, True)
    dht.now = 5.7 * HOUR
    dht.catch_up(watcher)
    assert dht.tables[watcher].liveness(dht.ids[other]).failures == 0


def test_new_peers_join_and_are_found():
    dht = SimulatedDht(100, seed=5, bootstrap="converged", probe_interval=HOUR)
    rng = random.Random(1)
    contact = Contact(rng.randbytes(20), "sim-new", "dc-0", "SIM")
    peer = dht.add_peer(contact)
    dht.join(peer, via=7)
    assert len(dht.tables[peer]) >= dht.k
    found = dht.lookup(3, contact.id)
    assert found.closest[0].id == contact.id


def test_holder_checks_batch_per_distinct_holder():
    # 10 peers stewarding 1,000 fragments each check all 10 holders: 100 messages per interval
    assert holder_check_messages(600, 10, 1250, 8, 600) == 100.0
    # a steward with one chunk of 8 fragments sends about 8 messages per interval
    assert 7.9 < holder_check_messages(600, 1000, 1000, 8, 600) / 1000 < 8.0
    assert holder_check_messages(600, 0, 10, 8, 600) == 0.0
