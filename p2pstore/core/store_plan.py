"""What a put and a repair do when a chosen holder fails, and how much of a repair to place.

Strategy: these are the two placement decisions taken around the rendezvous choice
(:mod:`p2pstore.core.placement`), and they were once written in each driver, where they drifted
(the node tried four holders per fragment, the simulator without limit; the node placed the
rebuilt shares that fit, the simulator gave up).  Both drivers -- the node's ``Client`` and
``Repairer``, the simulator's workload and stewards -- now ask here:

* :class:`StoreAttempts`: every fragment of a put or a repair gets the same budget of holders
  (``STORE_ATTEMPTS``); a failed store excludes the holder and asks placement for the next one,
  until the budget is spent, and then the fragment fails (a put fails, a repair waits for the
  next round).  A bound, so a mesh of refusing peers costs a bounded number of uploads.
* :func:`place_what_fits`: a repair places every rebuilt share within the rule if it can, and
  otherwise as many as fit (too few datacenters left): each is still within the rule, there are
  just fewer, which is better for durability than waiting with none.
* :class:`RepairPlacement`: the two together for one chunk's repair -- where its rebuilt shares
  go, and where one goes next when its store fails (the node's repairer and the simulator's
  stewards both hold one per chunk they repair).
* :class:`PutPlacement`: the same for one chunk of a put, which must place all n shares: a
  failed holder joins the object's excluded set (its later chunks skip it) and the share goes
  to the next holder the rendezvous picks beside the others, within the budget.  The
  simulator's workload holds one per chunk; the node's ``Client`` does the same steps inline
  (``store_with_fallback``) until its split moves it onto this class.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from p2pstore.core.placement import Candidate, choose_holder, place_chunk
from p2pstore.core.protocol import STORE_ATTEMPTS
from p2pstore.core.repair_plan import place_repairs
from p2pstore.core.rules import CodingRule
from p2pstore.errors import LocalProtocolError, PlacementError

__all__ = ["STORE_ATTEMPTS", "PutPlacement", "RepairPlacement", "StoreAttempts", "place_what_fits"]


class StoreAttempts:
    """How many holders each share of a chunk has tried, against one budget."""

    __slots__ = ("_tried", "budget")

    def __init__(self, budget: int = STORE_ATTEMPTS) -> None:
        if type(budget) is not int or budget < 1:
            raise LocalProtocolError(f"a store attempt budget is at least 1, got {budget!r}")
        self.budget = budget
        self._tried: dict[int, int] = {}

    def failed(self, share: int) -> bool:
        """Count a failed store of ``share``; True if another holder may still be tried."""
        tried = self._tried.get(share, 0) + 1
        self._tried[share] = tried
        return tried < self.budget

    def tried(self, share: int) -> int:
        """Failed stores of ``share`` so far."""
        return self._tried.get(share, 0)


def place_what_fits(
    wanted: Sequence[int],
    fragment_ids: Sequence[bytes],
    survivors: Sequence[Candidate],
    candidates: Sequence[Candidate],
    rule: CodingRule,
    *,
    excluded: Collection[bytes] = (),
    fragment_size: int = 0,
) -> dict[int, Candidate]:
    """Holders for the rebuilt shares ``wanted`` within ``rule`` (see :func:`place_repairs`);
    when the candidates have room for only some of them, as many as fit, in ``wanted``'s order.

    Raises :class:`PlacementError` (the whole placement's) if not one share fits.
    """
    try:
        return place_repairs(
            wanted,
            fragment_ids,
            survivors,
            candidates,
            rule,
            excluded=excluded,
            fragment_size=fragment_size,
        )
    except PlacementError:
        placed: dict[int, Candidate] = {}
        for share in wanted:
            try:
                placed |= place_repairs(
                    (share,),
                    fragment_ids,
                    [*survivors, *placed.values()],
                    candidates,
                    rule,
                    excluded=excluded,
                    fragment_size=fragment_size,
                )
            except PlacementError:
                continue
        if not placed:
            raise
        return placed


class RepairPlacement:
    """Where one chunk's rebuilt shares go, and where next when a store fails.

    ``placed`` starts as :func:`place_what_fits` chose (raises :class:`PlacementError` if not
    one share fits); ``excluded`` is the caller's set (the lost holders, peers silent or
    leaving), grown by every holder that failed a store so the object's other chunks skip
    them too."""

    __slots__ = (
        "_attempts",
        "_candidates",
        "_ids",
        "_keep",
        "_rule",
        "_size",
        "excluded",
        "placed",
    )

    def __init__(
        self,
        wanted: Sequence[int],
        fragment_ids: Sequence[bytes],
        survivors: Sequence[Candidate],
        candidates: Sequence[Candidate],
        rule: CodingRule,
        *,
        excluded: set[bytes],
        fragment_size: int = 0,
        budget: int = STORE_ATTEMPTS,
    ) -> None:
        self._ids = fragment_ids
        self._keep = list(survivors)
        self._candidates = candidates
        self._rule = rule
        self._size = fragment_size
        self._attempts = StoreAttempts(budget)
        self.excluded = excluded
        self.placed = place_what_fits(
            wanted,
            fragment_ids,
            survivors,
            candidates,
            rule,
            excluded=excluded,
            fragment_size=fragment_size,
        )

    def reselect(self, share: int) -> Candidate:
        """The next holder of ``share`` within the rule, its last one excluded (the driver
        counts the attempt).  Raises :class:`PlacementError` when no candidate fits."""
        self.excluded.add(self.placed[share].node_id)
        others = [*self._keep, *(c for s, c in self.placed.items() if s != share)]
        self.placed[share] = choose_holder(
            self._ids[share],
            self._candidates,
            self._rule,
            taken=others,
            excluded=self.excluded,
            fragment_size=self._size,
        )
        return self.placed[share]

    def failed(self, share: int) -> Candidate | None:
        """The store of ``share`` on its holder failed: the next holder, or None once the
        share spent its attempts or no candidate fits (the repair waits for a round)."""
        if not self._attempts.failed(share):
            self.excluded.add(self.placed[share].node_id)
            return None
        try:
            return self.reselect(share)
        except PlacementError:
            return None


class PutPlacement:
    """Where one chunk of a put goes, and where a share goes next when its store fails.

    ``placed`` starts as :func:`place_chunk` chose (raises :class:`PlacementError` if the rule
    cannot be met); ``excluded`` is the object's set, shared by its chunks."""

    __slots__ = ("_attempts", "_candidates", "_ids", "_rule", "_size", "excluded", "placed")

    def __init__(
        self,
        fragment_ids: Sequence[bytes],
        candidates: Sequence[Candidate],
        rule: CodingRule,
        *,
        excluded: set[bytes],
        fragment_size: int = 0,
        budget: int = STORE_ATTEMPTS,
    ) -> None:
        self._ids = fragment_ids
        self._candidates = candidates
        self._rule = rule
        self._size = fragment_size
        self._attempts = StoreAttempts(budget)
        self.excluded = excluded
        self.placed = list(
            place_chunk(
                fragment_ids, candidates, rule, excluded=excluded, fragment_size=fragment_size
            )
        )

    def failed(self, share: int) -> Candidate | None:
        """The store of ``share`` failed on its holder (now excluded): the next holder beside
        the others, or None once the share spent its attempts or nothing fits (the put fails)."""
        self.excluded.add(self.placed[share].node_id)
        if not self._attempts.failed(share):
            return None
        try:
            self.placed[share] = choose_holder(
                self._ids[share],
                self._candidates,
                self._rule,
                taken=[h for s, h in enumerate(self.placed) if s != share],
                excluded=self.excluded,
                fragment_size=self._size,
            )
        except PlacementError:
            return None
        return self.placed[share]
