"""Churn as events: sessions, departures and replacements, trace replay, outages, partitions.

Strategy: each source of churn only *schedules* the transitions it causes and hands them to
the engine's three verbs -- ``hold_down`` (one more reason to be down), ``release`` (one
less) and ``depart`` (for good) -- which do the bookkeeping once, whoever asked.  Reasons
stack, so a datacenter outage that ends does not revive a peer whose own session is over, and
a peer that departs during an outage stays gone.  Per-peer draws (session lengths, downtimes,
lifetimes) come from the peer's own RNG; outage timings from the churn RNG.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from p2pstore.sim.churn_spec import OutageSpec
from p2pstore.sim.events import Event

if TYPE_CHECKING:
    from p2pstore.sim.engine import Simulation

Disruption = tuple[float, float | None, str]
"""An outage or partition: when it began, when it ended (None while it lasts), what it was."""


class Churn:
    """Schedules and applies the scenario's churn."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.spec = sim.scenario.churn
        self._trace_peers = {peer for peer, _, _ in self.spec.trace}
        self._outages: list[tuple[OutageSpec, str, int]] = []
        """Outage streams: (spec, scope, target index) -- one per datacenter or region hit."""
        self._members: dict[int, list[int]] = {}
        """Peers held down by each running outage stream."""
        self.disruptions: list[Disruption] = [
            (p.at, p.at + p.duration, "partition") for p in self.spec.partitions
        ]
        """``[start, end or None while it lasts, what]`` of every outage and partition, for
        the plots' markers."""
        self._open: dict[int, int] = {}
        """Outage stream -> its entry in :attr:`disruptions` while it lasts."""

    def handlers(self) -> dict[Event, Callable[[int, int], None]]:
        return {
            Event.SESSION_END: self._on_session_end,
            Event.SESSION_START: self._on_session_start,
            Event.DEPART: lambda peer, _: self.sim.depart(peer),
            Event.JOIN: self._on_join,
            Event.TRACE_UP: self._on_trace_up,
            Event.TRACE_DOWN: self._on_trace_down,
            Event.OUTAGE_START: self._on_outage_start,
            Event.OUTAGE_END: self._on_outage_end,
            Event.PARTITION_START: self._on_partition_start,
            Event.PARTITION_END: self._on_partition_end,
        }

    def start(self) -> None:
        """Schedule the churn of the initial peers (call before any object is placed, so
        trace peers that start down, and peers of an outage at time 0, hold nothing: an
        outage at 0 models datacenters that join the mesh when it ends)."""
        sim = self.sim
        queue = sim.queue
        up_at_start = {peer for peer, up, down in self.spec.trace if up <= 0 < down}
        for peer in sorted(self._trace_peers - up_at_start):
            sim.hold_down(peer)
        for peer, up, down in self.spec.trace:
            if up > 0:
                queue.schedule(up, Event.TRACE_UP, peer)
            if down < sim.end:
                queue.schedule(down, Event.TRACE_DOWN, peer)
        for peer in range(len(sim.peers)):
            self.start_peer(peer)
        for spec in self.spec.outages:
            for scope, target in self._targets(spec):
                stream = len(self._outages)
                self._outages.append((spec, scope, target))
                first = spec.at if spec.at is not None else 0.0
                if spec.every is not None:
                    first += spec.every.sample(self.rng)
                if first <= sim.now:
                    self._on_outage_start(stream, 0)
                else:
                    queue.schedule(first, Event.OUTAGE_START, stream)
        for index, partition in enumerate(self.spec.partitions):
            queue.schedule(partition.at, Event.PARTITION_START, index)
            queue.schedule(partition.at + partition.duration, Event.PARTITION_END, index)

    def start_peer(self, peer: int) -> None:
        """Schedule a peer's first session end and its departure (per its own RNG)."""
        sim = self.sim
        rng = sim.peers.rng[peer]
        if self.spec.sessions is not None and peer not in self._trace_peers:
            sim.queue.schedule(sim.now + self.spec.sessions.sample(rng), Event.SESSION_END, peer)
        if self.spec.lifetime is not None:
            sim.queue.schedule(sim.now + self.spec.lifetime.sample(rng), Event.DEPART, peer)

    def departed(self, peer: int) -> None:
        """A peer left: schedule its empty replacement in the same datacenter."""
        if self.spec.replace_departed:
            datacenter = self.sim.peers.datacenter[peer]
            self.sim.queue.schedule(self.sim.now + self.spec.replace_after, Event.JOIN, datacenter)

    # -- handlers --------------------------------------------------------------------------------

    def _on_session_end(self, peer: int, _: int) -> None:
        sim = self.sim
        if sim.peers.departed[peer]:
            return
        sim.hold_down(peer)
        downtime = self.spec.downtimes.sample(sim.peers.rng[peer])
        sim.queue.schedule(sim.now + downtime, Event.SESSION_START, peer)

    def _on_session_start(self, peer: int, _: int) -> None:
        sim = self.sim
        if sim.peers.departed[peer]:
            return
        sim.release(peer)
        if self.spec.sessions is not None:
            session = self.spec.sessions.sample(sim.peers.rng[peer])
            sim.queue.schedule(sim.now + session, Event.SESSION_END, peer)

    def _on_join(self, datacenter: int, _: int) -> None:
        self.start_peer(self.sim.add_peer(datacenter))

    def _on_trace_up(self, peer: int, _: int) -> None:
        if not self.sim.peers.departed[peer]:
            self.sim.release(peer)

    def _on_trace_down(self, peer: int, _: int) -> None:
        if not self.sim.peers.departed[peer]:
            self.sim.hold_down(peer)

    def _on_outage_start(self, stream: int, _: int) -> None:
        sim = self.sim
        spec, scope, target = self._outages[stream]
        members = [p for p in self._peers_of(scope, target, spec) if not sim.peers.departed[p]]
        sim.counters.outages += 1
        what = f"{scope} outage" if scope != "peers" else "peers outage"
        if spec.permanent:
            self.disruptions.append((sim.now, sim.now, f"{what} (for good)"))
            for peer in members:
                sim.depart(peer)
            if spec.every is not None:
                sim.queue.schedule(
                    sim.now + spec.every.sample(self.rng), Event.OUTAGE_START, stream
                )
            return
        for peer in members:
            sim.hold_down(peer)
        self._members[stream] = members
        self._open[stream] = len(self.disruptions)
        self.disruptions.append((sim.now, None, what))
        sim.queue.schedule(sim.now + spec.duration.sample(self.rng), Event.OUTAGE_END, stream)

    def _on_outage_end(self, stream: int, _: int) -> None:
        sim = self.sim
        spec = self._outages[stream][0]
        entry = self._open.pop(stream)
        self.disruptions[entry] = (self.disruptions[entry][0], sim.now, self.disruptions[entry][2])
        for peer in self._members.pop(stream):
            if not sim.peers.departed[peer]:
                sim.release(peer)
        if spec.every is not None:
            sim.queue.schedule(sim.now + spec.every.sample(self.rng), Event.OUTAGE_START, stream)

    def _on_partition_start(self, index: int, _: int) -> None:
        sim = self.sim
        partition = self.spec.partitions[index]
        sim.start_partition(index, partition.groups)
        since = sim.partition_since if sim.partition_since is not None else sim.now
        if sim.scenario.repair.detection == "periodic":  # the round where their grace runs out
            sweep_at = sim.next_check(since + sim.rule.grace_period)
        else:
            sweep_at = since + sim.rule.grace_period + sim.scenario.repair.check_interval
        sim.queue.schedule(sweep_at, Event.SWEEP, index)

    def _on_partition_end(self, index: int, _: int) -> None:
        self.sim.end_partition(index)

    # -- targets ---------------------------------------------------------------------------------

    def _targets(self, spec: OutageSpec) -> list[tuple[str, int]]:
        peers = self.sim.peers
        if spec.scope == "peers":
            return [("peers", 0)]
        names = peers.datacenter_names if spec.scope == "datacenter" else peers.region_names
        chosen = spec.targets or tuple(names)
        return [(spec.scope, names.index(name)) for name in chosen]

    def _peers_of(self, scope: str, target: int, spec: OutageSpec) -> list[int]:
        peers = self.sim.peers
        if scope == "peers":
            return list(spec.peers)
        if scope == "datacenter":
            return list(peers.members[target])
        return [
            peer
            for datacenter, region in enumerate(peers.datacenter_region)
            if region == target
            for peer in peers.members[datacenter]
        ]
