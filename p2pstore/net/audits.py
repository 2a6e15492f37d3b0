"""Challenging holders over the network: the trio side of :mod:`p2pstore.core.audit`.

A steward's :class:`Auditor` drives an :class:`~p2pstore.core.audit.AuditPlanner`: every round
:meth:`Auditor.watch` feeds it the fragments the round found on holders the failure detector
thinks alive, and :meth:`Auditor.run` wakes at the planner's ``next_deadline()``, sends what is
``due`` (at most ``concurrency`` challenges in flight: a challenge is only issued when it can
be sent at once, so waiting for a slot never makes an answer late) and judges the answers.

What a failure costs (the issue's rule): the fragment counts lost at once, without grace, in the
steward's :class:`LocalEvidence`, so its next round repairs it elsewhere
and no longer relays the holder's receipt for it.  A holder caught with a wrong proof, "not
found" or a refusal is challenged again at once (:meth:`AuditPlanner.hasten`), so one that kept
nothing loses all its fragments in as many answers; so is one that did not answer in time and
never passed an audit (a liar that stays silent), while one that passed before goes on at the
usual rate (a stalled disk costs a fragment per audit, not all of them at once).  A holder that
cannot be dialled is not judged at all (the challenge is withdrawn, the holder left to the
next round and its grace period), so a crash costs no repair before the grace period; a holder
that receives the challenge and then drops the session is late.  The evidence is logged (event
``audit_failed``, every field of the challenge and answer) and the latest
:data:`FAILURES_KEPT` are kept for ``/status``.

:func:`audit_each` is the one-shot form: one challenge per holder now, for ``stat`` and
``check``.  Whatever a holder does -- a bad proof, an error, garbage, silence, a dropped
connection -- becomes a verdict, never an exception: a hostile holder cannot break a round.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import trio

from p2pstore.codec.fragment_ids import AuditProof, audit_proof_error
from p2pstore.core.audit import (
    AuditPlanner,
    AuditVerdict,
    Challenge,
    Evidence,
    HolderAudits,
    WatchedFragment,
)
from p2pstore.core.placement import Candidate
from p2pstore.core.placement_view import LocalEvidence
from p2pstore.errors import PeerRefused, PeerUnreachable, RemoteError, RemoteProtocolError
from p2pstore.identity import short_id
from p2pstore.net.node import Node
from p2pstore.wire import AuditProofReply

log = logging.getLogger("p2pstore.steward")

FAILURES_KEPT = 256
"""Failed audits an :class:`Auditor` keeps in memory (the log keeps every one)."""
DEFAULT_CONCURRENCY = 8


def audit_reply_error(fragment_id: bytes, leaf_index: int, reply: AuditProofReply) -> str | None:
    """The planner's proof checker: why ``reply`` does not prove leaf ``leaf_index`` of the
    fragment ``fragment_id`` (None if it does)."""
    proof = AuditProof(leaf=reply.leaf, path=reply.path, length=reply.length)
    return audit_proof_error(fragment_id, leaf_index, proof)


async def challenge_holder(
    node: Node, address: str, challenge: Challenge, planner: AuditPlanner
) -> Evidence | None:
    """Send ``challenge`` to its holder at ``address``, wait until its deadline at most, and
    have ``planner`` judge the answer (None if it was judged already, e.g. by ``expire``).

    Raises :class:`PeerUnreachable` or :class:`PeerRefused` if no session with the holder
    could be had in the first half of the time (the challenge is withdrawn, unjudged: a holder
    that is down is the grace period's business, and one that refuses every dial is silent to
    the steward's rounds too).  Once the challenge is sent, anything but a proof is a failure:
    a holder that drops the session when challenged is late, not down."""
    reply: AuditProofReply | None = None
    error: tuple[str, str] | None = None
    timeout = max(0.0, challenge.deadline - trio.current_time())
    try:
        await node.session_with(challenge.holder, address, timeout=timeout / 2)
    except (PeerUnreachable, PeerRefused):
        planner.withdraw(challenge)
        raise
    try:
        answer = await node.call(challenge.holder, address, challenge.message, timeout=timeout)
    except RemoteError as exc:
        error = (exc.code, str(exc))
    except RemoteProtocolError as exc:
        error = ("RemoteProtocolError", str(exc))
    except (PeerUnreachable, PeerRefused):
        pass  # late: no answer from the holder by the deadline
    else:
        if isinstance(answer, AuditProofReply):
            reply = answer
        else:
            error = ("bad-reply", f"answered AuditChallenge with {type(answer).__name__}")
    return planner.answered(challenge, reply, error, trio.current_time())


@dataclass(frozen=True, slots=True)
class AuditTarget:
    """A fragment a steward expects ``holder`` to keep, and where it belongs."""

    holder: Candidate
    fragment: WatchedFragment
    object_id: bytes
    position: int


@dataclass(frozen=True, slots=True)
class AuditFailure:
    """A failed audit as kept for the operator: the evidence, and who and what it concerns."""

    evidence: Evidence
    datacenter: str
    objects: tuple[tuple[bytes, int], ...]
    """(object id, position) of the fragment in the objects watched (counted lost there)."""

    def fields(self) -> dict[str, object]:
        """Flat JSON-able fields (the log line's and ``/status``'s)."""
        return {
            **self.evidence.log_fields(),
            "datacenter": self.datacenter,
            "objects": [f"{object_id.hex()}:{position}" for object_id, position in self.objects],
        }


async def audit_each(
    node: Node,
    targets: Sequence[AuditTarget],
    planner: AuditPlanner,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[Evidence]:
    """Challenge every holder of ``targets`` once, now, on one of its fragments there (drawn
    by ``planner``'s rng); returns the evidence, at most one per holder, in the order judged.
    Takes at most about ``len(holders) / concurrency`` answer timeouts."""
    now = trio.current_time()
    addresses = {t.holder.node_id: t.holder.address for t in targets}
    planner.watch([t.fragment for t in targets], now)
    for holder in addresses:
        planner.hasten(holder, now)
    found: list[Evidence] = []

    async def one(challenge: Challenge) -> None:
        planner.drop(challenge.holder)  # one challenge each
        try:
            evidence = await challenge_holder(node, addresses[challenge.holder], challenge, planner)
        except (PeerUnreachable, PeerRefused):
            return  # not audited: it could not be reached
        if evidence is not None:
            found.append(evidence)

    while batch := planner.due(trio.current_time(), limit=max(1, concurrency)):
        async with trio.open_nursery() as nursery:
            for challenge in batch:
                nursery.start_soon(one, challenge)
    return found


class Auditor:
    """A steward's storage audits (see the module docstring).  Start with
    ``await nursery.start(auditor.run)``; cancelling it drops the challenges in flight."""

    def __init__(
        self,
        node: Node,
        planner: AuditPlanner,
        evidence: LocalEvidence,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if concurrency < 1:
            raise ValueError("audit concurrency must be at least 1")
        self.node = node
        self.planner = planner
        self.evidence = evidence
        self.concurrency = concurrency
        self.failures: deque[AuditFailure] = deque(maxlen=FAILURES_KEPT)
        """The latest failed audits, oldest first."""
        self._where: dict[tuple[bytes, bytes], list[tuple[bytes, int]]] = {}
        """(holder, fragment id) -> (object id, position) of the objects watched."""
        self._holders: dict[bytes, Candidate] = {}
        self._datacenters: dict[bytes, str] = {}
        """Of the holders watched or audited (for metrics and ``/status``)."""
        self._in_flight = 0
        self._wake = trio.Event()
        node.metrics.watch_audits(self.holder_failures)

    def watch(self, targets: Iterable[AuditTarget], now: float) -> None:
        """Replace what is audited with ``targets`` (a steward's round)."""
        where: dict[tuple[bytes, bytes], list[tuple[bytes, int]]] = {}
        holders: dict[bytes, Candidate] = {}
        fragments = []
        for target in targets:
            holder = target.holder.node_id
            where.setdefault((holder, target.fragment.fragment_id), []).append(
                (target.object_id, target.position)
            )
            holders[holder] = target.holder
            fragments.append(target.fragment)
        for challenge in self.planner.outstanding():  # still judged: keep where it points
            key = (challenge.holder, challenge.fragment_id)
            if key in self._where:
                where.setdefault(key, self._where[key])
            if challenge.holder in self._holders:
                holders.setdefault(challenge.holder, self._holders[challenge.holder])
        self._where, self._holders = where, holders
        audited = self.planner.audited()
        self._datacenters = {
            holder: datacenter
            for holder, datacenter in self._datacenters.items()
            if holder in audited or holder in holders
        }
        self._datacenters.update((h, c.datacenter) for h, c in holders.items())
        self.planner.watch(fragments, now)
        self._wake.set()

    async def spot(self, targets: Sequence[AuditTarget], planner: AuditPlanner) -> list[Evidence]:
        """Audit every holder of ``targets`` once now with ``planner`` (``check``), and count
        what fails as the steward's audits do."""
        for target in targets:
            key = (target.holder.node_id, target.fragment.fragment_id)
            where = self._where.setdefault(key, [])
            if (target.object_id, target.position) not in where:
                where.append((target.object_id, target.position))
            self._holders.setdefault(target.holder.node_id, target.holder)
            self._datacenters[target.holder.node_id] = target.holder.datacenter
        found = await audit_each(self.node, targets, planner, self.concurrency)
        now = trio.current_time()
        for evidence in found:
            self.record(evidence, now, follow_up=False)
        return found

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send due challenges until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                for evidence in self.planner.expire(now):
                    self.record(evidence, now)
                free = self.concurrency - self._in_flight
                for challenge in self.planner.due(now, limit=free) if free > 0 else ():
                    self._in_flight += 1
                    nursery.start_soon(self._challenge, challenge)
                self._wake = trio.Event()
                wake = self.planner.next_deadline()
                if self._in_flight >= self.concurrency or wake is None:
                    wake = math.inf  # a finished challenge or a new round wakes us
                with trio.move_on_at(wake):
                    await self._wake.wait()

    async def _challenge(self, challenge: Challenge) -> None:
        try:
            holder = self._holders.get(challenge.holder)
            address = holder.address if holder is not None else ""
            try:
                evidence = await challenge_holder(self.node, address, challenge, self.planner)
            except (PeerUnreachable, PeerRefused):
                self.planner.drop(challenge.holder)  # down: the next round decides
                return
            if evidence is not None:
                self.record(evidence, trio.current_time())
        finally:
            self._in_flight -= 1
            self._wake.set()

    def record(self, evidence: Evidence, now: float, *, follow_up: bool = True) -> None:
        """Count ``evidence``: metrics; and for a failure the fragment lost, the log line, the
        kept record and (``follow_up``) what the planner does next about the holder."""
        self.node.metrics.record_audit(evidence.verdict.value)
        if not evidence.verdict.failed:
            return
        challenge = evidence.challenge
        holder = challenge.holder
        objects = tuple(self._where.get((holder, challenge.fragment_id), ()))
        why = f"failed an audit ({evidence.verdict.value}): {evidence.reason}"
        for object_id, position in objects:
            self.evidence.fragments[(holder, object_id, position)] = why
        failure = AuditFailure(evidence, self._datacenter(holder), objects)
        self.failures.append(failure)
        log.warning(
            "holder %s (%s) failed an audit of fragment %s, counted lost: %s",
            short_id(holder),
            failure.datacenter or "?",
            challenge.fragment_id.hex()[:16],
            why,
            extra={"event": "audit_failed", "peer": holder.hex(), **failure.fields()},
        )
        if not follow_up:
            return
        self.planner.drop(holder, challenge.fragment_id)
        if evidence.verdict is not AuditVerdict.LATE or not self.planner.results(holder).passed:
            self.planner.hasten(holder, now)
        self._wake.set()

    def holder_failures(self) -> list[tuple[str, str, int]]:
        """(holder id, datacenter, failed audits) of every holder that failed one."""
        return [
            (holder.hex(), self._datacenter(holder), counts.failed)
            for holder, counts in self.planner.audited().items()
            if counts.failed
        ]

    def _datacenter(self, holder: bytes) -> str:
        return self._datacenters.get(holder, "")

    def status(self, recent: int = 32) -> dict[str, object]:
        """What ``/status`` shows: per holder audited its counts, then the latest failures."""
        audited: Mapping[bytes, HolderAudits] = self.planner.audited()
        return {
            "holders": [
                {
                    "node_id": holder.hex(),
                    "datacenter": self._datacenter(holder),
                    "passed": counts.passed,
                    "failed": counts.failed,
                    "last_verdict": None if counts.last is None else counts.last.verdict.value,
                    "watched_fragments": self.planner.watched(holder),
                }
                for holder, counts in audited.items()
            ],
            "recent_failures": [f.fields() for f in list(self.failures)[-recent:]],
        }
