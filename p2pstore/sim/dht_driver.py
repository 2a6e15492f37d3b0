"""The DHT core driven by an event heap instead of trio: thousands of peers on one core.

Strategy: this is the third driver of DESIGN's "one core, three drivers", for routing and
lookups only.  Every peer owns a real :class:`RoutingTable` and every lookup is a real
:class:`Lookup`; this module only plays the network the trio driver (``p2pstore.net.dht``) plays,
with the same rules, so figures measured here are figures of the real code:

* a contact enters a table only when it talks to us directly: when ``A`` sends a query to a live
  ``B`` the session comes up on both sides (``A`` and ``B`` each ``update`` the other) and ``A``
  records ``B``'s reply with ``record_success``;
* FIND_NODE is answered with ``table.closest(target, k, exclude=(asker,), include_stale=False)``;
* a lookup is seeded with ``table.closest(target, k, include_stale=False)`` and marks the
  target's bucket refreshed; joining is a lookup of the own id, then one lookup per bucket from
  ``buckets_to_refresh(now, 0, rng)``, exactly as ``Dht.join``;
* a query to a dead peer fails after ``rpc_timeout`` (``lookup.on_failure`` and
  ``table.record_failure``); a PING_NEEDED is answered at once with whether the oldest contact
  is alive (the pinged peer does not record the pinger: pings are maintenance, not lookups).

Time is virtual: each lookup keeps a heap of in-flight queries keyed by ``(due, sequence)``; a
reply is due ``rpc_latency`` after its query was sent, a failure ``rpc_timeout`` after.  Popping
the heap advances ``now``, and the lookup asks for its next queries after every outcome, as the
trio driver does.  Lookups run one after another, so a peer's table only changes when it is
asked or asks, and nothing here depends on set or hash order: the same seed gives the same
tables, hops and query counts.

For long churn runs (``p2pstore.sim.engine``) two cheaper paths exist, both opt-in:

* ``bootstrap="converged"`` fills each table as joins would leave it -- for every bucket the
  peer's id implies, up to k random peers of that subtree -- in a fraction of the time of
  ``n`` real joins;
* ``probe_interval`` replays the node's upkeep rounds lazily, with the node's own machine
  (:class:`~p2pstore.core.dht_upkeep.DhtUpkeep`, one per peer, its rounds on the grid of the
  peer's arrival): when a table is next used (it asks, or is asked), the rounds it missed are
  run in one step: a contact found dead gets one failure per round since it went down whose
  probe picked it (at most ``max_failures``, so it is dropped exactly when the real node would
  have dropped it), a live contact with failures recovers.  Tables nobody uses are not touched,
  and the probe answers of healthy contacts are not replayed (they would only reorder a
  bucket's least-recently-seen list).
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_left
from collections.abc import Sequence

from p2pstore.core.contact import Contact
from p2pstore.core.dht_upkeep import DhtUpkeep
from p2pstore.core.lookup import DEFAULT_ALPHA, Lookup, LookupResult
from p2pstore.core.routing import DEFAULT_K, DEFAULT_MAX_FAILURES, RoutingTable, UpdateKind
from p2pstore.errors import ConfigError, LocalProtocolError
from p2pstore.identity.nodeid import NODE_ID_BYTES, NodeId

BOOTSTRAPS = ("first", "random", "converged")

DEFAULT_RPC_LATENCY = 0.05
"""Virtual seconds from sending a FIND_NODE to processing its reply."""

DEFAULT_RPC_TIMEOUT = 5.0
"""Virtual seconds before a query to a dead peer counts as failed (``DhtSettings.rpc_timeout``)."""

DATACENTERS = 12
SIM_REGION = "SIM"


class SimulatedDht:
    """``n`` peers with random ids, joined one at a time into one Kademlia mesh.

    Peers are numbered ``0 .. n-1``; peer 0 starts alone and every later peer joins through
    peer 0 (``bootstrap="first"``, like a mesh's single bootstrap node) or through a random
    peer that already joined (``bootstrap="random"``).  Building the mesh happens in
    ``__init__``: it is the pure computation this object stands for, with no I/O.

    Raises :class:`ConfigError` on a bad parameter.
    """

    def __init__(
        self,
        n: int,
        *,
        k: int = DEFAULT_K,
        alpha: int = DEFAULT_ALPHA,
        seed: int,
        rpc_latency: float = DEFAULT_RPC_LATENCY,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        bootstrap: str = "first",
        contacts: Sequence[Contact] | None = None,
        probe_interval: float | None = None,
        max_failures: int = DEFAULT_MAX_FAILURES,
    ) -> None:
        if contacts is not None:
            n = len(contacts)
        if n < 1 or k < 1 or alpha < 1:
            raise ConfigError(f"a simulated DHT needs n, k, alpha >= 1; got n={n} k={k} a={alpha}")
        if not 0 < rpc_latency <= rpc_timeout:
            raise ConfigError(
                f"need 0 < rpc_latency <= rpc_timeout, got {rpc_latency} and {rpc_timeout}"
            )
        if bootstrap not in BOOTSTRAPS:
            raise ConfigError(f"bootstrap must be one of {BOOTSTRAPS}, got {bootstrap!r}")
        if probe_interval is not None and probe_interval <= 0:
            raise ConfigError(f"probe_interval must be positive, got {probe_interval}")
        self.n = n
        self.k = k
        self.alpha = alpha
        self.rpc_latency = rpc_latency
        self.rpc_timeout = rpc_timeout
        self.now = 0.0
        self.rpcs = 0
        """FIND_NODE queries sent so far, joins included."""
        self.pings = 0
        """Eviction pings answered so far (PING_NEEDED from a full bucket)."""
        self.probe_interval = probe_interval
        self.max_failures = max_failures
        self.rng = random.Random(seed)  # noqa: S311  # reproducible by design, not a secret
        if contacts is None:
            contacts = [
                Contact(node_id, f"sim-{i}", f"dc-{i % DATACENTERS}", SIM_REGION)
                for i, node_id in enumerate(self._draw_ids(n))
            ]
        self.contacts: list[Contact] = list(contacts)
        self.ids: list[NodeId] = [contact.id for contact in self.contacts]
        self.index: dict[bytes, int] = {node_id: i for i, node_id in enumerate(self.ids)}
        if len(self.index) != n:
            raise ConfigError("simulated peers need distinct node ids")
        self._long = [contact.long_id for contact in self.contacts]
        self.tables = [self._new_table(node_id) for node_id in self.ids]
        self.upkeep = [self._new_upkeep(table) for table in self.tables]
        self.alive = [True] * n
        self.down_since = [0.0] * n
        self._synced = [0.0] * n
        self._failed: list[set[int]] = [set() for _ in range(n)]
        """Per table, peers this driver recorded a failure for: the only contacts that can be
        stale, so the only live ones a probe round has to revive."""
        if bootstrap == "converged":
            self._fill_converged()
            return
        for joiner in range(1, n):
            via = 0 if bootstrap == "first" else self.rng.randrange(joiner)
            self.join(joiner, via)

    def _new_table(self, node_id: NodeId) -> RoutingTable:
        return RoutingTable(node_id, k=self.k, max_failures=self.max_failures, now=self.now)

    def _new_upkeep(self, table: RoutingTable) -> DhtUpkeep | None:
        interval = self.probe_interval
        return (
            None if interval is None else DhtUpkeep(table, now=self.now, refresh_interval=interval)
        )

    def _draw_ids(self, n: int) -> list[NodeId]:
        ids: list[NodeId] = []
        seen: set[bytes] = set()
        while len(ids) < n:
            node_id = self.rng.randbytes(NODE_ID_BYTES)
            if node_id not in seen:
                seen.add(node_id)
                ids.append(NodeId(node_id))
        return ids

    # -- what a peer does ---------------------------------------------------------------------

    def join(self, joiner: int, via: int) -> None:
        """Peer ``joiner`` meets ``via`` (a session on both sides), looks up its own id, then
        refreshes every bucket, as ``Dht.join`` does."""
        self._meet(joiner, via)
        self.lookup(joiner, self.ids[joiner])
        table = self.tables[joiner]
        for target in table.buckets_to_refresh(self.now, 0.0, self.rng):
            self.lookup(joiner, target)

    def rejoin(self, peer: int, via: int | None) -> None:
        """A returning peer, with the table it had: it meets ``via`` (a bootstrap peer; None
        if it knows nobody up) and looks up its own id -- the first steps of ``Dht.join``."""
        if via is not None and via != peer:
            self._meet(peer, via)
        self.lookup(peer, self.ids[peer])

    def lookup(self, from_index: int, target: bytes) -> LookupResult:
        """Run one FIND_NODE lookup of ``target`` from peer ``from_index`` to its end.

        Raises :class:`LocalProtocolError` if that peer is dead."""
        if not self.alive[from_index]:
            raise LocalProtocolError(f"peer {from_index} is dead and cannot look anything up")
        self.catch_up(from_index)
        table = self.tables[from_index]
        lookup = Lookup(
            target,
            table.closest(target, self.k, include_stale=False),
            local_id=self.ids[from_index],
            k=self.k,
            alpha=self.alpha,
        )
        table.mark_refreshed(target, self.now)
        in_flight: list[tuple[float, int, int]] = []  # (due, sequence, queried peer)
        sequence = 0
        while True:
            for contact in lookup.next_queries():
                peer = self.index[contact.id]
                self.rpcs += 1
                if self.alive[peer]:
                    self._meet(from_index, peer)
                    due = self.now + self.rpc_latency
                else:
                    due = self.now + self.rpc_timeout
                heapq.heappush(in_flight, (due, sequence, peer))
                sequence += 1
            if lookup.done or not in_flight:
                break
            self.now, _, peer = heapq.heappop(in_flight)
            peer_id = self.ids[peer]
            if self.alive[peer]:
                table.record_success(peer_id, self.now)
                lookup.on_reply(peer_id, self._find_node(peer, target, from_index))
            else:
                table.record_failure(peer_id, self.now)
                self._failed[from_index].add(peer)
                lookup.on_failure(peer_id)
        return lookup.result()

    def _find_node(self, peer: int, target: bytes, asker: int) -> list[Contact]:
        self.catch_up(peer)
        return self.tables[peer].closest(
            target, self.k, exclude=(self.ids[asker],), include_stale=False
        )

    def _meet(self, a: int, b: int) -> None:
        """A session between two live peers came up: each records the other."""
        self._record(a, b)
        self._record(b, a)

    def _record(self, at: int, heard: int) -> None:
        table = self.tables[at]
        update = table.update(self.contacts[heard], self.now)
        if update.kind is UpdateKind.PING_NEEDED and update.ping is not None:
            self.pings += 1
            oldest = self.index[update.ping.id]
            table.ping_result(update.ping.id, self.alive[oldest], self.now)
            if not self.alive[oldest]:
                self._failed[at].add(oldest)

    # -- churn --------------------------------------------------------------------------------

    def add_peer(self, contact: Contact) -> int:
        """A new, empty peer (alive, with an empty table); returns its number.  Call
        :meth:`join` next.  Raises :class:`ConfigError` if its id is taken."""
        if contact.id in self.index:
            raise ConfigError(f"node id {contact.id.hex()} is already in the simulated mesh")
        peer = self.n
        self.n += 1
        self.contacts.append(contact)
        self.ids.append(contact.id)
        self.index[contact.id] = peer
        self._long.append(contact.long_id)
        self.tables.append(self._new_table(contact.id))
        self.upkeep.append(self._new_upkeep(self.tables[-1]))
        self.alive.append(True)
        self.down_since.append(self.now)
        self._synced.append(self.now)
        self._failed.append(set())
        return peer

    def set_alive(self, peer: int, alive: bool) -> None:
        """Peer ``peer`` goes down or comes back at ``now``; nobody is told.  A returning peer
        keeps its table (its probes resume: see ``probe_interval``)."""
        if self.alive[peer] == alive:
            return
        self.alive[peer] = alive
        if alive:
            self._synced[peer] = max(self._synced[peer], self.down_since[peer])
        else:
            self.down_since[peer] = self.now

    def catch_up(self, peer: int) -> None:
        """Apply the periodic probes ``peer`` ran since its table was last brought up to date
        (see the module docstring); a no-op without ``probe_interval``."""
        upkeep = self.upkeep[peer]
        if upkeep is None:
            return
        last = self._synced[peer]
        now = self.now
        if upkeep.rounds_between(last, now) <= 0:
            return
        table = self.tables[peer]
        failed = self._failed[peer]
        for other in sorted(failed):
            if self.alive[other]:
                table.record_success(self.ids[other], now)
                failed.discard(other)
        alive = self.alive
        index = self.index
        for contact in table.contacts():
            other = index[contact.id]
            if alive[other]:
                continue
            failed.add(other)
            liveness = table.liveness(contact.id)
            seen = 0.0 if liveness is None else liveness.last_seen
            since = max(last, self.down_since[other])  # earlier probes found it up
            missed = upkeep.rounds_probing(seen, since, now)
            for _ in range(min(missed, table.max_failures)):
                if upkeep.probed(contact.id, False, now):
                    break
        self._synced[peer] = now

    def _fill_converged(self) -> None:
        """Fill every table as joining would leave it: for each depth of the peer's own id,
        up to k random peers of the sibling subtree at that depth."""
        order = sorted(range(self.n), key=lambda i: self._long[i])
        longs = [self._long[i] for i in order]
        bits = NODE_ID_BYTES * 8
        for peer in range(self.n):
            own = self._long[peer]
            for depth in range(bits):
                width = bits - depth - 1
                prefix = (own >> (width + 1)) << (width + 1)
                sibling = prefix | ((~own >> width & 1) << width)
                start = bisect_left(longs, sibling)
                end = bisect_left(longs, sibling + (1 << width))
                span = range(start, end)
                chosen = span if len(span) <= self.k else self.rng.sample(span, self.k)
                for position in chosen:
                    self._record(peer, order[position])
                own_low = (own >> width) << width
                if bisect_left(longs, own_low + (1 << width)) - bisect_left(longs, own_low) <= 1:
                    break  # nobody else shares this prefix: deeper buckets are empty

    def kill(self, fraction: float, rng: random.Random) -> list[int]:
        """Mark ``round(fraction * live peers)`` live peers dead, chosen with ``rng``; returns
        their indices, ascending.  Dead peers answer nothing; tables learn it from failures.

        Raises :class:`ConfigError` unless ``0 <= fraction < 1``."""
        if not 0 <= fraction < 1:
            raise ConfigError(f"kill() takes a fraction in [0, 1), got {fraction}")
        live = self.live_peers()
        victims = sorted(rng.sample(live, round(fraction * len(live))))
        for victim in victims:
            self.alive[victim] = False
        return victims

    def live_peers(self) -> list[int]:
        """Indices of the peers still alive, ascending."""
        return [i for i, up in enumerate(self.alive) if up]

    # -- the oracle -----------------------------------------------------------------------------

    def oracle(self, asker_index: int, target: bytes, k: int | None = None) -> list[NodeId]:
        """The true ``k`` (default the mesh's k) live peers nearest ``target`` by XOR, nearest
        first, leaving out the asker (a lookup never returns its own node)."""
        wanted = self.k if k is None else k
        key = int.from_bytes(target, "big")
        nearest = heapq.nsmallest(
            wanted,
            (i for i in range(self.n) if self.alive[i] and i != asker_index),
            key=lambda i: self._long[i] ^ key,
        )
        return [self.ids[i] for i in nearest]

    def is_exact(self, asker_index: int, result: LookupResult) -> bool:
        """True when ``result.closest`` is exactly the oracle's answer, in order."""
        found: list[bytes] = [contact.id for contact in result.closest]
        return found == self.oracle(asker_index, result.target, self.k)
