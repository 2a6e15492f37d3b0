"""The DHT in a churn run: real routing tables and real lookups where they matter, a model of
the background traffic everywhere else.

Strategy (what is exact and what is modelled; ``simulations/README.md`` says it too):

* every peer has a real :class:`~p2pstore.core.routing.RoutingTable`, built by real joins or
  filled as joins would leave it (``bootstrap``), and kept up to date by the trio driver's
  probe rule applied lazily (see :mod:`p2pstore.sim.dht_driver`);
* a new peer (replacing a departed one) runs a real join; a returning peer keeps its table and
  runs the join's self-lookup for real (so the peers near it learn it is back), while the join's
  per-bucket refresh lookups are counted as messages, not run;
* a sample of gets and puts (``lookup_sample``) runs a real :class:`~p2pstore.core.lookup.Lookup`
  of the object's key from the client's table; it succeeds when it finds the live peer truly
  closest to the key (where the object's records live), and is exact when its k closest are the
  true k closest live peers -- both checked against :class:`~p2pstore.sim.idspace.IdIndex`;
* periodic traffic -- probes, bucket refreshes, announcements, record republishing -- is not
  run but counted from the timers of ``p2pstore.net.dht`` and ``p2pstore.core.published`` over
  the live peers, with the table sizes and lookup costs measured on this run's own tables.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from p2pstore.core.contact import Contact
from p2pstore.core.published import republish_period
from p2pstore.core.records import RecordKind
from p2pstore.errors import LocalProtocolError
from p2pstore.sim.dht_driver import DEFAULT_RPC_TIMEOUT, SimulatedDht
from p2pstore.sim.peers import Peers
from p2pstore.sim.scenario import DhtSpec, NetworkSpec

SIZE_SAMPLE = 64
"""Live peers whose tables are measured at each time-series row (table size, buckets)."""


@dataclass(slots=True)
class LookupStats:
    """Sampled lookups so far."""

    sampled: int = 0
    success: int = 0
    exact: int = 0
    hops: list[int] = field(default_factory=list)
    queried: int = 0

    @property
    def rpcs_per_lookup(self) -> float | None:
        return self.queried / self.sampled if self.sampled else None


class MeshDht:
    """A :class:`SimulatedDht` over the run's peers, plus the maintenance-traffic model."""

    def __init__(
        self, spec: DhtSpec, network: NetworkSpec, peers: Peers, seed: int, now: float
    ) -> None:
        self.spec = spec
        self.peers = peers
        self.dht = SimulatedDht(
            len(peers),
            k=spec.k,
            alpha=spec.alpha,
            seed=seed,
            rpc_latency=2 * network.latency_wan,
            rpc_timeout=max(DEFAULT_RPC_TIMEOUT, 2 * network.latency_wan),
            bootstrap="converged" if spec.bootstrap == "converged" else "random",
            contacts=list(peers.contact),
            probe_interval=spec.refresh_interval,
        )
        self.dht.now = now
        self.stats = LookupStats()
        self._rng = random.Random(seed ^ 0x5EED)  # noqa: S311  # simulation, not secrets
        self.join_rpcs = 0
        """FIND_NODE queries of joins and rejoins during the run (the initial build excluded)."""
        self._table_size = float(spec.k)
        self._buckets = 1.0

    def advance(self, now: float) -> None:
        """Move the DHT's clock to the engine's (lookups may have run it a little ahead)."""
        self.dht.now = max(self.dht.now, now)

    def went_down(self, peer: int) -> None:
        self.dht.set_alive(peer, False)

    def came_up(self, peer: int) -> None:
        """A returning peer meets a random live peer (its bootstrap) and looks itself up, so
        the peers near it learn it is back (a full join's bucket refreshes are not run)."""
        self.dht.set_alive(peer, True)
        if self.spec.rejoin_lookup:
            before = self.dht.rpcs
            self.dht.rejoin(peer, self._bootstrap(peer))
            self.join_rpcs += self.dht.rpcs - before

    def _bootstrap(self, peer: int) -> int | None:
        """A random live peer other than ``peer`` (drawn from the DHT's own RNG, so turning
        the DHT on or off does not change anyone's churn)."""
        chosen = [p for p in self.peers.sample_live(self._rng, 2) if p != peer]
        return chosen[0] if chosen else None

    def joined(self, peer: int, contact: Contact) -> None:
        """A new empty peer joins through a random live peer (alone if there is none)."""
        if self.dht.add_peer(contact) != peer:
            raise LocalProtocolError("the DHT and the engine must number peers alike")
        via = self._bootstrap(peer)
        if via is not None:
            before = self.dht.rpcs
            self.dht.join(peer, via)
            self.join_rpcs += self.dht.rpcs - before

    def contacts(self, peer: int) -> list[Contact]:
        """``peer``'s routing table contacts, brought up to date first."""
        self.dht.catch_up(peer)
        return self.dht.tables[peer].contacts()

    def maybe_lookup(self, asker: int, key: bytes) -> None:
        """Run the lookup of ``key`` for a get or put, for a ``lookup_sample`` fraction of
        them (the coin comes from the DHT's own RNG: sampling changes no one else's draws)."""
        if self._rng.random() < self.spec.lookup_sample:
            self.sample_lookup(asker, key)

    def sample_lookup(self, asker: int, key: bytes) -> None:
        """Run one real lookup of ``key`` from ``asker`` and score it against the oracle."""
        before = self.dht.rpcs
        result = self.dht.lookup(asker, key)
        self.dht.rpcs = before  # lookups for gets and puts are workload, not maintenance
        peers = self.peers
        truth = peers.index.closest(
            int.from_bytes(key, "big"),
            self.spec.k,
            lambda p: p != asker and peers.is_up(p),
        )
        found = [peers.by_node_id[c.id] for c in result.closest]
        stats = self.stats
        stats.sampled += 1
        stats.queried += result.queried
        stats.hops.append(result.hops)
        stats.success += bool(found) and bool(truth) and found[0] == truth[0]
        stats.exact += found == truth

    def measure_tables(self) -> None:
        """Refresh the mean table size and bucket count from a fixed stride of live peers."""
        live = self.peers.live
        if not live:
            return
        step = max(1, len(live) // SIZE_SAMPLE)
        chosen = live[::step][:SIZE_SAMPLE]
        tables = [self.dht.tables[p] for p in chosen]
        self._table_size = sum(len(t) for t in tables) / len(tables)
        self._buckets = sum(len(t.buckets) for t in tables) / len(tables)

    def maintenance(
        self, seconds: float, live: int, objects: int, rpcs_per_lookup: float
    ) -> dict[str, float]:
        """Messages the periodic timers of ``live`` peers send in ``seconds``."""
        refresh = self.spec.refresh_interval
        store = rpcs_per_lookup + self.spec.k  # find the k closest, then one STORE each
        return {
            "dht_probes": live * self._table_size * seconds / refresh,
            "dht_refresh": live * self._buckets * rpcs_per_lookup * seconds / refresh,
            "announcements": live * store * republish_rounds(RecordKind.ANNOUNCEMENT, seconds),
            "record_republish": objects
            * store
            * sum(republish_rounds(kind, seconds) for kind in OBJECT_RECORDS),
        }


OBJECT_RECORDS = (RecordKind.MANIFEST, RecordKind.PLACEMENT)
"""The records each object keeps published (by its steward; the node's Publisher sends them)."""


def republish_rounds(kind: RecordKind, seconds: float) -> float:
    """Times one record of ``kind`` is sent again in ``seconds``: the core's period, which the
    node's :class:`~p2pstore.net.publisher.Publisher` follows too."""
    return seconds / republish_period(kind)


def holder_check_messages(
    seconds: float, live: int, chunks: int, n: int, check_interval: float
) -> float:
    """Messages stewards send to check holders in ``seconds``: each live peer stewards
    ``chunks / live`` chunks and checks their holders every ``check_interval``, one batched
    message per distinct holder (``live * (1 - (1 - 1/live) ** fragments)`` of them)."""
    if live <= 0 or chunks <= 0:
        return 0.0
    fragments = chunks * n / live
    distinct = live * -math.expm1(fragments * math.log1p(-1 / live)) if live > 1 else 1.0
    return live * distinct * seconds / check_interval
