"""The repair planner and failure detector: short outages never repair, chunks below their
threshold after the grace period always do, and repairs never place outside the rule."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from p2pstore.core.placement import Candidate, place_chunk, within_rule
from p2pstore.core.repair_plan import (
    LIVE_UNKNOWN,
    FailureDetector,
    FragmentReport,
    HolderStatus,
    PeerHealth,
    Verdict,
    assess_chunk,
    place_repairs,
)
from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.errors import LocalProtocolError, PlacementError

REGIONS = ("FR-GES", "FR-IDF", "FR-ARA")


def node(i: int) -> bytes:
    return i.to_bytes(20, "big")


def fid(chunk: int, share: int) -> bytes:
    return bytes([chunk % 256, share]) * 16


@st.composite
def rules(draw, max_n: int = 10) -> CodingRule:
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, n))
    return CodingRule(
        "r",
        k=k,
        n=n,
        repair_threshold=draw(st.integers(k, n)),
        grace_period=draw(st.sampled_from([0.0, 60.0, 3600.0])),
        max_per_datacenter=draw(st.integers(1, 2)),
        regions=frozenset(draw(st.sets(st.sampled_from(REGIONS), max_size=2))),
    )


# -- the failure detector ------------------------------------------------------------------------


def test_detector_counts_silence_from_the_first_miss():
    detector = FailureDetector()
    peer = node(1)
    assert detector.health(peer) is LIVE_UNKNOWN
    detector.heard(peer, 10.0)
    detector.missed(peer, 20.0)
    detector.missed(peer, 50.0)  # later misses do not move the start of the silence
    assert detector.health(peer) == PeerHealth(last_heard=10.0, silent_since=20.0)
    assert detector.status(peer, 79.0, grace_period=60.0) is HolderStatus.SILENT
    assert detector.status(peer, 80.0, grace_period=60.0) is HolderStatus.LOST
    assert detector.next_deadline(30.0, 60.0) == 80.0
    assert detector.next_deadline(80.0, 60.0) is None
    assert detector.silent() == [peer]
    detector.heard(peer, 90.0)
    assert detector.status(peer, 1e9, grace_period=60.0) is HolderStatus.LIVE
    assert detector.silent() == []
    detector.forget(peer)
    assert len(detector) == 0


def test_silence_before_last_heard_is_refused():
    with pytest.raises(LocalProtocolError, match="time order"):
        PeerHealth(last_heard=10.0, silent_since=5.0)


# -- assessing a chunk ---------------------------------------------------------------------------


@st.composite
def chunk_views(draw, silence: str):
    """A rule, holders and a health map where each holder is live, silent for a while, or
    reported missing/corrupt.  ``silence`` is "short" (every silence shorter than the grace
    period), "past" (every silence at least as long), or "any"."""
    rule = draw(rules())
    now = 10_000.0
    health: dict[bytes, PeerHealth] = {}
    reports: dict[int, FragmentReport] = {}
    holders: list[bytes | None] = []
    for share in range(rule.n):
        kind = draw(st.sampled_from(["live", "silent", "reported", "none"]))
        holder = node(share + 1)
        holders.append(None if kind == "none" else holder)
        if kind == "silent":
            grace = rule.grace_period
            if silence == "short" and grace == 0:
                kind = "live"
            elif silence == "short":
                health[holder] = PeerHealth(silent_since=now - draw(st.floats(0, grace * 0.999)))
            elif silence == "past":
                health[holder] = PeerHealth(silent_since=now - grace - draw(st.floats(0, 1e4)))
            else:
                health[holder] = PeerHealth(silent_since=now - draw(st.floats(0, 2 * grace)))
        if kind == "reported":
            reports[share] = draw(st.sampled_from([FragmentReport.MISSING, FragmentReport.CORRUPT]))
    return rule, holders, health, reports, now


@settings(max_examples=200)
@given(chunk_views(silence="short"))
def test_an_outage_shorter_than_the_grace_period_never_triggers_repair(view):
    rule, holders, health, _, now = view
    plan = assess_chunk(holders, health, rule, now)
    lost_anyway = sum(h is None for h in holders)
    if lost_anyway == 0:
        assert plan.verdict is not Verdict.NEEDS_REPAIR
        assert plan.rebuild == ()
        assert plan.verdict is not Verdict.LOST
    assert not set(plan.rebuild) & set(plan.silent)


@settings(max_examples=200)
@given(chunk_views(silence="past"))
def test_a_chunk_below_threshold_after_the_grace_period_always_needs_repair(view):
    rule, holders, health, reports, now = view
    plan = assess_chunk(holders, health, rule, now, reports=reports)
    assert plan.silent == ()  # every silence is past the grace period
    live = len(plan.live)
    if live < rule.k:
        assert plan.verdict is Verdict.LOST
    elif live < rule.repair_threshold:
        assert plan.verdict is Verdict.NEEDS_REPAIR
        assert plan.rebuild == tuple(s for s in range(rule.n) if s not in plan.live)
        assert len(plan.sources) == rule.k
    else:
        assert plan.verdict is Verdict.HEALTHY


@settings(max_examples=200)
@given(chunk_views(silence="any"))
def test_assessment_partitions_the_shares_and_only_loses_more_with_time(view):
    rule, holders, health, reports, now = view
    plan = assess_chunk(holders, health, rule, now, reports=reports)
    shares = [*plan.live, *plan.silent, *plan.lost]
    assert sorted(shares) == list(range(rule.n))
    later = assess_chunk(holders, health, rule, now + rule.grace_period + 1, reports=reports)
    assert set(plan.lost) <= set(later.lost)
    assert later.silent == ()
    if plan.silent:
        assert plan.wake_at is not None and plan.wake_at > now
        wake = assess_chunk(holders, health, rule, plan.wake_at, reports=reports)
        assert len(wake.lost) > len(plan.lost)


def test_assessment_checks_the_number_of_holders():
    with pytest.raises(LocalProtocolError, match="n=8"):
        assess_chunk([node(1)], {}, SHIPPED_RULES["standard"], 0.0)


def test_eager_and_lazy_rules_differ_only_in_when_they_repair():
    lazy = SHIPPED_RULES["standard"]  # 4-of-8, repair below 6
    eager = CodingRule("eager", k=4, n=8, repair_threshold=8, grace_period=lazy.grace_period)
    holders = [node(i) for i in range(1, 9)]
    one_gone = {node(1): PeerHealth(silent_since=0.0)}
    now = lazy.grace_period + 1
    assert assess_chunk(holders, one_gone, lazy, now).verdict is Verdict.HEALTHY
    eager_plan = assess_chunk(holders, one_gone, eager, now)
    assert eager_plan.verdict is Verdict.NEEDS_REPAIR and eager_plan.rebuild == (0,)
    within_grace = assess_chunk(holders, one_gone, eager, lazy.grace_period - 1)
    assert within_grace.verdict is Verdict.AT_RISK and within_grace.rebuild == ()


# -- placing rebuilt fragments -------------------------------------------------------------------


@st.composite
def meshes(draw):
    size = draw(st.integers(1, 30))
    dcs = draw(st.integers(1, 10))
    return [
        Candidate(
            node(100 + i),
            f"peer-{i}",
            f"dc-{draw(st.integers(0, dcs - 1))}",
            draw(st.sampled_from(REGIONS)),
        )
        for i in range(size)
    ]


def remaining_capacity(candidates, rule, survivors, excluded):
    """How many more fragments the rule allows on these candidates (exact for greedy)."""
    used = Counter(s.datacenter for s in survivors)
    taken = {s.node_id for s in survivors} | set(excluded)
    free = Counter(
        c.datacenter for c in candidates if c.node_id not in taken and rule.allows_region(c.region)
    )
    return sum(min(count, max(0, rule.max_per_datacenter - used[dc])) for dc, count in free.items())


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(rule=rules(max_n=8), mesh=meshes(), data=st.data())
def test_repairs_never_place_outside_the_rule(rule, mesh, data):
    try:
        holders = place_chunk([fid(0, s) for s in range(rule.n)], mesh, rule)
    except PlacementError:
        return  # the put itself fails loudly; nothing to repair
    assert within_rule(holders, rule)
    lost = data.draw(st.sets(st.integers(0, rule.n - 1), min_size=1))
    survivors = [h for s, h in enumerate(holders) if s not in lost]
    excluded = {holders[s].node_id for s in lost}
    rebuild = sorted(lost)
    capacity = remaining_capacity(mesh, rule, survivors, excluded)
    try:
        placed = place_repairs(
            rebuild, [fid(0, s) for s in range(rule.n)], survivors, mesh, rule, excluded=excluded
        )
    except PlacementError as error:
        assert capacity < len(rebuild)
        assert error.rule == rule.name
        return
    assert capacity >= len(rebuild)
    assert sorted(placed) == rebuild
    assert not {h.node_id for h in placed.values()} & (excluded | {s.node_id for s in survivors})
    assert within_rule([*survivors, *placed.values()], rule)


def test_place_repairs_checks_its_arguments():
    rule = SHIPPED_RULES["replica-3"]
    with pytest.raises(LocalProtocolError, match="distinct"):
        place_repairs([0, 0], [fid(0, s) for s in range(3)], [], [], rule)
    with pytest.raises(LocalProtocolError, match="fragment ids"):
        place_repairs([0], [fid(0, 0)], [], [], rule)


# -- a steward over time -------------------------------------------------------------------------


class StewardMachine(RuleBasedStateMachine):
    """One chunk, its holders going silent and coming back, a steward assessing and repairing
    it as the real one will: placements stay within the rule, a chunk is repaired only after a
    silence of at least the grace period, and repair restores n counted fragments."""

    @initialize(
        rule=rules(max_n=6),
        peers=st.integers(6, 24),
        dcs=st.integers(3, 12),
    )
    def start(self, rule, peers, dcs):
        self.rule = CodingRule(
            rule.name,
            k=rule.k,
            n=rule.n,
            repair_threshold=rule.repair_threshold,
            grace_period=max(rule.grace_period, 60.0),
            max_per_datacenter=rule.max_per_datacenter,
        )
        self.mesh = [Candidate(node(i), f"p{i}", f"dc-{i % dcs}", REGIONS[0]) for i in range(peers)]
        self.ids = [fid(1, s) for s in range(self.rule.n)]
        try:
            self.holders = list(place_chunk(self.ids, self.mesh, self.rule))
        except PlacementError:
            self.holders = []
        self.detector = FailureDetector()
        self.down: dict[bytes, float] = {}
        self.now = 0.0
        self.repairs = 0

    @rule(who=st.integers(0, 23))
    def goes_silent(self, who):
        peer = node(who)
        if peer not in self.down and any(c.node_id == peer for c in self.mesh):
            self.down[peer] = self.now
            self.detector.missed(peer, self.now)

    @rule(who=st.integers(0, 23))
    def comes_back(self, who):
        peer = node(who)
        if peer in self.down:
            del self.down[peer]
            self.detector.heard(peer, self.now)

    @rule(seconds=st.sampled_from([1.0, 30.0, 59.0, 600.0, 7200.0]))
    def time_passes(self, seconds):
        self.now += seconds

    @rule()
    def steward_runs(self):
        if not self.holders:
            return
        plan = assess_chunk(
            [h.node_id for h in self.holders], self.detector.health, self.rule, self.now
        )
        if plan.verdict is not Verdict.NEEDS_REPAIR:
            return
        for share in plan.rebuild:
            holder = self.holders[share].node_id
            assert self.now - self.down[holder] >= self.rule.grace_period
        survivors = [self.holders[s] for s in (*plan.live, *plan.silent)]
        excluded = set(self.down) | {self.holders[s].node_id for s in plan.lost}
        try:
            placed = place_repairs(
                plan.rebuild, self.ids, survivors, self.mesh, self.rule, excluded=excluded
            )
        except PlacementError:
            return
        for share, holder in placed.items():
            self.holders[share] = holder
        self.repairs += 1
        after = assess_chunk(
            [h.node_id for h in self.holders], self.detector.health, self.rule, self.now
        )
        assert after.counted == self.rule.n

    @invariant()
    def placement_stays_within_the_rule(self):
        if self.holders:
            assert within_rule(self.holders, self.rule)


StewardMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_steward = StewardMachine.TestCase
