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
"""

from __future__ import annotations

import heapq
import random

from p2pstore.core.contact import Contact
from p2pstore.core.lookup import DEFAULT_ALPHA, Lookup, LookupResult
from p2pstore.core.routing import DEFAULT_K, RoutingTable, UpdateKind
from p2pstore.errors import ConfigError, LocalProtocolError
from p2pstore.identity.nodeid import NODE_ID_BYTES, NodeId

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
    ) -> None:
        if n < 1 or k < 1 or alpha < 1:
            raise ConfigError(f"a simulated DHT needs n, k, alpha >= 1; got n={n} k={k} a={alpha}")
        if not 0 < rpc_latency <= rpc_timeout:
            raise ConfigError(
                f"need 0 < rpc_latency <= rpc_timeout, got {rpc_latency} and {rpc_timeout}"
            )
        if bootstrap not in {"first", "random"}:
            raise ConfigError(f"bootstrap must be 'first' or 'random', got {bootstrap!r}")
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
        self.rng = random.Random(seed)  # noqa: S311  # reproducible by design, not a secret
        self.ids: list[NodeId] = self._draw_ids(n)
        self.index: dict[bytes, int] = {node_id: i for i, node_id in enumerate(self.ids)}
        self._long = [int.from_bytes(node_id, "big") for node_id in self.ids]
        self.contacts = [
            Contact(node_id, f"sim-{i}", f"dc-{i % DATACENTERS}", SIM_REGION)
            for i, node_id in enumerate(self.ids)
        ]
        self.tables = [RoutingTable(node_id, k=k, now=self.now) for node_id in self.ids]
        self.alive = [True] * n
        for joiner in range(1, n):
            via = 0 if bootstrap == "first" else self.rng.randrange(joiner)
            self.join(joiner, via)

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

    def lookup(self, from_index: int, target: bytes) -> LookupResult:
        """Run one FIND_NODE lookup of ``target`` from peer ``from_index`` to its end.

        Raises :class:`LocalProtocolError` if that peer is dead."""
        if not self.alive[from_index]:
            raise LocalProtocolError(f"peer {from_index} is dead and cannot look anything up")
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
                lookup.on_failure(peer_id)
        return lookup.result()

    def _find_node(self, peer: int, target: bytes, asker: int) -> list[Contact]:
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

    # -- churn --------------------------------------------------------------------------------

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
