"""Stewards in the simulator: the core's steward decisions, driven by the event heap.

Strategy: every decision is the core's, as the node's steward (``p2pstore.net.steward``) takes
it: who stewards an object is :func:`~p2pstore.core.steward_round.contenders` and
:func:`~p2pstore.core.steward_round.elected` over the peers in the steward's table (here: the
peers that have not departed and that no round found silent), answering when they are up and
reachable; rounds fall on the core's :class:`~p2pstore.core.steward_round.RoundClock` (see
:meth:`~p2pstore.sim.engine.Simulation.next_check`); a chunk is assessed by
:func:`~p2pstore.core.repair_plan.assess_chunk`, and its rebuilt shares placed by
:class:`~p2pstore.core.store_plan.RepairPlacement` (as many as fit the rule; a holder that is
down or unreachable excluded and the share placed again, within the store attempt budget),
with silent candidates excluded (:func:`~p2pstore.core.steward_round.silent_peers`).  What is
the simulator's own is *when* it asks: the node assesses every chunk at every round; here a
chunk is assessed only at the rounds where its verdict can have changed -- when a holder's
silence reaches the grace period, when a holder comes back to a chunk not
:func:`~p2pstore.core.repair_plan.healthy`, a round after a repair could not start
(``retry_after``) or landed, and when a partition sweep comes due.  The steward's view of
health is the mesh-wide :class:`~p2pstore.core.repair_plan.FailureDetector`, plus, during a
partition, every holder on the other side counted silent since the partition began.

A repair job fetches k fragments from live sources to the steward, decodes at the scenario's
rebuild rate, and uploads each rebuilt fragment to its new holder, all through
:class:`~p2pstore.sim.network.Network`; it lands when the last upload does -- or, when the
scenario gives a repair-time distribution (``[repair] time``), a drawn time after it started,
without occupying links, as the Markov models have it.  Either way its new holders are chosen
when it starts, and one that leaves before it lands gets nothing.  The rebuilt
fragments then replace the lost holders in the chunk (their old copies, if they come back, are
dropped), and the steward checks the chunk again.  Bytes counted are the bytes that cross the
network (a fragment the steward reads from or writes to its own store is counted apart, as
local bytes); messages are one per fetch and store.  A steward publishes the object's records
when the core's :class:`~p2pstore.core.steward_records.StewardRecords` says (taking an object
over, a placement that changed), at the checks where it looks at the object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pstore.core.protocol import MAX_CLOSER
from p2pstore.core.records import RecordKind
from p2pstore.core.repair_plan import PeerHealth, Verdict, assess_chunk, healthy
from p2pstore.core.steward_records import StewardRecords
from p2pstore.core.steward_round import contenders, elected, silent_peers
from p2pstore.core.store_plan import RepairPlacement
from p2pstore.errors import PlacementError
from p2pstore.sim.events import Event

if TYPE_CHECKING:
    from p2pstore.core.placement import Candidate
    from p2pstore.sim.engine import Simulation


@dataclass(frozen=True, slots=True)
class RepairJob:
    """A repair in flight: which chunk, run by whom, writing which shares where."""

    chunk: int
    steward: int
    targets: tuple[tuple[int, int], ...]
    """(share, new holder) pairs."""
    started: float


class Stewards:
    """Every steward of the run (one decision procedure, each call from one steward's view)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.jobs: dict[int, RepairJob] = {}
        self._next_job = 0
        self._pending: dict[int, float] = {}
        """Chunk -> the time of its next scheduled re-check (one pending per chunk)."""
        self._records: dict[int, StewardRecords] = {}
        """Per steward: the placement records it published."""
        self.enabled = sim.scenario.repair.mode != "none"

    def handlers(self) -> dict[Event, Callable[[int, int], None]]:
        return {
            Event.REPAIR_DONE: self._on_repair_done,
            Event.RETRY: self._on_retry,
            Event.SWEEP: self._on_sweep,
        }

    def steward_of(self, obj: int) -> int | None:
        """The peer the core's election makes the object's steward, or None if nobody is: the
        first live peer by distance to the key whose closer contacts (``max_closer`` at most)
        all fail to answer it.  A peer's table is modelled as every peer that has not departed
        and that no round found silent (the node's table drops a contact whose ping failed)."""
        sim = self.sim
        peers = sim.peers
        stored = sim.storage.objects[obj]
        node_id = peers.node_id
        health = sim.detector.health
        departed = peers.departed

        def in_tables(peer: int) -> bool:
            return not departed[peer] and health(node_id[peer]).silent_since is None

        known = peers.index.closest(stored.long_key, MAX_CLOSER + 1, in_tables)
        ids = [node_id[p] for p in known]
        by_id = peers.by_node_id
        for peer in known:
            if not peers.is_up(peer):
                continue
            asked = contenders(node_id[peer], stored.key, ids, MAX_CLOSER)
            if asked is None:
                return None

            def answers(other: bytes, peer: int = peer) -> bool:
                found = by_id[other]
                return peers.is_up(found) and peers.reachable(peer, found)

            if elected(asked, answers):
                return peer
        return None

    def stored(self, obj: int, client: int) -> None:
        """A put landed: the client publishes the object's records, then its steward takes
        the object on (publishing its own, as the node's steward does at its next round)."""
        key = self.sim.storage.objects[obj].key
        self.sim.publish(client, key, (RecordKind.MANIFEST, RecordKind.PLACEMENT))
        steward = self.steward_of(obj)
        if steward is not None:
            self._renew(obj, steward)

    def _renew(self, obj: int, steward: int) -> None:
        """Publish what the core says ``steward`` owes the object's records now."""
        sim = self.sim
        stored = sim.storage.objects[obj]
        named = frozenset({stored.placement_version})  # changes exactly when a holder does
        records = self._records.get(steward)
        if records is None:
            records = self._records[steward] = StewardRecords()
        kept = stored.key in records
        due = records.due(stored.key, named, sim.now, manifest_kept=kept, placement_kept=kept)
        if due:
            sim.counters.maintenance["repair"] += sim.publish(steward, stored.key, due)
        if RecordKind.PLACEMENT in due:
            records.sent(stored.key, named, sim.now)

    def holder_lost(self, peer: int) -> None:
        """``peer``'s silence reached the grace period: check every chunk it holds."""
        for chunk in list(self.sim.peers.held[peer]):
            self.check(chunk)

    def holder_back(self, peer: int) -> None:
        """``peer`` came back: at the next round, check its chunks still below threshold (one
        that had too few live sources may be repairable now).  A chunk at or above its
        threshold in live fragments is healthy in every steward's view, so it is skipped."""
        if not self.enabled:
            return
        sim = self.sim
        rule = sim.rule
        chunks = sim.storage.chunks
        at = sim.next_check(sim.now)
        for chunk in sim.peers.held[peer]:
            if not healthy(chunks[chunk].live, rule):
                self.check_at(chunk, at)

    def check_at(self, chunk_number: int, at: float) -> None:
        """Check ``chunk_number`` again at ``at`` (kept if an earlier check is pending)."""
        pending = self._pending.get(chunk_number)
        if pending is None or at < pending:
            self._pending[chunk_number] = at
            self.sim.queue.schedule(at, Event.RETRY, chunk_number)

    def check(self, chunk_number: int) -> None:
        """Assess one chunk from its steward's view and start a repair if it needs one."""
        sim = self.sim
        storage = sim.storage
        chunk = storage.chunks[chunk_number]
        obj = storage.objects[chunk.obj]
        if not self.enabled or obj.lost or not obj.stored or chunk.job >= 0:
            return
        steward = self.steward_of(chunk.obj)
        if steward is None:
            return
        self._renew(chunk.obj, steward)
        peers = sim.peers
        plan = assess_chunk(
            [peers.node_id[h] for h in chunk.holders], self._view(steward), sim.rule, sim.now
        )
        if plan.verdict is not Verdict.NEEDS_REPAIR:
            return
        k = sim.rule.k
        sources = [
            chunk.holders[s] for s in plan.live if peers.reachable(steward, chunk.holders[s])
        ][:k]
        targets = (
            self._place(chunk_number, plan.rebuild, (*plan.live, *plan.silent), plan.lost, steward)
            if len(sources) >= k
            else None
        )
        if targets is None:
            sim.counters.repair_blocked += 1
            self.check_at(chunk_number, sim.next_check(sim.now + sim.scenario.repair.retry_delay))
            return
        self._start(chunk_number, steward, sources, targets)

    # -- internals -------------------------------------------------------------------------------

    def _view(self, steward: int) -> Callable[[bytes], PeerHealth]:
        """The steward's view: the detector, plus the partition for holders across it."""
        sim = self.sim
        detector_health = sim.detector.health
        if sim.partition_since is None:
            return detector_health
        since = sim.partition_since
        peers = sim.peers
        side = peers.group[steward]

        def health(node_id: bytes) -> PeerHealth:
            known = detector_health(node_id)
            if known.silent_since is None and peers.group[peers.by_node_id[node_id]] != side:
                start = since if known.last_heard is None else max(since, known.last_heard)
                return PeerHealth(known.last_heard, silent_since=start)
            return known

        return health

    def _place(
        self,
        chunk_number: int,
        rebuild: tuple[int, ...],
        kept: tuple[int, ...],
        lost: tuple[int, ...],
        steward: int,
    ) -> dict[int, int] | None:
        """New holders for the shares of ``rebuild`` that fit the rule (share -> peer), or
        None if none fits or a share spent its store attempts (the repair waits a round)."""
        sim = self.sim
        peers = sim.peers
        chunk = sim.storage.chunks[chunk_number]
        ids = sim.storage.fragment_ids(chunk_number)
        survivors = [peers.candidate(chunk.holders[s]) for s in kept]
        excluded: set[bytes] = {peers.node_id[chunk.holders[s]] for s in lost}
        candidates = sim.candidates(steward, include_self=True)
        excluded |= silent_peers(candidates, sim.detector.health)  # as the node's repairer
        size = chunk.fragment_size
        try:  # as many rebuilt shares as fit the rule, as the node's repairer places
            plan = RepairPlacement(
                rebuild, ids, survivors, candidates, sim.rule, excluded=excluded, fragment_size=size
            )
        except PlacementError:
            return None
        chosen: dict[int, int] = {}
        for share in list(plan.placed):
            holder: Candidate | None = plan.placed[share]
            while holder is not None:
                peer = peers.by_node_id[holder.node_id]
                if peers.reachable(steward, peer) and peers.fits(peer, size):
                    chosen[share] = peer
                    break
                sim.counters.failed_stores += 1
                holder = plan.failed(share)
            if holder is None:
                return None
        return chosen

    def _start(
        self, chunk_number: int, steward: int, sources: list[int], targets: dict[int, int]
    ) -> None:
        sim = self.sim
        chunk = sim.storage.chunks[chunk_number]
        size = chunk.fragment_size
        network = sim.network
        now = sim.now
        drawn = sim.scenario.repair.time
        moved = 0
        local = 0
        fetched = now
        for source in sources:
            if source == steward:
                local += size
                continue
            moved += size
            if drawn is None:
                fetched = max(fetched, network.transfer(source, steward, size, now))
        decoded = fetched + len(sources) * size / sim.scenario.repair.rebuild_rate
        done = decoded
        for target in targets.values():
            if target == steward:
                local += size
                continue
            moved += size
            if drawn is None:
                done = max(done, network.transfer(steward, target, size, decoded))
        if drawn is not None:  # the model's repair time, not the transfers' (bytes still count)
            done = now + drawn.sample(sim.repair_time_rng)
        job = self._next_job
        self._next_job += 1
        self.jobs[job] = RepairJob(chunk_number, steward, tuple(sorted(targets.items())), now)
        chunk.job = job
        counters = sim.counters
        counters.repair_jobs += 1
        if counters.first_repair_at is None:
            counters.first_repair_at = now
        counters.last_repair_at = now
        counters.repair_bytes += moved
        counters.repair_bytes_local += local
        fetches = sum(source != steward for source in sources)
        stores = sum(target != steward for target in targets.values())
        messages = counters.messages
        messages["GetFragment"] = messages.get("GetFragment", 0) + fetches
        messages["PutFragment"] = messages.get("PutFragment", 0) + stores
        # the steward's own store is read and written without a message, as on the node
        counters.maintenance["repair"] += fetches + stores
        sim.queue.schedule(done, Event.REPAIR_DONE, job)

    def _on_repair_done(self, job_number: int, _: int) -> None:
        sim = self.sim
        job = self.jobs.pop(job_number)
        storage = sim.storage
        chunk = storage.chunks[job.chunk]
        chunk.job = -1
        sim.counters.repair_times.append(sim.now - job.started)
        if storage.objects[chunk.obj].lost:
            return
        rebuilt = 0
        for share, target in job.targets:
            if sim.peers.is_up(target) and job.chunk not in sim.peers.held[target]:
                storage.reassign(job.chunk, share, target, sim.now)
                rebuilt += 1
            else:
                sim.counters.failed_stores += 1
        sim.counters.fragments_rebuilt += rebuilt
        if not storage.within_rule(job.chunk, sim.rule):
            sim.counters.placement_violations += 1
        sim.queue.note(job.chunk, rebuilt)
        again = sim.next_check(sim.now)  # the steward's next round looks at the chunk again
        if again == sim.now:
            self.check(job.chunk)
        else:
            self.check_at(job.chunk, again)

    def _on_retry(self, chunk_number: int, _: int) -> None:
        if self._pending.get(chunk_number) != self.sim.now:
            return  # superseded by an earlier check
        del self._pending[chunk_number]
        self.check(chunk_number)

    def _on_sweep(self, partition: int, _: int) -> None:
        """A partition has lasted past the grace period: every steward checks its chunks."""
        if self.sim.partition_index != partition:
            return
        for chunk_number in range(len(self.sim.storage.chunks)):
            self.check(chunk_number)
