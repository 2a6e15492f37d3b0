"""Repair planning: is a chunk healthy, at risk, due for repair or lost, and where its
rebuilt fragments go.

Strategy: a steward never acts on one missed answer.  A :class:`FailureDetector` keeps, per
peer, when it was last heard from and since when it has been silent; a holder silent for less
than the rule's grace period is *silent* (its fragment still counts: it is probably rebooting),
one silent for longer, or one that answered that its fragment is missing or corrupt, is *lost*.
:func:`assess_chunk` turns that view of a chunk's ``n`` holders into a :class:`ChunkAssessment`:

========== ======================================================================
verdict    when (``counted`` = live + silent fragments)
========== ======================================================================
HEALTHY    live >= repair threshold
AT_RISK    live < threshold, but nothing can be done yet: the missing fragments are
           still within their grace period, or fewer than k holders answer
NEEDS_REPAIR  k <= counted < threshold and at least k holders answer: rebuild every
           *lost* share (restoring n, as lazy repair does), never a silent one
LOST       counted < k: the chunk cannot be rebuilt from what is known to exist
========== ======================================================================

Eager repair is the rule with ``repair_threshold == n``; "no repair before the grace period"
holds for any threshold because silent fragments always count.  :func:`place_repairs` chooses
holders for the rebuilt shares with the same rendezvous placement as a put
(:func:`~p2pstore.core.placement.choose_holder`), with the surviving holders taken, so a
repaired chunk is within its rule whenever its survivors were.  Pure: ``now`` is an argument,
the driver (the node's steward or the simulator) does the probing, fetching and storing, and
asks again at :attr:`ChunkAssessment.wake_at`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from p2pstore.core.placement import Candidate, choose_holder
from p2pstore.core.rules import CodingRule
from p2pstore.errors import LocalProtocolError


class HolderStatus(enum.Enum):
    """What a steward believes about one holder at ``now``."""

    LIVE = "live"
    """Heard from since its last missed probe (or never probed)."""
    SILENT = "silent"
    """Missed probes for less than the grace period: its fragment still counts."""
    LOST = "lost"
    """Silent for the grace period or longer: its fragment counts as lost."""


class FragmentReport(enum.Enum):
    """What a holder that answered said about the fragment it should hold."""

    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"


class Verdict(enum.Enum):
    """The outcome of :func:`assess_chunk` (see the module docstring)."""

    HEALTHY = "healthy"
    AT_RISK = "at_risk"
    NEEDS_REPAIR = "needs_repair"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class PeerHealth:
    """A peer as a failure detector sees it: when last heard from, and since when silent
    (``None``: never heard, not silent).  Raises :class:`LocalProtocolError` if the peer would
    be silent since before it was last heard from."""

    last_heard: float | None = None
    silent_since: float | None = None

    def __post_init__(self) -> None:
        if (
            self.silent_since is not None
            and self.last_heard is not None
            and self.silent_since < self.last_heard
        ):
            raise LocalProtocolError(
                f"a peer cannot be silent since {self.silent_since} when it was heard from at "
                f"{self.last_heard}: call heard() or missed() in time order"
            )

    def status(self, now: float, grace_period: float) -> HolderStatus:
        """LIVE, SILENT (for less than ``grace_period``) or LOST, at ``now``."""
        if self.silent_since is None:
            return HolderStatus.LIVE
        if now >= self.silent_since + grace_period:  # the very sum lost_at() returns
            return HolderStatus.LOST
        return HolderStatus.SILENT

    def lost_at(self, grace_period: float) -> float | None:
        """When a silent peer counts as lost (None while it is not silent)."""
        return None if self.silent_since is None else self.silent_since + grace_period


LIVE_UNKNOWN = PeerHealth()
"""The health of a peer the detector has no evidence about: it counts as live."""


class FailureDetector:
    """Per-peer liveness from probe outcomes: ``heard`` on any answer, ``missed`` on a probe
    that got none.  The first miss since the peer was last heard from starts its silence; later
    misses do not move it, so the grace period runs from the first sign of trouble."""

    __slots__ = ("_peers",)

    def __init__(self) -> None:
        self._peers: dict[bytes, PeerHealth] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def heard(self, peer: bytes, now: float) -> None:
        """``peer`` answered (or sent us anything) at ``now``: it is live again."""
        self._peers[peer] = PeerHealth(last_heard=now)

    def missed(self, peer: bytes, now: float) -> None:
        """A probe of ``peer`` got no answer by ``now``; starts its silence if it was live."""
        health = self._peers.get(peer, LIVE_UNKNOWN)
        if health.silent_since is None:
            self._peers[peer] = PeerHealth(health.last_heard, silent_since=now)

    def forget(self, peer: bytes) -> None:
        """Drop what is known about ``peer`` (it left the placement records)."""
        self._peers.pop(peer, None)

    def health(self, peer: bytes) -> PeerHealth:
        """What is known about ``peer``; :data:`LIVE_UNKNOWN` if nothing is."""
        return self._peers.get(peer, LIVE_UNKNOWN)

    def status(self, peer: bytes, now: float, grace_period: float) -> HolderStatus:
        """``peer``'s :class:`HolderStatus` at ``now`` under ``grace_period``."""
        return self.health(peer).status(now, grace_period)

    def silent(self) -> list[bytes]:
        """Peers currently silent, in the order they were last reported."""
        return [peer for peer, health in self._peers.items() if health.silent_since is not None]

    def next_deadline(self, now: float, grace_period: float) -> float | None:
        """The earliest time after ``now`` when a silent peer becomes lost, or None: when the
        driver should wake the steward next."""
        deadlines = [
            health.silent_since + grace_period
            for health in self._peers.values()
            if health.silent_since is not None and health.silent_since + grace_period > now
        ]
        return min(deadlines, default=None)


@dataclass(frozen=True, slots=True)
class ChunkAssessment:
    """A chunk's state at one instant.  Shares are fragment numbers ``0 .. n-1``.

    ``rebuild``: shares to rebuild now (non-empty exactly for NEEDS_REPAIR); ``sources``: k
    live shares to fetch for it; ``wake_at``: when a silent share becomes lost (None if none).
    """

    verdict: Verdict
    live: tuple[int, ...]
    silent: tuple[int, ...]
    lost: tuple[int, ...]
    rebuild: tuple[int, ...]
    sources: tuple[int, ...]
    wake_at: float | None

    def __post_init__(self) -> None:
        if bool(self.rebuild) != (self.verdict is Verdict.NEEDS_REPAIR):
            raise LocalProtocolError("an assessment rebuilds shares exactly when it needs repair")
        if not set(self.rebuild) <= set(self.lost) or not set(self.sources) <= set(self.live):
            raise LocalProtocolError("rebuild only lost shares, from live ones")

    @property
    def counted(self) -> int:
        """Fragments believed to exist: live plus silent within the grace period."""
        return len(self.live) + len(self.silent)


HealthView = Mapping[bytes, PeerHealth] | Callable[[bytes], PeerHealth]
"""Where :func:`assess_chunk` reads each holder's health: a detector's ``health`` method, or a
mapping (holders missing from it count as live)."""


def _lookup(view: HealthView) -> Callable[[bytes], PeerHealth]:
    if callable(view):
        return view
    return lambda peer: view.get(peer, LIVE_UNKNOWN)


def assess_chunk(
    holders: Sequence[bytes | None],
    health: HealthView,
    rule: CodingRule,
    now: float,
    *,
    reports: Mapping[int, FragmentReport] | None = None,
) -> ChunkAssessment:
    """Assess one chunk: ``holders[share]`` is the node id holding that share (None if no
    holder is known), ``health`` the steward's view of each holder, ``reports`` what holders
    that answered said about their fragment.  See the module docstring for the verdicts.

    Raises :class:`LocalProtocolError` unless there is one entry per share of the rule.
    """
    if len(holders) != rule.n:
        raise LocalProtocolError(
            f"rule {rule.name} has n={rule.n} shares per chunk, got {len(holders)} holders"
        )
    said = reports or {}
    health_of = _lookup(health)
    live: list[int] = []
    silent: list[int] = []
    lost: list[int] = []
    wake_at: float | None = None
    for share, holder in enumerate(holders):
        if holder is None or said.get(share, FragmentReport.OK) is not FragmentReport.OK:
            lost.append(share)
            continue
        peer = health_of(holder)
        status = peer.status(now, rule.grace_period)
        if status is HolderStatus.LIVE:
            live.append(share)
        elif status is HolderStatus.SILENT:
            silent.append(share)
            deadline = peer.lost_at(rule.grace_period)
            if deadline is not None and (wake_at is None or deadline < wake_at):
                wake_at = deadline
        else:
            lost.append(share)
    counted = len(live) + len(silent)
    rebuild: tuple[int, ...] = ()
    sources: tuple[int, ...] = ()
    if counted < rule.k:
        verdict = Verdict.LOST
    elif healthy(len(live), rule):
        verdict = Verdict.HEALTHY
    elif counted < rule.repair_threshold and len(live) >= rule.k:
        verdict = Verdict.NEEDS_REPAIR
        rebuild = tuple(lost)
        sources = tuple(live[: rule.k])
    else:
        verdict = Verdict.AT_RISK
    return ChunkAssessment(
        verdict=verdict,
        live=tuple(live),
        silent=tuple(silent),
        lost=tuple(lost),
        rebuild=rebuild,
        sources=sources,
        wake_at=wake_at,
    )


def healthy(live: int, rule: CodingRule) -> bool:
    """Whether a chunk with ``live`` answering holders is healthy whatever else is known (a
    driver may skip assessing it)."""
    return live >= rule.repair_threshold


def place_repairs(
    rebuild: Sequence[int],
    fragment_ids: Sequence[bytes],
    survivors: Sequence[Candidate],
    candidates: Sequence[Candidate],
    rule: CodingRule,
    *,
    excluded: Collection[bytes] = (),
    fragment_size: int = 0,
) -> dict[int, Candidate]:
    """New holders for the shares in ``rebuild``, in that order: the best rendezvous choice
    for each fragment id that keeps the chunk within ``rule`` given the ``survivors`` (holders
    of the live and silent shares, which keep their fragments) and the choices already made.
    Survivors and ``excluded`` peers (lost holders, peers that failed a store) get nothing.

    When a chosen peer then fails, the driver adds it to ``excluded`` and asks again for the
    shares still unplaced, as a put does.  Raises :class:`PlacementError` (from
    :func:`choose_holder`) when no candidate keeps the chunk within the rule: a repair never
    places more weakly than its rule, it waits for the mesh to offer room.
    """
    if len(fragment_ids) != rule.n:
        raise LocalProtocolError(
            f"rule {rule.name} has n={rule.n} fragment ids per chunk, got {len(fragment_ids)}"
        )
    if len(set(rebuild)) != len(rebuild) or not all(0 <= share < rule.n for share in rebuild):
        raise LocalProtocolError(f"shares to rebuild must be distinct, in 0..{rule.n - 1}")
    taken = list(survivors)
    placed: dict[int, Candidate] = {}
    for share in rebuild:
        holder = choose_holder(
            fragment_ids[share],
            candidates,
            rule,
            taken=taken,
            excluded=excluded,
            fragment_size=fragment_size,
        )
        placed[share] = holder
        taken.append(holder)
    return placed
