"""The put's and the repair's shared placement policy: one attempt budget per fragment, and a
repair that places the rebuilt shares that fit when not all do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.placement import Candidate, within_rule
from p2pstore.core.repair_plan import place_repairs
from p2pstore.core.rules import CodingRule
from p2pstore.core.store_plan import (
    STORE_ATTEMPTS,
    PutPlacement,
    StoreAttempts,
    place_what_fits,
)
from p2pstore.errors import LocalProtocolError, PlacementError


def node(i: int) -> bytes:
    return i.to_bytes(20, "big")


def candidate(i: int, datacenter: int) -> Candidate:
    return Candidate(node(i), f"10.0.0.{i}:1", f"dc-{datacenter}", "FR-GES")


def test_each_share_gets_the_same_budget_of_holders():
    attempts = StoreAttempts()
    assert [attempts.failed(0) for _ in range(STORE_ATTEMPTS)] == [True] * (
        STORE_ATTEMPTS - 1
    ) + [False]
    assert attempts.tried(0) == STORE_ATTEMPTS
    assert attempts.tried(1) == 0 and attempts.failed(1)  # shares count apart
    assert not StoreAttempts(1).failed(3)
    with pytest.raises(LocalProtocolError):
        StoreAttempts(0)


@given(
    n=st.integers(2, 8),
    datacenters=st.integers(1, 10),
    per_datacenter=st.integers(1, 3),
    lost=st.sets(st.integers(0, 7), min_size=1),
)
def test_a_repair_places_what_fits_within_the_rule(n, datacenters, per_datacenter, lost):
    """Every share is placed when the mesh has room; otherwise as many as fit, each within the
    rule, and no share left out could still be added."""
    rule = CodingRule("r", k=1, n=n, repair_threshold=1, max_per_datacenter=1)
    ids = [bytes([s]) * 32 for s in range(n)]
    candidates = [
        candidate(dc * per_datacenter + j, dc)
        for dc in range(datacenters)
        for j in range(per_datacenter)
    ]
    wanted = sorted(s for s in lost if s < n)
    survivors = [
        candidate(1000 + s, 1000 + s) for s in range(n) if s not in wanted
    ]  # survivors in datacenters of their own
    if not wanted:
        return
    try:
        whole = place_repairs(wanted, ids, survivors, candidates, rule)
    except PlacementError:
        whole = None
    try:
        placed = place_what_fits(wanted, ids, survivors, candidates, rule)
    except PlacementError:
        assert datacenters == 0 or whole is None
        return
    if whole is not None:
        assert placed == whole
    assert set(placed) <= set(wanted)
    assert within_rule([*survivors, *placed.values()], rule)
    assert len(placed) == min(len(wanted), datacenters)
    for share in set(wanted) - set(placed):
        with pytest.raises(PlacementError):
            place_repairs((share,), ids, [*survivors, *placed.values()], candidates, rule)


def test_a_repair_with_no_room_at_all_raises_the_placement_error():
    rule = CodingRule("r", k=1, n=2, repair_threshold=1, max_per_datacenter=1)
    ids = [b"a" * 32, b"b" * 32]
    with pytest.raises(PlacementError):
        place_what_fits([1], ids, [candidate(1, 0)], [candidate(2, 0)], rule)


def test_a_put_places_a_failed_share_elsewhere_within_its_budget_and_excludes_the_holder():
    """A put's chunk: the failed holder is excluded for the object's later chunks, the share
    goes to another peer beside the others, and after the budget the share (and put) fails."""
    rule = CodingRule("p", k=2, n=3, repair_threshold=3, max_per_datacenter=1)
    candidates = [candidate(i, i) for i in range(6)]
    ids = [bytes([100 + s]) * 32 for s in range(3)]
    excluded: set[bytes] = set()
    plan = PutPlacement(ids, candidates, rule, excluded=excluded, budget=2)
    first = plan.placed[1]
    second = plan.failed(1)
    assert second is not None and second != first and first.node_id in excluded
    assert len({c.node_id for c in plan.placed}) == 3
    assert plan.failed(1) is None  # two holders tried: the budget
    assert second.node_id in excluded
