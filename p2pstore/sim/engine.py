"""The churn lab's engine: the protocol core's decisions, thousands of peers, simulated months.

Strategy: one event heap (:mod:`p2pstore.sim.events`), no trio, no bytes.  The engine owns
the peers, the network model, the truth about every fragment (:mod:`p2pstore.sim.storage`), a
failure detector and, optionally, the DHT (:mod:`p2pstore.sim.mesh_dht`); the churn, the
workload and the stewards are components that register handlers in one ``{Event: handler}``
table and act through the engine's verbs.  Every random draw comes from one seeded stream
split into child streams -- peers (one child per peer, in creation order), churn, workload,
repair, DHT -- so the same scenario and seed give the same events in the same order, which the
trace digest proves.

Failure detection, as the node's steward does it (``p2pstore.net.steward``): with periodic
detection the stewards check their holders in rounds, every ``check_interval`` from one phase
drawn for the run; a holder that went down misses the next round, which starts its silence in
the detector, and the chunks it holds are assessed at the first round at which the rule's grace
period has run out (:meth:`Simulation.next_check`).  Poisson checks notice a silent holder after
an exponential delay, instant ones at once, and both assess it the moment its grace runs out.
A peer that comes back is heard from at once (at the next round it answers, before anything is
assessed), and its chunks still below their threshold are checked again then.  One detector
serves every steward: they probe the same holders, and a chunk's holders are all probed by its
one steward in the same round, so holders that fail together fall silent together, as here.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

from p2pstore.core.placement import Candidate
from p2pstore.core.records import RecordKind
from p2pstore.core.repair_plan import FailureDetector
from p2pstore.core.steward_round import RoundClock
from p2pstore.errors import LocalProtocolError
from p2pstore.sim.churn import Churn
from p2pstore.sim.events import Event, EventQueue
from p2pstore.sim.mesh_dht import MeshDht, holder_check_messages
from p2pstore.sim.metrics import Baseline, Counters, Outcome, Snapshot, step_ratio
from p2pstore.sim.network import Network
from p2pstore.sim.peers import Peers
from p2pstore.sim.scenario import Scenario, applied_rule
from p2pstore.sim.stewards import Stewards
from p2pstore.sim.storage import Storage
from p2pstore.sim.units import DAY
from p2pstore.sim.workload import Workload

Progress = Callable[[float], None]
"""Called with the simulated time at every time-series row."""


class Simulation:
    """One run of a scenario.  Build it, :meth:`run` it, then read :attr:`rows`,
    :meth:`outcome` and :meth:`digest` (``p2pstore.sim.report`` writes them out)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rule = applied_rule(scenario)
        self.end = scenario.duration
        streams = random.Random(scenario.seed)  # noqa: S311  # reproducible by design
        peer_seeds, churn_seed, workload_seed, repair_seed, dht_seed = (
            streams.getrandbits(64) for _ in range(5)
        )
        self.queue = EventQueue()
        self.counters = Counters()
        self.rows: list[dict[str, float | int | str]] = []
        self.detector = FailureDetector()
        self.partition_index: int | None = None
        self.partition_since: float | None = None
        self._partition_groups: tuple[tuple[str, ...], ...] = ()
        self._repair_rng = random.Random(repair_seed)  # noqa: S311
        self._candidate_rng = random.Random(repair_seed ^ 1)  # noqa: S311
        self.repair_time_rng = random.Random(repair_seed ^ 2)  # noqa: S311
        """Draws repair times when the scenario gives their distribution."""
        self._rounds: RoundClock | None = None
        """When the stewards' periodic rounds fall (the core's clock, as the node's)."""
        if scenario.repair.detection == "periodic":
            interval = scenario.repair.check_interval
            self._rounds = RoundClock(interval, self._repair_rng.uniform(0.0, interval))
        self._snapshot = Snapshot()
        self.peers = Peers(scenario.mesh, random.Random(peer_seeds))  # noqa: S311
        self.network = Network(scenario.network, lambda: self.queue.now)
        for datacenter, spec in enumerate(scenario.mesh.datacenters):
            for _ in range(spec.peers):
                self._register(self.peers.add(datacenter))
        self.storage = Storage(self.peers, scenario.rule)
        self.dht: MeshDht | None = None
        if scenario.dht.enabled:
            self.dht = MeshDht(scenario.dht, scenario.network, self.peers, dht_seed, 0.0)
        self.churn = Churn(self, random.Random(churn_seed))  # noqa: S311
        self.workload = Workload(self, random.Random(workload_seed))  # noqa: S311
        self.stewards = Stewards(self)
        table: dict[Event, Callable[[int, int], None]] = {
            Event.SAMPLE: self._on_sample,
            Event.DETECT: self._on_detect,
            Event.GRACE: self._on_grace,
            Event.WARMUP: self._on_warmup,
            **self.churn.handlers(),
            **self.workload.handlers(),
            **self.stewards.handlers(),
        }
        missing = set(Event) - set(table)
        if missing:
            raise LocalProtocolError(f"no handler for {sorted(e.name for e in missing)}")
        self._handlers = [table[kind] for kind in sorted(Event)]
        self._started = False
        self.baseline = Baseline(Counters(), 0, (0, 0, 0, 0))
        """What had happened by the end of the warm-up (nothing, without one)."""

    @property
    def now(self) -> float:
        return self.queue.now

    # -- running ---------------------------------------------------------------------------------

    def run(self, progress: Progress | None = None) -> None:
        """Run to the scenario's end (or until every object is lost, if it says so)."""
        if self._started:
            raise LocalProtocolError("a Simulation runs once; build a new one to run again")
        self._started = True
        self.churn.start()
        self.workload.start()
        self.queue.schedule(0.0, Event.SAMPLE)
        if self.scenario.warmup > 0:
            self.queue.schedule(self.scenario.warmup, Event.WARMUP)
        queue = self.queue
        handlers = self._handlers
        dht = self.dht
        stop_when_all_lost = self.scenario.stop_when_all_lost
        storage = self.storage
        while True:
            due = queue.next_time()
            if due is None or due > self.end:
                break
            kind, a, b = queue.pop()
            if dht is not None:
                dht.advance(due)
            handlers[kind](a, b)
            if kind == Event.SAMPLE and progress is not None:
                progress(due)
            if stop_when_all_lost and storage.lost_objects == storage.stored_objects > 0:
                self.end = due
                break
        if not self.rows or self.rows[-1]["time_s"] != self.end:
            queue.now = self.end
            self._record_row()
        for chunk in storage.chunks:
            queue.note(*chunk.holders)

    def digest(self) -> str:
        """The trace digest: equal for two runs exactly when they did the same things."""
        return self.queue.digest()

    # -- verbs for the components ------------------------------------------------------------------

    def hold_down(self, peer: int) -> None:
        """One more reason for ``peer`` to be down."""
        if self.peers.hold_down(peer):
            self._went_down(peer)

    def release(self, peer: int) -> None:
        """One reason less for ``peer`` to be down."""
        if self.peers.release(peer):
            self.storage.holder_up(peer)
            self.detector.heard(self.peers.node_id[peer], self.now)
            if self.dht is not None:
                self.dht.came_up(peer)
            self.stewards.holder_back(peer)

    def depart(self, peer: int) -> None:
        """``peer`` leaves for good; an empty peer may replace it (see the churn)."""
        if self.peers.departed[peer]:
            return
        if self.peers.depart(peer):
            self._went_down(peer)
        self.storage.holder_departed(peer, self.now)
        self.counters.departures += 1
        self.churn.departed(peer)

    def add_peer(self, datacenter: int) -> int:
        """A new empty peer joins ``datacenter`` (through a random live peer's DHT)."""
        peer = self.peers.add(datacenter)
        self._register(peer)
        self.counters.joins += 1
        if self.dht is not None:
            self.dht.joined(peer, self.peers.contact[peer])
        if self._partition_groups:
            self.peers.group[peer] = self._group_of(peer)
        return peer

    def next_check(self, at: float) -> float:
        """When stewards next assess chunks, at or after ``at``: the next round of the periodic
        checks (a time within a billionth of a round after one counts as that round, so a
        grace period of whole rounds ends on a round), or ``at`` itself with Poisson and
        instant detection.  Never before ``at``."""
        if self._rounds is None:
            return at
        return self._rounds.at_or_after(at)

    def start_partition(self, index: int, groups: tuple[tuple[str, ...], ...]) -> None:
        self.partition_index = index
        self.partition_since = self.next_check(self.now)  # the first round that misses them
        self._partition_groups = groups
        for peer in range(len(self.peers)):
            self.peers.group[peer] = self._group_of(peer)

    def end_partition(self, index: int) -> None:
        if self.partition_index != index:
            return
        self.partition_index = None
        self.partition_since = None
        self._partition_groups = ()
        self.peers.group[:] = [0] * len(self.peers)

    def candidates(self, peer: int, *, include_self: bool = False) -> list[Candidate]:
        """Whom ``peer`` may place fragments on, per ``placement.candidates``; with
        ``include_self`` (a steward: a storage node offers its own store, as the node's
        ``Client.candidates`` does) ``peer`` itself too."""
        peers = self.peers
        source = self.scenario.placement.candidates
        if source == "routing_table" and self.dht is not None:
            chosen = [peers.by_node_id[c.id] for c in self.dht.contacts(peer)]
            if include_self:
                chosen.append(peer)
        elif source == "all":
            chosen = list(peers.live)
        else:
            chosen = peers.sample_live(self._candidate_rng, self.scenario.placement.sample)
            if include_self and peer not in chosen:
                chosen.append(peer)
        # every peer known, as the node's client offers them: placement itself keeps the
        # rule's regions (core.placement.eligible), so no second filter here
        return [peers.candidate(p) for p in chosen]

    def publish(self, publisher: int, key: bytes, kinds: tuple[RecordKind, ...]) -> float:
        """``publisher`` publishes its records of ``kinds`` under ``key``: each a lookup of the
        key, then a ``Store`` to every live peer it reaches among the k closest (counted per
        kind in ``counters.records``).  Returns the messages sent."""
        peers = self.peers
        k = self.scenario.dht.k
        if self.partition_index is None:  # every live peer is reachable: count, do not search
            fanout = min(k, peers.live_count() - peers.is_up(publisher))
        else:

            def reached(peer: int) -> bool:
                return peer != publisher and peers.reachable(publisher, peer)

            fanout = len(peers.index.closest(int.from_bytes(key, "big"), k, reached))
        records = self.counters.records
        for kind in kinds:
            records[kind.name] = records.get(kind.name, 0) + fanout
        per_lookup = float(k)
        if self.dht is not None:
            per_lookup = self.dht.stats.rpcs_per_lookup or per_lookup
        return len(kinds) * (per_lookup + fanout)

    # -- outcome ---------------------------------------------------------------------------------

    def outcome(self) -> Outcome:
        """What a conformance check compares (see :class:`Outcome`)."""
        storage = self.storage
        n = self.rule.n
        live_chunks = [
            number
            for number, chunk in enumerate(storage.chunks)
            if storage.objects[chunk.obj].stored and not storage.objects[chunk.obj].lost
        ]
        return Outcome(
            objects_stored=storage.stored_objects,
            objects_lost=storage.lost_objects,
            fragments_rebuilt=self.counters.fragments_rebuilt,
            chunks=len(live_chunks),
            chunks_below_n=sum(storage.chunks[c].existing < n for c in live_chunks),
            chunks_outside_rule=sum(not storage.within_rule(c, self.rule) for c in live_chunks),
            placement_violations=self.counters.placement_violations,
            repair_blocked=self.counters.repair_blocked,
            repair_jobs=self.counters.repair_jobs,
            first_repair_at=self.counters.first_repair_at,
            last_repair_at=self.counters.last_repair_at,
        )

    # -- internals -------------------------------------------------------------------------------

    def _register(self, peer: int) -> None:
        self.network.add_peer(self.peers.datacenter[peer], self.peers.region(peer))

    def _group_of(self, peer: int) -> int:
        names = (
            self.peers.datacenter_names[self.peers.datacenter[peer]],
            self.peers.region_name(peer),
        )
        for index, group in enumerate(self._partition_groups):
            if names[0] in group or names[1] in group:
                return index
        return len(self._partition_groups)

    def _went_down(self, peer: int) -> None:
        self.storage.holder_down(peer)
        if self.dht is not None:
            self.dht.went_down(peer)
        if self.peers.held[peer]:
            self.queue.schedule(self._detected_at(), Event.DETECT, peer, self.peers.epoch[peer])

    def _detected_at(self) -> float:
        """When a holder that just went down misses its first check."""
        repair = self.scenario.repair
        if repair.detection == "poisson":
            return self.now + self._repair_rng.expovariate(1.0 / repair.check_interval)
        return self.next_check(self.now)  # the next round, or at once

    def _silent(self, peer: int, epoch: int) -> bool:
        return self.peers.epoch[peer] == epoch and not self.peers.is_up(peer)

    def _on_detect(self, peer: int, epoch: int) -> None:
        if self._silent(peer, epoch):
            self.detector.missed(self.peers.node_id[peer], self.now)
            lost_at = self.next_check(self.now + self.rule.grace_period)
            self.queue.schedule(lost_at, Event.GRACE, peer, epoch)

    def _on_grace(self, peer: int, epoch: int) -> None:
        if self._silent(peer, epoch):
            self.stewards.holder_lost(peer)

    def _on_warmup(self, _: int, __: int) -> None:
        stats = self.dht.stats if self.dht is not None else None
        self.baseline = Baseline(
            copy.deepcopy(self.counters),
            self.storage.lost_objects,
            (stats.sampled, stats.success, stats.exact, len(stats.hops)) if stats else (0, 0, 0, 0),
        )

    def _on_sample(self, _: int, __: int) -> None:
        self._record_row()
        if self.now < self.end:
            following = self.now + self.scenario.sample_every
            self.queue.schedule(min(following, self.end), Event.SAMPLE)

    def _record_row(self) -> None:
        now = self.now
        previous = self.rows[-1]["time_s"] if self.rows else 0.0
        seconds = now - float(previous)
        storage = self.storage
        counters = self.counters
        live = self.peers.live_count()
        self._add_maintenance(seconds, live)
        snapshot = self._snapshot
        maintenance = sum(counters.maintenance.values())
        lookups = self.dht.stats if self.dht is not None else None
        sampled = lookups.sampled if lookups else 0
        success = lookups.success if lookups else 0
        hops = sum(lookups.hops) if lookups else 0
        self.rows.append(
            {
                "time_s": now,
                "time_days": now / DAY,
                "peers": len(self.peers) - counters.departures,
                "live_peers": live,
                "objects": storage.stored_objects - storage.lost_objects,
                "objects_at_risk": storage.objects_below[0],
                "objects_unavailable": storage.objects_below[1],
                "objects_lost": storage.lost_objects,
                "repairs_running": len(self.stewards.jobs),
                "fragments_rebuilt": counters.fragments_rebuilt,
                "repair_bytes": counters.repair_bytes,
                "repair_bytes_step": counters.repair_bytes - snapshot.repair_bytes,
                "stored_bytes": storage.stored_bytes,
                "unique_bytes": storage.unique_bytes,
                "maintenance_messages_step": maintenance - snapshot.maintenance,
                "gets_step": counters.gets - snapshot.gets,
                "get_availability_step": step_ratio(
                    counters.gets_ok - snapshot.gets_ok, counters.gets - snapshot.gets
                ),
                "lookups_step": sampled - snapshot.lookups,
                "lookup_success_step": step_ratio(
                    success - snapshot.lookup_success, sampled - snapshot.lookups
                ),
                "lookup_hops_step": step_ratio(hops - snapshot.hops, sampled - snapshot.lookups),
            }
        )
        self._snapshot = Snapshot(
            counters.repair_bytes,
            maintenance,
            counters.gets,
            counters.gets_ok,
            sampled,
            success,
            hops,
        )

    def _add_maintenance(self, seconds: float, live: int) -> None:
        if seconds <= 0:
            return
        maintenance = self.counters.maintenance
        storage = self.storage
        objects = storage.stored_objects - storage.lost_objects
        maintenance["holder_checks"] += holder_check_messages(
            seconds, live, storage.tracked_chunks, self.rule.n, self.scenario.repair.check_interval
        )
        if self.dht is None:
            return
        self.dht.measure_tables()
        per_lookup = self.dht.stats.rpcs_per_lookup or float(self.scenario.dht.k)
        for kind, count in self.dht.maintenance(seconds, live, objects, per_lookup).items():
            maintenance[kind] += count
        maintenance["joins"] = float(self.dht.join_rpcs)
