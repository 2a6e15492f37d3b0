"""Placement under coding rules: property tests (the placement record: test_core_holdings)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.placement import (
    Candidate,
    check_feasible,
    choose_holder,
    place_chunk,
    within_rule,
)
from p2pstore.core.rules import SHIPPED_RULES, CodingRule, find_rule
from p2pstore.errors import ConfigError, PlacementError

REGIONS = ("FR-GES", "FR-IDF", "FR-ARA")


def node_id(i: int) -> bytes:
    return hashlib.sha256(b"node%d" % i).digest()[:20]


@st.composite
def meshes(draw):
    size = draw(st.integers(0, 30))
    datacenters = draw(st.integers(1, 12))
    return [
        Candidate(
            node_id(i),
            f"10.0.0.{i}:7000",
            f"dc-{draw(st.integers(0, datacenters - 1))}",
            draw(st.sampled_from(REGIONS)),
            draw(st.none() | st.integers(0, 1 << 40)),
        )
        for i in range(size)
    ]


@st.composite
def rules(draw):
    n = draw(st.integers(1, 10))
    k = draw(st.integers(1, n))
    regions = draw(st.frozensets(st.sampled_from(REGIONS), max_size=2))
    return CodingRule(
        "r",
        k=k,
        n=n,
        repair_threshold=draw(st.integers(k, n)),
        regions=regions,
        max_per_datacenter=draw(st.integers(1, 3)),
    )


def fragment_ids(n: int, salt: int = 0) -> list[bytes]:
    return [hashlib.sha256(b"%d-%d" % (salt, i)).digest() for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(meshes(), rules(), st.integers(0, 5), st.integers(0, 1 << 20))
def test_placement_keeps_the_rule_or_fails_loudly(mesh, rule, salt, size):
    ids = fragment_ids(rule.n, salt)
    try:
        check_feasible(mesh, rule, size)
        feasible = True
    except PlacementError as error:
        feasible = False
        assert error.needed > error.available
    if not feasible:
        with pytest.raises(PlacementError):
            place_chunk(ids, mesh, rule, fragment_size=size)
        return
    holders = place_chunk(ids, mesh, rule, fragment_size=size)
    assert len(holders) == rule.n
    assert within_rule(holders, rule)
    assert all(rule.allows_region(h.region) for h in holders)
    assert max(Counter(h.datacenter for h in holders).values()) <= rule.max_per_datacenter
    assert all(h.free_bytes is None or h.free_bytes >= size for h in holders)
    # Deterministic: the same inputs give the same holders, in any candidate order.
    assert place_chunk(ids, list(reversed(mesh)), rule, fragment_size=size) == holders


@settings(max_examples=200, deadline=None)
@given(meshes(), rules(), st.data())
def test_replacing_a_failed_holder_stays_within_the_rule(mesh, rule, data):
    ids = fragment_ids(rule.n)
    try:
        holders = list(place_chunk(ids, mesh, rule))
    except PlacementError:
        return
    share = data.draw(st.integers(0, rule.n - 1))
    excluded = {holders[share].node_id}
    others = holders[:share] + holders[share + 1 :]
    try:
        replacement = choose_holder(ids[share], mesh, rule, taken=others, excluded=excluded)
    except PlacementError:
        return
    holders[share] = replacement
    assert replacement.node_id not in excluded
    assert within_rule(holders, rule)


def test_only_fragments_of_a_departed_peer_move():
    mesh = [Candidate(node_id(i), "a:1", f"dc-{i}", "FR-GES") for i in range(40)]
    rule = CodingRule("one", k=1, n=1, repair_threshold=1)
    ids = [hashlib.sha256(b"f%d" % i).digest() for i in range(500)]
    before = {f: place_chunk([f], mesh, rule)[0].node_id for f in ids}
    gone = mesh[7].node_id
    after = {f: place_chunk([f], mesh[:7] + mesh[8:], rule)[0].node_id for f in ids}
    moved = [f for f in ids if before[f] != after[f]]
    assert moved and all(before[f] == gone for f in moved)


def test_more_free_space_attracts_proportionally_more_fragments():
    mesh = [
        Candidate(node_id(i), "a:1", f"dc-{i}", "FR-GES", (4 if i == 0 else 1) << 30)
        for i in range(5)
    ]
    rule = CodingRule("one", k=1, n=1, repair_threshold=1)
    counts = Counter(
        place_chunk([hashlib.sha256(b"%d" % i).digest()], mesh, rule)[0].node_id
        for i in range(4000)
    )
    share_of_big = counts[mesh[0].node_id] / 4000
    assert 0.45 < share_of_big < 0.55  # 4 / (4 + 1 + 1 + 1 + 1)


def test_shortfall_messages_name_the_rule_regions_and_counts():
    mesh = [Candidate(node_id(i), "a:1", f"dc-{i % 5}", "FR-GES") for i in range(10)]
    with pytest.raises(PlacementError) as error:
        check_feasible(mesh, find_rule("standard"))
    assert str(error.value).startswith("rule standard needs 8 datacenters in any region")
    assert "5 are reachable" in str(error.value)
    ges = CodingRule("ges", k=2, n=4, repair_threshold=3, regions=frozenset({"FR-IDF"}))
    with pytest.raises(PlacementError, match="needs 4 peers with room in FR-IDF, 0 are"):
        check_feasible(mesh, ges)


def test_rules_are_validated_and_found_by_name():
    assert set(SHIPPED_RULES) == {"standard", "archive", "replica-3"}
    with pytest.raises(ConfigError, match="repair_threshold"):
        CodingRule("bad", k=4, n=8, repair_threshold=3)
    with pytest.raises(ConfigError, match="k <= n"):
        CodingRule("bad", k=9, n=8, repair_threshold=8)
    with pytest.raises(ConfigError, match="known rules: archive, replica-3, standard"):
        find_rule("nope")
