"""DHT upkeep: rounds on a fixed grid, whom a round probes, what a lazy replay of missed rounds
counts (the simulator's), eviction pings and hand-overs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.contact import ID_SPACE, Contact, id_from_long
from p2pstore.core.dht_upkeep import DhtUpkeep, Met, closer_to
from p2pstore.core.routing import RoutingTable
from p2pstore.errors import LocalProtocolError

LOCAL = id_from_long(0)
HOUR = 3600.0


def contact(value: int) -> Contact:
    return Contact(id_from_long(value), f"10.0.0.{value % 250}:7400", "dc-a", "FR-GES")


def upkeep(start: float = 0.0, k: int = 20) -> DhtUpkeep:
    return DhtUpkeep(RoutingTable(LOCAL, k=k, now=start), now=start, refresh_interval=HOUR)


def test_nothing_is_due_before_the_first_round_then_rounds_keep_their_grid():
    machine = upkeep(start=10.0)
    rng = random.Random(1)
    assert machine.next_deadline() == 10.0 + HOUR
    assert machine.due(10.0 + HOUR - 1, rng) is None
    first = machine.due(10.0 + HOUR + 5, rng)  # a driver a little late
    assert first is not None and first.at == 10.0 + HOUR + 5
    assert machine.next_deadline() == 10.0 + 2 * HOUR  # not 5 s later
    assert machine.due(10.0 + HOUR + 6, rng) is None
    machine.due(10.0 + 4.5 * HOUR, rng)  # slept through two rounds: they are skipped
    assert machine.next_deadline() == 10.0 + 5 * HOUR


def test_a_round_probes_the_contacts_silent_for_half_an_interval_and_refreshes_idle_buckets():
    machine = upkeep()
    table = machine.table
    for value, seen in ((1, 0.0), (2, 1700.0), (3, 1900.0)):
        table.update(contact(value), seen)
    due = machine.due(HOUR, random.Random(2))
    assert due is not None
    assert {c.id for c in due.probes} == {contact(1).id, contact(2).id}  # 3 spoke 1700 s ago
    assert len(due.refresh) == len(table.buckets)  # no lookup touched any bucket


def test_failed_probes_drop_a_contact_after_max_failures_and_an_answer_heals_it():
    machine = upkeep()
    machine.table.update(contact(1), 0.0)
    machine.table.update(contact(2), 0.0)
    assert not machine.probed(contact(2).id, False, HOUR)
    assert not machine.probed(contact(2).id, True, HOUR)
    dropped = [machine.probed(contact(1).id, False, t * HOUR) for t in (1, 2, 3)]
    assert dropped == [False, False, True]
    assert contact(1).id not in machine.table and contact(2).id in machine.table


@given(
    start=st.floats(0, 10 * HOUR),
    a=st.floats(0, 20 * HOUR),
    b=st.floats(0, 20 * HOUR),
    last_seen=st.floats(0, 20 * HOUR),
)
def test_the_lazy_replay_counts_the_rounds_a_driver_runs(start, a, b, last_seen):
    """``rounds_between`` and ``rounds_probing`` (what the simulator replays when a table is
    next used) count exactly the rounds a driver waking at every deadline runs, and among
    them those whose probe picks a contact silent since ``last_seen``."""
    low, high = sorted((start + a, start + b))
    machine = upkeep(start)
    rounds = []
    rng = random.Random(0)
    while machine.next_deadline() <= high:
        due = machine.due(machine.next_deadline(), rng)
        assert due is not None
        if due.at > low:
            rounds.append(due.at)
    lazy = upkeep(start)
    assert lazy.rounds_between(low, high) == len(rounds)
    probing = [r for r in rounds if r - last_seen >= lazy.probe_after]
    assert lazy.rounds_probing(last_seen, low, high) == len(probing)


def test_meeting_a_new_contact_hands_records_over_and_a_full_bucket_asks_for_a_ping():
    machine = upkeep(k=2)
    top = ID_SPACE // 2
    assert machine.met(contact(top + 1), 0.0).then is Met.HAND_OVER
    assert machine.met(contact(top + 2), 1.0).then is Met.HAND_OVER
    assert machine.met(contact(top + 2), 2.0).then is Met.NOTHING  # known: refreshed
    full = machine.met(contact(top + 3), 3.0)
    assert full.then is Met.PING_OLDEST and full.ping == contact(top + 1)
    assert machine.ping_answered(contact(top + 1).id, False, 4.0) is False  # one failure
    assert machine.met(contact(0), 5.0).then is Met.NOTHING  # ourselves


@given(
    own=st.integers(0, ID_SPACE - 1),
    newcomer=st.integers(0, ID_SPACE - 1),
    keys=st.lists(st.integers(0, ID_SPACE - 1), max_size=20),
)
def test_a_newcomer_is_handed_exactly_the_records_it_is_closer_to(own, newcomer, keys):
    records = [(id_from_long(key), index) for index, key in enumerate(keys)]
    handed = closer_to(records, id_from_long(own), id_from_long(newcomer))
    assert handed == [i for i, key in enumerate(keys) if newcomer ^ key < own ^ key]


def test_ids_of_different_lengths_are_refused():
    with pytest.raises(LocalProtocolError):
        closer_to([], b"\x00" * 20, b"\x00" * 32)
