"""The steward's core decisions: election, round clock, repair placement with fallback."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.holders import Holdings
from p2pstore.core.placement import Candidate, within_rule
from p2pstore.core.placement_view import placement_of
from p2pstore.core.protocol import STORE_ATTEMPTS
from p2pstore.core.repair_plan import ChunkAssessment, FailureDetector, Verdict
from p2pstore.core.rules import CodingRule
from p2pstore.core.steward_round import (
    Census,
    ObjectRound,
    RoundClock,
    Said,
    contenders,
    elected,
    silent_peers,
)
from p2pstore.core.store_plan import RepairPlacement

ids = st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=12, unique=True)


def distance(a: bytes, key: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(key, "big")


@given(ids, st.binary(min_size=20, max_size=20), st.integers(0, 4), st.data())
def test_exactly_the_closest_answering_peer_is_elected(peers, key, max_closer, data):
    """Whatever subset answers, the peers elected are exactly the first answering peer by
    distance, when it is among the first ``max_closer + 1``; nobody otherwise."""
    up = data.draw(st.sets(st.sampled_from(peers)))
    by_distance = sorted(peers, key=lambda p: distance(p, key))
    chosen = []
    for peer in peers:
        asked = contenders(peer, key, peers, max_closer)
        if asked is None:
            assert by_distance.index(peer) > max_closer
            continue
        assert list(asked) == by_distance[: by_distance.index(peer)]
        if peer in up and elected(asked, up.__contains__):
            chosen.append(peer)
    first_up = next((p for p in by_distance if p in up), None)
    if first_up is not None and by_distance.index(first_up) <= max_closer:
        assert chosen == [first_up]
    else:
        assert chosen == []


@given(
    st.floats(0.1, 1e4),
    st.floats(-1e5, 1e5),
    st.floats(-1e6, 1e6),
)
def test_rounds_fall_on_the_grid_and_the_next_one_is_strictly_later(interval, phase, at):
    clock = RoundClock(interval, phase)
    first = clock.at_or_after(at)
    assert first >= at and first - at <= interval * (1 + 1e-6)
    following = clock.after(first)
    assert following > first
    assert abs((following - first) - interval) <= interval * 1e-6 + 1e-6 * abs(first)


def candidate(number: int, datacenter: int) -> Candidate:
    node_id = hashlib.sha1(f"peer-{number}".encode()).digest()
    return Candidate(node_id, f"peer-{number}", f"dc-{datacenter}", "FR-GES")


RULE = CodingRule("t-2-of-4", k=2, n=4, repair_threshold=3, regions=frozenset({"FR-GES"}))


@given(st.integers(4, 10), st.lists(st.integers(0, 3), min_size=1, max_size=20))
def test_a_repair_placement_stays_within_the_rule_and_its_budget(datacenters, failures):
    """Shares placed after any sequence of failed stores are within the rule, never on an
    excluded peer, and a share gives up after ``STORE_ATTEMPTS`` failures."""
    peers = [candidate(i, i) for i in range(datacenters)]
    survivors = peers[:2]
    fragment_ids = [hashlib.sha256(bytes([i])).digest() for i in range(RULE.n)]
    excluded: set[bytes] = set()
    plan = RepairPlacement((2, 3), fragment_ids, survivors, peers, RULE, excluded=excluded)
    tried = dict.fromkeys(plan.placed, 0)
    for share in failures:
        if share not in plan.placed or tried[share] >= STORE_ATTEMPTS:
            continue
        before = plan.placed[share]
        tried[share] += 1
        after = plan.failed(share)
        assert before.node_id in excluded
        if after is None:
            assert tried[share] == STORE_ATTEMPTS or len(excluded) + 2 > datacenters - 2
            tried[share] = STORE_ATTEMPTS
            continue
        assert after.node_id not in excluded
        row = [*survivors, *plan.placed.values()]
        assert within_rule(row, RULE)


def test_silent_candidates_get_nothing():
    detector = FailureDetector()
    peers = [candidate(i, i) for i in range(3)]
    detector.missed(peers[1].node_id, 5.0)
    detector.heard(peers[2].node_id, 5.0)
    assert silent_peers(peers, detector.health) == {peers[1].node_id}
    assert silent_peers(peers, {}) == set()


def test_the_node_and_the_simulator_read_one_set_of_protocol_constants():
    from p2pstore.core import protocol
    from p2pstore.net.client import ClientSettings
    from p2pstore.net.steward import StewardSettings
    from p2pstore.sim.scenario import RepairSpec

    steward = StewardSettings()
    assert steward.check_interval == protocol.CHECK_INTERVAL == RepairSpec().check_interval
    assert steward.max_closer == protocol.MAX_CLOSER
    assert steward.placement_refresh == protocol.PLACEMENT_REFRESH
    assert steward.query_timeout == protocol.QUERY_TIMEOUT
    assert ClientSettings().store_attempts == protocol.STORE_ATTEMPTS


OBJECT = hashlib.sha256(b"object").digest()


def census_round(
    clock: RoundClock,
    at: float,
    detector: FailureDetector,
    rule: CodingRule,
    holders: list[Candidate],
    dead: set[bytes],
    order: list[int],
) -> ChunkAssessment:
    """One round at ``at`` over an object of one chunk, a share per holder: the ``dead`` ones
    answer nothing, the others state; the answers come in ``order``."""
    ids = [hashlib.sha256(bytes([share])).digest() for share in range(rule.n)]
    watched = ObjectRound(
        OBJECT, rule, placement_of(OBJECT, rule.n, [holders]), Holdings(OBJECT, [ids])
    )
    census = Census([watched], detector, set(), at, clock.judged_at(at))
    questions = census.questions(1024)
    assert len(questions) == rule.n
    for number in order:
        question = questions[number]
        census.answered(question, Said.SILENT if question.holder.node_id in dead else Said.STATED)
    census.assess()
    return watched.assessments[0]


@given(
    st.floats(0.5, 3600.0),
    st.floats(0.0, 1e6),
    st.integers(1, 30),
    st.floats(0.0, 1e6),
    st.permutations(range(6)),
)
def test_holders_silent_in_one_round_are_lost_together_on_the_round_their_grace_ends(
    interval, phase, rounds, killed_at, order
):
    """Whatever the phase, the interval and the order the answers come in, holders that die
    together fall silent as of one round and all count lost at the round a grace period of
    whole rounds ends on -- none before, none a round later (one late would be left out of
    the repair, and the chunk left at its threshold)."""
    clock = RoundClock(interval, phase)
    rule = CodingRule(
        "t-3-of-6",
        k=3,
        n=6,
        repair_threshold=5,
        regions=frozenset({"FR-GES"}),
        grace_period=rounds * interval,
    )
    holders = [candidate(i, i) for i in range(rule.n)]
    dead = {h.node_id for h in holders[3:]}
    detector = FailureDetector()
    first = at = clock.after(killed_at)
    for _ in range(rounds):
        assessment = census_round(clock, at, detector, rule, holders, dead, order)
        assert assessment.verdict is Verdict.AT_RISK and assessment.lost == ()
        at = clock.after(at)
    assessment = census_round(clock, at, detector, rule, holders, dead, order)
    assert assessment.verdict is Verdict.NEEDS_REPAIR
    assert assessment.rebuild == (3, 4, 5)
    assert {detector.health(node_id).silent_since for node_id in dead} == {first}


def test_a_round_dates_a_silence_no_earlier_than_the_holders_last_answer():
    """An answer heard after the round's instant (another check meanwhile) is not undone: the
    silence begins then, and the detector's time order holds."""
    rule = CodingRule("t-2-of-4", k=2, n=4, repair_threshold=3, regions=frozenset({"FR-GES"}))
    holders = [candidate(i, i) for i in range(rule.n)]
    detector = FailureDetector()
    detector.heard(holders[0].node_id, 65.0)
    clock = RoundClock(60.0)
    census_round(clock, 60.0, detector, rule, holders, {holders[0].node_id}, [0, 1, 2, 3])
    assert detector.health(holders[0].node_id).silent_since == 65.0
