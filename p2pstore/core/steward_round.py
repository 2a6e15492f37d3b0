"""The steward's decisions: who stewards an object, whom a round asks, what it counts on, what
it repairs, and when it next looks.

Strategy (aioquic's shape: inputs and ``now`` in; messages, events and deadlines out).  The
node's steward (``net/steward.py``) and the simulator's stewards (``sim/stewards.py``) are
drivers of these decisions; they move messages and time and decide nothing themselves:

* **election** -- :func:`contenders` names the known contacts XOR-closer to an object's key than
  this node, which it must ask; with more than ``max_closer`` of them it leaves the object to
  them.  :func:`elected`: it stewards the object when none of them answered.  The node asks
  its routing table's live contacts with pings; the simulator its index of live peers.
* **schedule** -- :class:`RoundClock`: rounds fall at ``phase + j * interval``, whatever a
  round's length, so neither driver drifts; a retry is the next round.
* **census** -- :class:`Census`: one round at one instant.  One batched question per holder
  (``questions``), every answer folded in (``answered``: the failure detector hears or misses
  the holder, leaving holders are noted), then per share the holder counted on (``count``:
  live, then leaving, silent, lost, and last a holder whose answer failed) and every chunk
  assessed (``assess``: :func:`~p2pstore.core.repair_plan.assess_chunk`) -- the chunks due a
  repair or a move out.  Answers are dated by the round, not by their arrival: a holder's
  silence begins at the round that missed it, as the simulator has it, so holders that fail
  together count lost together, at the round their grace period ends on
  (:meth:`RoundClock.judged_at`).
* **repair placement** -- :class:`~p2pstore.core.store_plan.RepairPlacement`: rebuilt shares
  placed as many as fit the rule, a failed store moved to the next holder within the budget.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from p2pstore.core.holders import Holdings
from p2pstore.core.placement import Candidate
from p2pstore.core.placement_view import Exclusion, LocalEvidence, Placement
from p2pstore.core.repair_plan import (
    LIVE_UNKNOWN,
    ChunkAssessment,
    FailureDetector,
    FragmentReport,
    HealthView,
    HolderStatus,
    Verdict,
    assess_chunk,
)
from p2pstore.core.rules import CodingRule
from p2pstore.errors import LocalProtocolError
from p2pstore.identity import TrustAnchor

# -- election ---------------------------------------------------------------------------------


def contenders(
    me: bytes, key: bytes, known: Iterable[bytes], max_closer: int
) -> tuple[bytes, ...] | None:
    """The ids of ``known`` XOR-closer to ``key`` than ``me``, closest first: the peers to ask
    before stewarding ``key``; None when there are more than ``max_closer`` (leave it to them)."""
    target = int.from_bytes(key, "big")
    mine = int.from_bytes(me, "big") ^ target
    closer = sorted({(int.from_bytes(peer, "big") ^ target, peer) for peer in known if peer != me})
    found = tuple(peer for distance, peer in closer if distance < mine)
    return None if len(found) > max_closer else found


def elected(asked: Sequence[bytes], answered: Callable[[bytes], bool]) -> bool:
    """Whether this node stewards the key: none of the closer peers it asked answered."""
    return not any(answered(peer) for peer in asked)


def silent_peers(candidates: Iterable[Candidate], health: HealthView) -> set[bytes]:
    """The candidates a repair offers nothing: those the steward's detector knows silent."""
    health_of = health if callable(health) else lambda p: health.get(p, LIVE_UNKNOWN)
    return {c.node_id for c in candidates if health_of(c.node_id).silent_since is not None}


# -- schedule ---------------------------------------------------------------------------------

ROUND_SLACK = 1e-9
"""The fraction of an interval after a round's instant that still counts as that round: sums
of a phase, whole intervals and a grace period of whole intervals land within it of a round."""


@dataclass(frozen=True, slots=True)
class RoundClock:
    """When a steward's rounds fall: ``phase + j * interval`` for whole ``j``."""

    interval: float
    phase: float = 0.0

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise LocalProtocolError("rounds need a positive interval")

    def at_or_after(self, at: float) -> float:
        """The first round at or after ``at`` (a time within a billionth of a round after one
        counts as that round, so a grace period of whole rounds ends on a round)."""
        rounds = math.ceil((at - self.phase) / self.interval - ROUND_SLACK)
        return max(at, self.phase + rounds * self.interval)

    def after(self, at: float) -> float:
        """The first round strictly after ``at`` (the next one, for a driver that just ran one)."""
        following = self.at_or_after(at)
        return following if following > at else self.at_or_after(at + self.interval / 2)

    def judged_at(self, at: float) -> float:
        """The instant the round at ``at`` judges its holders at: the last that counts as that
        round (see :meth:`at_or_after`).  A silence that began on a round and lasts a grace
        period of whole rounds has then run out on the round it ends on, whatever the float
        rounding of the two sums."""
        return at + self.interval * ROUND_SLACK


# -- census -----------------------------------------------------------------------------------


class Said(enum.Enum):
    """How a holder answered a ``StateFragments``."""

    STATED = "stated"
    """Valid receipts for everything asked (each may say held or missing)."""
    LEAVING = "leaving"
    """It is being drained: move its fragments."""
    SILENT = "silent"
    """No answer in time (unreachable, or its session broke)."""
    FAILED = "failed"
    """An answer that is not valid receipts for what was asked."""


@dataclass
class ObjectRound:
    """One object in one round: its holders as counted, and what the round found."""

    object_id: bytes
    rule: CodingRule
    placement: Placement
    """Per share the holder the steward counts on (see :meth:`Census.count`), then the others."""
    holdings: Holdings
    """Every receipt known for the object (what the steward relays)."""
    reports: dict[tuple[int, int], FragmentReport] = field(default_factory=dict)
    leaving: set[tuple[int, int]] = field(default_factory=set)
    """(chunk, share) held by a node that is leaving the mesh: to move, whatever the count."""
    assessments: list[ChunkAssessment] = field(default_factory=list)
    answers: dict[tuple[bytes, int], Said] = field(default_factory=dict)
    """How each holder answered this round for each position it was asked about."""

    def unrelayed(self, evidence: LocalEvidence) -> Exclusion:
        """What the steward does not relay: what it counts lost on its own evidence, and the
        positions whose holder failed to sign for them this round (it vouches for nothing it
        could not check)."""
        local = evidence.exclusion(self.object_id)
        failed = {slot for slot, said in self.answers.items() if said is Said.FAILED}

        def exclude(holder: bytes, position: int) -> bool:
            return (holder, position) in failed or (local is not None and local(holder, position))

        return exclude

    def named(self, now: float, trust: TrustAnchor, exclude: Exclusion) -> frozenset[object]:
        """The (holder, position) pairs the steward's placement record names now: what
        :class:`~p2pstore.core.steward_records.StewardRecords` compares to the last one sent."""
        holdings = self.holdings
        view = holdings.view(now, trust, exclude=exclude)
        return frozenset(
            (h.node_id, holdings.position(index, share))
            for index in range(holdings.chunk_count)
            for share in range(holdings.n)
            for h in view.holders_of(index, share)
        )

    def due(self, index: int) -> bool:
        """Whether chunk ``index`` needs work: a repair, or a move off a leaving holder."""
        assessment = self.assessments[index]
        if assessment.verdict is Verdict.NEEDS_REPAIR:
            return True
        return assessment.verdict is not Verdict.LOST and any(
            (index, share) in self.leaving for share in assessment.live
        )

    def moving(self, index: int) -> tuple[int, ...]:
        """The live shares of chunk ``index`` to copy off leaving holders."""
        return tuple(s for s in self.assessments[index].live if (index, s) in self.leaving)


Slot = tuple[int, int, int]
"""(object number in the round, chunk, share)."""


@dataclass(frozen=True, slots=True)
class Question:
    """One ``StateFragments`` to send: a holder and the slots asked about."""

    holder: Candidate
    slots: tuple[Slot, ...]

    def positions(self, objects: Sequence[ObjectRound]) -> dict[int, tuple[int, ...]]:
        """Object number -> the sorted positions asked of it."""
        by_object: dict[int, list[int]] = {}
        for number, chunk, share in self.slots:
            position = objects[number].holdings.position(chunk, share)
            by_object.setdefault(number, []).append(position)
        return {number: tuple(sorted(by_object[number])) for number in sorted(by_object)}


_RANKS = {HolderStatus.LIVE: 0, HolderStatus.SILENT: 2, HolderStatus.LOST: 3}
"""Holder order per share: live, (leaving: 1), silent, lost, (failed: 4)."""


R = TypeVar("R", bound=ObjectRound)


class Census(Generic[R]):
    """One round over ``objects``: the questions to send, the answers, the counting and the
    assessment.  Pure: the detector and the set of leaving peers are the steward's own.

    ``at`` is the round's instant, and every answer of the round is dated ``at``: a holder's
    silence begins at the round that missed it, not when its question timed out (that moment
    shifts with the pacing, the timeouts and the election before the questions, so of holders
    that died together one could reach its grace period a round after the others, leaving a
    chunk repaired up to its threshold only).  Statuses are judged at ``judged_at`` (the
    round clock's :meth:`RoundClock.judged_at`; ``at`` itself for a check outside rounds)."""

    def __init__(
        self,
        objects: Sequence[R],
        detector: FailureDetector,
        leaving_peers: set[bytes],
        at: float,
        judged_at: float | None = None,
    ) -> None:
        self.objects = list(objects)
        self.detector = detector
        self.leaving_peers = leaving_peers
        self.at = at
        self.judged_at = at if judged_at is None else judged_at
        if self.judged_at < at:
            raise LocalProtocolError("a round cannot judge its holders before it began")

    def questions(self, batch: int) -> list[Question]:
        """One question per holder about all its shares of the round's objects, split into
        batches of ``batch`` positions.  A holder counted lost is not asked about a share that
        another holder keeps: its fragment was replaced, and its receipt lapses on its own."""
        wanted: dict[bytes, list[Slot]] = {}
        holders: dict[bytes, Candidate] = {}
        status = self.detector.status
        now = self.judged_at
        for number, watched in enumerate(self.objects):
            grace = watched.rule.grace_period
            placement = watched.placement
            for index in range(watched.holdings.chunk_count):
                for share in range(watched.holdings.n):
                    listed = placement.holders_of(index, share)
                    lost = {
                        h.node_id
                        for h in listed
                        if status(h.node_id, now, grace) is HolderStatus.LOST
                    }
                    for holder in listed:
                        if holder.node_id in lost and len(lost) < len(listed):
                            continue
                        wanted.setdefault(holder.node_id, []).append((number, index, share))
                        holders[holder.node_id] = holder
        return [
            Question(holders[node_id], tuple(slots[start : start + batch]))
            for node_id, slots in wanted.items()
            for start in range(0, len(slots), batch)
        ]

    def answered(self, question: Question, said: Said) -> None:
        """Fold in how ``question``'s holder answered, as of the round's instant."""
        holder = question.holder
        if said is Said.SILENT:
            # never silent since before its last answer (one heard after ``at`` elsewhere)
            heard = self.detector.health(holder.node_id).last_heard
            since = self.at if heard is None else max(self.at, heard)
            self.detector.missed(holder.node_id, since)
            return
        self.detector.heard(holder.node_id, self.at)
        if said is Said.LEAVING:
            self.leaving_peers.add(holder.node_id)
        else:
            self.leaving_peers.discard(holder.node_id)
        for number, positions in question.positions(self.objects).items():
            answers = self.objects[number].answers
            for position in positions:
                answers[(holder.node_id, position)] = said

    def count(self, wall: float, trust: TrustAnchor, evidence: LocalEvidence) -> None:
        """After the answers: each object's view again, and per share the holder counted on,
        with the reports and moves that follow.  ``wall`` is the receipts' clock (Unix
        seconds)."""
        for watched in self.objects:
            exclude = evidence.exclusion(watched.object_id)
            view = watched.holdings.view(wall, trust, exclude=exclude)
            gone = watched.holdings.gone(wall, trust, exclude=exclude)
            self._count_on(watched, view, gone, self.judged_at)

    def assess(self) -> list[R]:
        """Assess every chunk; returns the objects with a chunk due work (see
        :meth:`ObjectRound.due`)."""
        due: list[R] = []
        health = self.detector.health
        for watched in self.objects:
            watched.assessments = [
                assess_chunk(
                    [h.node_id if h is not None else None for h in row],
                    health,
                    watched.rule,
                    self.judged_at,
                    reports={s: r for (c, s), r in watched.reports.items() if c == index},
                )
                for index, row in enumerate(watched.placement.chunks)
            ]
            if any(watched.due(i) for i in range(len(watched.assessments))):
                due.append(watched)
        return due

    def _count_on(self, watched: R, view: Placement, gone: Placement, now: float) -> None:
        answers = watched.answers
        holdings = watched.holdings
        detector = self.detector
        grace = watched.rule.grace_period
        rows: list[tuple[Candidate | None, ...]] = []
        others: list[tuple[tuple[Candidate, ...], ...]] = []
        for index in range(holdings.chunk_count):
            row: list[Candidate | None] = []
            extra: list[tuple[Candidate, ...]] = []
            for share in range(holdings.n):
                position = holdings.position(index, share)

                def rank(holder: Candidate, position: int = position) -> int:
                    said = answers.get((holder.node_id, position))
                    if said is Said.FAILED:
                        return 4
                    if said is Said.LEAVING:
                        return 1
                    return _RANKS[detector.status(holder.node_id, now, grace)]

                holders = sorted(view.holders_of(index, share), key=rank)
                best = holders[0] if holders else None
                if best is None:  # whoever said last it has it no more: lost, not a candidate
                    best = gone.chunks[index][share]
                    if best is not None:
                        watched.reports[(index, share)] = FragmentReport.MISSING
                row.append(best)
                extra.append(tuple(holders[1:]))
                if best is None:
                    continue
                said = answers.get((best.node_id, position))
                if said is Said.FAILED:
                    watched.reports[(index, share)] = FragmentReport.MISSING
                elif said is Said.LEAVING:
                    watched.leaving.add((index, share))
            rows.append(tuple(row))
            others.append(tuple(extra))
        watched.placement = Placement(watched.object_id, holdings.n, tuple(rows), tuple(others))
