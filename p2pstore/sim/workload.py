"""The workload: objects stored at the start, then puts and gets arriving as Poisson streams.

Strategy: a put is what the real client does -- candidates from the putter's view (its routing
table, by default), one :class:`~p2pstore.core.store_plan.PutPlacement` per chunk: the
rendezvous under the rule, a chosen holder that does not answer excluded for the whole object
and its share placed again, within the client's budget of holders per fragment -- with the upload
modelled by the network: the putter's uplink sends ``n`` fragments per chunk, one after
another.  The object counts as stored when the last fragment lands (holders that went down
meanwhile are replaced then, as the client's retries would).  The objects of the initial load
are placed the same way by their owners at time 0, without upload time.  A get succeeds when
the reader can reach k fragments of every chunk (partitions count); a sample of puts and gets
also runs the real DHT lookup of the object's key (see :mod:`p2pstore.sim.mesh_dht`).  All
random choices come from the workload's own RNG.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from p2pstore.core.placement import Candidate
from p2pstore.core.store_plan import PutPlacement
from p2pstore.errors import PlacementError
from p2pstore.sim.events import Event
from p2pstore.sim.units import HOUR

if TYPE_CHECKING:
    from p2pstore.sim.engine import Simulation


class Workload:
    """Puts and gets of one run."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.spec = sim.scenario.workload

    def handlers(self) -> dict[Event, Callable[[int, int], None]]:
        return {Event.PUT: self._on_put, Event.PUT_DONE: self._on_put_done, Event.GET: self._on_get}

    def start(self) -> None:
        """Store the initial objects (owner: peer ``i`` mod the initial peers) and start the
        put and get streams."""
        sim = self.sim
        owners = len(sim.peers)
        for i in range(self.spec.objects):
            owner = i % owners
            if not sim.peers.is_up(owner):
                owner = sim.peers.pick_live(self.rng) or owner
            number = self._new_object()
            holders = self._place(number, owner)
            if holders is None:
                sim.counters.puts_failed += 1
                continue
            sim.storage.store(number, holders)
            sim.stewards.stored(number, owner)
        self._next(Event.PUT, self.spec.puts_per_hour)
        self._next(Event.GET, self.spec.gets_per_hour)

    def _next(self, kind: Event, per_hour: float) -> None:
        if per_hour > 0:
            self.sim.queue.schedule(self.sim.now + self.rng.expovariate(per_hour / HOUR), kind)

    def _new_object(self) -> int:
        size = max(0, round(self.spec.object_size.sample(self.rng)))
        return self.sim.storage.new_object(
            self.rng.randbytes(20), size, self.spec.chunk_size, self.rng.randbytes(16)
        )

    def _place(self, number: int, client: int) -> list[list[int]] | None:
        """Holders for every chunk of an object put by ``client``, or None if the rule cannot
        be met (the put fails naming no holder, as the real client's does)."""
        sim = self.sim
        storage = sim.storage
        peers = sim.peers
        # the client is an institution's machine that met the mesh through ``client``: every
        # peer it knows may hold a fragment, ``client`` too (the real client is no storage peer)
        candidates = sim.candidates(client, include_self=True)
        rows: list[list[int]] = []
        reserved: dict[int, int] = {}
        excluded: set[bytes] = set()  # the object's, as the client's: later chunks skip them
        for chunk_number in storage.objects[number].chunks:
            size = storage.chunks[chunk_number].fragment_size
            try:
                plan = PutPlacement(
                    storage.fragment_ids(chunk_number),
                    candidates,
                    sim.rule,
                    excluded=excluded,
                    fragment_size=size,
                )
            except PlacementError:
                return None
            given_up = False  # the client stores every share at once: each spends its budget
            for share, first in enumerate(list(plan.placed)):
                holder: Candidate | None = first
                while holder is not None:
                    peer = peers.by_node_id[holder.node_id]
                    if peers.reachable(client, peer) and peers.fits(
                        peer, size, reserved.get(peer, 0)
                    ):
                        break
                    sim.counters.failed_stores += 1
                    holder = plan.failed(share)
                given_up = given_up or holder is None
            if given_up:
                return None
            chosen = plan.placed
            row = [peers.by_node_id[c.node_id] for c in chosen]
            for peer in row:
                reserved[peer] = reserved.get(peer, 0) + size
            rows.append(row)
        return rows

    def _on_put(self, _: int, __: int) -> None:
        sim = self.sim
        self._next(Event.PUT, self.spec.puts_per_hour)
        client = sim.peers.pick_live(self.rng)
        if client is None:
            return
        sim.counters.puts += 1
        number = self._new_object()
        self._maybe_lookup(client, number)
        share_bytes = sum(
            sim.storage.chunks[c].fragment_size for c in sim.storage.objects[number].chunks
        )
        done = sim.now
        for _share in range(sim.rule.n):  # one upload per share, one after another
            done = sim.network.transfer_out(client, share_bytes, sim.now)
        sim.queue.schedule(done, Event.PUT_DONE, number, client)

    def _on_put_done(self, number: int, client: int) -> None:
        sim = self.sim
        if not sim.peers.is_up(client):
            sim.counters.puts_failed += 1
            return
        holders = self._place(number, client)
        if holders is None:
            sim.counters.puts_failed += 1
            return
        sim.storage.store(number, holders)
        sim.stewards.stored(number, client)

    def _on_get(self, _: int, __: int) -> None:
        sim = self.sim
        self._next(Event.GET, self.spec.gets_per_hour)
        reader = sim.peers.pick_live(self.rng)
        stored = sim.storage.stored_list
        if reader is None or not stored:
            return
        number = stored[self.rng.randrange(len(stored))]
        sim.counters.gets += 1
        sim.counters.gets_ok += sim.storage.readable_by(number, reader)
        self._maybe_lookup(reader, number)

    def _maybe_lookup(self, client: int, number: int) -> None:
        if self.sim.dht is not None:
            self.sim.dht.maybe_lookup(client, self.sim.storage.objects[number].key)
