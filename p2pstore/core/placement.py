"""Placement: which peer holds which fragment of a chunk, under a coding rule.

Strategy: weighted rendezvous hashing on the fragment id.  Every eligible peer gets a score
from ``sha256(fragment id || node id)`` scaled by its free capacity, and a fragment goes to the
best-scoring peer that keeps the chunk within the rule (allowed regions, at most
``max_per_datacenter`` fragments per datacenter, one fragment per peer).  Why rendezvous: the
choice is deterministic (a repeated put or a second steward computes the same holders), spreads
load evenly in proportion to free space, and when a peer disappears only the fragments it held
move.  A rule that cannot be met raises :class:`PlacementError` naming the shortfall; there is
no weaker fallback.  Pure: candidates come in, holders go out.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from p2pstore.core.rules import CodingRule
from p2pstore.errors import PlacementError

UNKNOWN_CAPACITY_WEIGHT = 1 << 40
"""Weight of a peer whose free space is unknown: as if it had 1 TiB free."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A peer that could hold fragments: where to reach it, where it is (from its certificate),
    and how much room it says it has (``None``: unknown)."""

    node_id: bytes
    address: str
    datacenter: str
    region: str
    free_bytes: int | None = None


def rendezvous_score(fragment_id: bytes, candidate: Candidate) -> float:
    """Weighted rendezvous score (higher wins): ``w / -ln(u)`` with ``u`` uniform in (0, 1)
    from the hash, ``w`` the free capacity; a peer with twice the room wins twice as often."""
    digest = hashlib.sha256(fragment_id + candidate.node_id).digest()
    uniform = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 2)
    weight = (
        UNKNOWN_CAPACITY_WEIGHT if candidate.free_bytes is None else max(candidate.free_bytes, 1)
    )
    return weight / -math.log(uniform)


def eligible(
    candidates: Iterable[Candidate], rule: CodingRule, fragment_size: int = 0
) -> list[Candidate]:
    """Candidates in the rule's regions with room for a fragment, one per node id."""
    seen: set[bytes] = set()
    kept = []
    for candidate in candidates:
        if candidate.node_id in seen or not rule.allows_region(candidate.region):
            continue
        if candidate.free_bytes is not None and candidate.free_bytes < fragment_size:
            continue
        seen.add(candidate.node_id)
        kept.append(candidate)
    return kept


def check_feasible(
    candidates: Sequence[Candidate], rule: CodingRule, fragment_size: int = 0
) -> None:
    """Raise :class:`PlacementError` if ``candidates`` cannot hold one chunk under ``rule``:
    too few peers, or too few datacenters, in the allowed regions."""
    usable = eligible(candidates, rule, fragment_size)
    where = f"in {rule.describe_regions()}"
    if len(usable) < rule.n:
        raise PlacementError(
            f"rule {rule.name} needs {rule.n} peers with room {where}, {len(usable)} are reachable",
            rule=rule.name,
            needed=rule.n,
            available=len(usable),
        )
    per_datacenter = Counter(candidate.datacenter for candidate in usable)
    capacity = sum(min(count, rule.max_per_datacenter) for count in per_datacenter.values())
    if capacity >= rule.n:
        return
    if rule.max_per_datacenter == 1:  # capacity is then the number of datacenters
        raise PlacementError(
            f"rule {rule.name} needs {rule.n} datacenters {where} (one fragment of a chunk "
            f"each), {capacity} are reachable",
            rule=rule.name,
            needed=rule.n,
            available=capacity,
        )
    raise PlacementError(
        f"rule {rule.name} needs room for {rule.n} fragments of a chunk {where} with at most "
        f"{rule.max_per_datacenter} per datacenter; the {len(per_datacenter)} reachable "
        f"datacenters ({len(usable)} peers) take only {capacity}",
        rule=rule.name,
        needed=rule.n,
        available=capacity,
    )


def choose_holder(
    fragment_id: bytes,
    candidates: Sequence[Candidate],
    rule: CodingRule,
    *,
    taken: Sequence[Candidate] = (),
    excluded: Collection[bytes] = (),
    fragment_size: int = 0,
) -> Candidate:
    """The peer that should hold ``fragment_id``, given the holders ``taken`` by the chunk's
    other fragments and the node ids ``excluded`` (peers that failed or refused).

    Raises :class:`PlacementError` when no candidate keeps the chunk within the rule.
    """
    usable = [c for c in eligible(candidates, rule, fragment_size) if c.node_id not in excluded]
    return _best_holder(fragment_id, usable, rule, taken)


def _best_holder(
    fragment_id: bytes, usable: Sequence[Candidate], rule: CodingRule, taken: Sequence[Candidate]
) -> Candidate:
    """The best-scoring of the ``usable`` peers (eligible, not excluded) that keeps the chunk
    within the rule next to the ``taken`` holders."""
    used_nodes = {holder.node_id for holder in taken}
    per_datacenter = Counter(holder.datacenter for holder in taken)
    options = [
        candidate
        for candidate in usable
        if candidate.node_id not in used_nodes
        and per_datacenter[candidate.datacenter] < rule.max_per_datacenter
    ]
    if not options:
        datacenters = {c.datacenter for c in usable}
        raise PlacementError(
            f"rule {rule.name} needs {rule.datacenters_needed} datacenters in "
            f"{rule.describe_regions()} for {rule.n} fragments (at most "
            f"{rule.max_per_datacenter} per datacenter); {len(datacenters)} datacenters "
            f"({len(usable)} peers) are reachable and willing",
            rule=rule.name,
            needed=rule.datacenters_needed,
            available=len(datacenters),
        )
    return max(options, key=lambda c: (rendezvous_score(fragment_id, c), c.node_id))


def place_chunk(
    fragment_ids: Sequence[bytes],
    candidates: Sequence[Candidate],
    rule: CodingRule,
    *,
    excluded: Collection[bytes] = (),
    fragment_size: int = 0,
) -> tuple[Candidate, ...]:
    """One holder per fragment of a chunk (same order as ``fragment_ids``), within the rule.

    Raises :class:`PlacementError` if the rule cannot be met.
    """
    if len(fragment_ids) != rule.n:
        raise PlacementError(
            f"rule {rule.name} places {rule.n} fragments per chunk, got {len(fragment_ids)}",
            rule=rule.name,
            needed=rule.n,
            available=len(fragment_ids),
        )
    # Eligibility is decided once per chunk, not once per fragment (a hot path in the simulator).
    usable = [c for c in eligible(candidates, rule, fragment_size) if c.node_id not in excluded]
    check_feasible(usable, rule)
    holders: list[Candidate] = []
    for fragment_id in fragment_ids:
        holders.append(_best_holder(fragment_id, usable, rule, holders))
    return tuple(holders)


def within_rule(holders: Sequence[Candidate], rule: CodingRule) -> bool:
    """Whether a chunk's holders respect the rule (distinct peers, regions, datacenter cap)."""
    if len({h.node_id for h in holders}) != len(holders):
        return False
    if not all(rule.allows_region(h.region) for h in holders):
        return False
    counts = Counter(h.datacenter for h in holders)
    return all(count <= rule.max_per_datacenter for count in counts.values())
