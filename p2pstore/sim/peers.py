"""The simulated population: who exists, where, whether up, and what each one holds.

Why flat lists indexed by peer number instead of one object per peer: the engine touches these
fields millions of times per run, and a peer number is also what the DHT driver, the id index
and the network model key on.  Each peer gets a child RNG seeded from one seed stream in peer
order, and draws its node id and its own churn (session lengths, downtimes, lifetime) from it,
so a peer's history depends on the scenario's seed and churn model only, never on what other
peers or the workload did: two sweep points that change the coding rule see the very same
failures (common random numbers, which shrink the noise between points).

Liveness: a peer is *up* when it has not departed and no reason holds it down; reasons stack
(a session ended, an outage of its datacenter, the trace says down), so an outage ending does
not revive a peer whose own session is over.  A partition does not make a peer down: it puts
peers into groups that cannot reach each other (``group``).
"""

from __future__ import annotations

import random

from p2pstore.core.contact import Contact
from p2pstore.core.placement import Candidate
from p2pstore.errors import LocalProtocolError
from p2pstore.identity.nodeid import NODE_ID_BYTES, NodeId
from p2pstore.sim.idspace import IdIndex
from p2pstore.sim.scenario import MeshSpec


class Peers:
    """Every peer ever created in a run, numbered in creation order (departed ones stay)."""

    def __init__(self, mesh: MeshSpec, seeds: random.Random) -> None:
        self._seeds = seeds
        self.capacity = mesh.capacity
        self.datacenter_names = [dc.name for dc in mesh.datacenters]
        self.region_names = list(mesh.regions)
        self.datacenter_region = [self.region_names.index(dc.region) for dc in mesh.datacenters]
        self.members: list[list[int]] = [[] for _ in mesh.datacenters]
        """Peer numbers ever created in each datacenter (departed ones included)."""
        self.node_id: list[NodeId] = []
        self.datacenter: list[int] = []
        self.rng: list[random.Random] = []
        self.departed: list[bool] = []
        self.down_reasons: list[int] = []
        self.epoch: list[int] = []
        """Incremented each time a peer goes down: events about an older outage are stale."""
        self.used: list[int] = []
        self.held: list[dict[int, int]] = []
        """Per peer: chunk number -> the share of it the peer holds (insertion ordered)."""
        self.group: list[int] = []
        self.by_node_id: dict[bytes, int] = {}
        self.index = IdIndex()
        self.contact: list[Contact] = []
        self._candidate: list[Candidate] = []
        self._live: list[int] = []
        self._live_at: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.node_id)

    def add(self, datacenter: int) -> int:
        """Create an empty, up peer in ``datacenter``; returns its number."""
        peer = len(self.node_id)
        rng = random.Random(self._seeds.getrandbits(64))  # noqa: S311  # simulation, not secrets
        node_id = NodeId(rng.randbytes(NODE_ID_BYTES))
        while node_id in self.by_node_id:
            node_id = NodeId(rng.randbytes(NODE_ID_BYTES))
        self.node_id.append(node_id)
        self.datacenter.append(datacenter)
        self.rng.append(rng)
        self.departed.append(False)
        self.down_reasons.append(0)
        self.epoch.append(0)
        self.used.append(0)
        self.held.append({})
        self.group.append(0)
        self.by_node_id[node_id] = peer
        self.members[datacenter].append(peer)
        contact = Contact(
            node_id, f"sim-{peer}", self.datacenter_names[datacenter], self.region_name(peer)
        )
        self.contact.append(contact)
        self._candidate.append(
            Candidate(node_id, contact.address, contact.datacenter, contact.region)
        )
        self.index.add(contact.long_id, peer)
        self._set_live(peer, True)
        return peer

    def region(self, peer: int) -> int:
        return self.datacenter_region[self.datacenter[peer]]

    def region_name(self, peer: int) -> str:
        return self.region_names[self.region(peer)]

    def is_up(self, peer: int) -> bool:
        return self.down_reasons[peer] == 0 and not self.departed[peer]

    def reachable(self, a: int, b: int) -> bool:
        """Whether ``b`` is up and in ``a``'s partition group."""
        return self.is_up(b) and self.group[a] == self.group[b]

    def hold_down(self, peer: int) -> bool:
        """Add a reason for ``peer`` to be down; True if it just went down."""
        was_up = self.is_up(peer)
        self.down_reasons[peer] += 1
        if was_up:
            self.epoch[peer] += 1
            self._set_live(peer, False)
        return was_up

    def release(self, peer: int) -> bool:
        """Remove a reason for ``peer`` to be down; True if it just came up.

        Raises :class:`LocalProtocolError` if no reason held it down."""
        if self.down_reasons[peer] <= 0:
            raise LocalProtocolError(f"peer {peer} released more often than held down")
        self.down_reasons[peer] -= 1
        came_up = self.is_up(peer)
        if came_up:
            self._set_live(peer, True)
        return came_up

    def depart(self, peer: int) -> bool:
        """``peer`` leaves for good; True if it was up until now."""
        was_up = self.is_up(peer)
        self.departed[peer] = True
        if was_up:
            self.epoch[peer] += 1
            self._set_live(peer, False)
        return was_up

    def fits(self, peer: int, size: int, reserved: int = 0) -> bool:
        """Whether ``peer``'s disk takes ``size`` more bytes (beyond ``reserved`` ones)."""
        return self.capacity is None or self.used[peer] + reserved + size <= self.capacity

    def candidate(self, peer: int) -> Candidate:
        """``peer`` as placement sees it (free space only when the mesh sets a capacity)."""
        if self.capacity is None:
            return self._candidate[peer]
        base = self._candidate[peer]
        free = max(0, self.capacity - self.used[peer])
        return Candidate(base.node_id, base.address, base.datacenter, base.region, free)

    # -- live peers, for uniform picks ----------------------------------------------------------

    @property
    def live(self) -> list[int]:
        """Up peers in an order that depends only on the run's history (do not mutate)."""
        return self._live

    def live_count(self) -> int:
        return len(self._live)

    def pick_live(self, rng: random.Random) -> int | None:
        """A uniformly random up peer, or None if none is up."""
        return self._live[rng.randrange(len(self._live))] if self._live else None

    def sample_live(self, rng: random.Random, count: int) -> list[int]:
        """Up to ``count`` distinct random up peers."""
        if count >= len(self._live):
            return list(self._live)
        return [self._live[i] for i in rng.sample(range(len(self._live)), count)]

    def _set_live(self, peer: int, live: bool) -> None:
        if live:
            self._live_at[peer] = len(self._live)
            self._live.append(peer)
            return
        where = self._live_at.pop(peer)
        last = self._live.pop()
        if last != peer:
            self._live[where] = last
            self._live_at[last] = where
