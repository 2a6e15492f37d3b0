"""A mesh of DHT nodes on the in-memory network, and the global oracle lookups are checked
against.  Used by the DHT tests (and small enough to read as an example of wiring a node)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from p2pstore.identity import MeshCA, NodeCredentials
from p2pstore.net.dht import Dht, DhtSettings
from p2pstore.net.memory import Latency, LinkProfile, MemoryNetwork
from p2pstore.net.node import Node, NodeSettings
from p2pstore.net.session import SessionSettings

EPOCH = float(int(time.time()))
"""Wall-clock seconds at virtual time 0: records carry absolute expiries, and their publishers'
certificates (issued now, so valid now) are checked at that clock."""

FAST_DHT = DhtSettings(rpc_timeout=2.0, refresh_interval=600.0, expire_interval=30.0)


def wall_clock() -> float:
    return EPOCH + trio.current_time()


@dataclass
class Member:
    name: str
    credentials: NodeCredentials
    node: Node
    dht: Dht
    scope: trio.CancelScope | None = None

    @property
    def node_id(self) -> bytes:
        return self.credentials.identity.node_id


class DhtMesh:
    """``count`` nodes spread over datacenters and regions, each running a node and its DHT."""

    def __init__(self, count: int, *, seed: int = 1, settings: DhtSettings = FAST_DHT) -> None:
        self.rng = random.Random(seed)
        # Issued at EPOCH (when this module was imported), so valid both at the DHT's wall clock
        # (records carry certificates) and at the real clock (the transport checks sessions).
        issued = datetime.fromtimestamp(EPOCH, UTC)
        self.ca = MeshCA.create_in_memory(mesh_name="test", now=issued)
        self.trust = self.ca.trust_anchor()
        self.network = MemoryNetwork(
            random.Random(seed + 1),
            LinkProfile(latency=Latency.uniform(0.002, 0.020)),
            connect_timeout=2.0,
        )
        self.settings = settings
        regions = ("FR-GES", "FR-IDF", "FR-ARA")
        self.members: list[Member] = []
        for index in range(count):
            credentials = self.ca.issue_in_memory(
                datacenter=f"dc-{index % 12}", region=regions[index % 3], now=issued
            )
            name = f"n{index}"
            transport = self.network.transport(name, credentials, self.trust)
            node = Node(
                credentials,
                transport,
                settings=NodeSettings(session=SessionSettings(hello_timeout=2, request_timeout=2)),
            )
            dht = Dht(
                node,
                lambda: self.trust,
                rng=random.Random(self.rng.random()),
                wall_clock=wall_clock,
                settings=settings,
            )
            self.members.append(Member(name, credentials, node, dht))
        self.gone: set[bytes] = set()

    async def start(self, nursery: trio.Nursery, *, batch: int = 25) -> None:
        """Start every member; the first is the bootstrap peer of all others, who join in
        concurrent batches."""
        for member in self.members:
            await nursery.start(self._run_member, member)
        first = self.members[0]
        for start in range(1, len(self.members), batch):
            async with trio.open_nursery() as joins:
                for member in self.members[start : start + batch]:
                    joins.start_soon(member.dht.join, [first.node.address])
        # The first node joined alone: let it learn the mesh like everyone else.
        await first.dht.join([])

    async def _run_member(
        self, member: Member, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            member.scope = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(member.node.run)
                await nursery.start(member.dht.run)
                task_status.started()

    def vanish(self, member: Member) -> None:
        """The peer disappears without warning: silence, and its tasks stop."""
        self.network.vanish(member.name)
        self.gone.add(member.node_id)
        assert member.scope is not None
        member.scope.cancel()

    def live(self) -> list[Member]:
        return [m for m in self.members if m.node_id not in self.gone]

    def oracle(
        self, target: bytes, k: int, *, asker: Member, live_only: bool = True
    ) -> list[bytes]:
        """The true k closest node ids to ``target`` (by XOR distance) other than the asker's:
        a lookup answers with other peers, never with the node that asks."""
        pool = [m for m in (self.live() if live_only else self.members) if m is not asker]
        key = int.from_bytes(target, "big")
        return sorted((m.node_id for m in pool), key=lambda i: int.from_bytes(i, "big") ^ key)[:k]
