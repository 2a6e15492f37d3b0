"""A mesh of storage nodes (node + DHT + fragment service) and a client, on either transport of
the :class:`NetHarness`: TLS with on-disk stores and real time, or in memory with memory stores
under the mock clock.  Used by the data-path tests."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.identity import NodeCredentials, Role
from p2pstore.net.client import Client, ClientSettings
from p2pstore.net.dht import Dht, DhtSettings
from p2pstore.net.fragments import FragmentService
from p2pstore.net.mesh_trust import MeshTrust
from p2pstore.net.node import Node, NodeSettings
from p2pstore.net.session import SessionSettings
from p2pstore.net.steward import Steward, StewardSettings
from p2pstore.store import DiskFragmentStore, FragmentStore, MemoryFragmentStore
from p2pstore.testing.net_harness import NetHarness

DHT = DhtSettings(rpc_timeout=3.0, refresh_interval=600.0)
SMALL_CHUNKS = ClientSettings(chunk_size=64 * 1024, fragment_timeout=10.0, hedge_after=3.0)
RULE_3_OF_6 = CodingRule("test-3-of-6", k=3, n=6, repair_threshold=4)


@dataclass
class StorageNode:
    index: int
    credentials: NodeCredentials
    node: Node
    dht: Dht
    service: FragmentService
    steward: Steward | None = None
    mesh_trust: MeshTrust | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def node_id(self) -> bytes:
        return self.credentials.identity.node_id

    @property
    def datacenter(self) -> str:
        return self.credentials.identity.datacenter


class StorageMesh:
    """``count`` storage nodes, one datacenter each over two regions, joined through the first."""

    def __init__(
        self,
        net: NetHarness,
        count: int,
        *,
        quotas: dict[int, int] | None = None,
        settings: ClientSettings = SMALL_CHUNKS,
        datacenters: int | None = None,
        steward: StewardSettings | None = None,
        rules: tuple[CodingRule, ...] = (RULE_3_OF_6,),
        regions: tuple[str, ...] = ("FR-GES", "FR-IDF"),
        dht: DhtSettings = DHT,
        identity_quota: int | None = None,
        trust_refresh: float | None = None,
        versions: dict[int, tuple[int, ...]] | None = None,
    ) -> None:
        """``steward``: run a steward on every node (with ``rules`` added to the shipped ones).
        ``identity_quota``: fragment bytes one identity may store on a node (default: the
        store's, a quarter of its quota).  ``trust_refresh``: run a :class:`MeshTrust` on every
        node, fetching the CA's records at that interval.  ``versions``: the wire versions node
        ``index`` offers (default: this release's), e.g. ``(2,)`` for a node of the previous
        release."""
        self.net = net
        self.dht_settings = dht
        self.epoch = net.now.timestamp()
        """Wall-clock seconds at virtual time 0 (in memory): when the certificates were issued,
        so records, which carry their publisher's certificate, are checked while it is valid."""
        self.memory = net.kind == "memory"
        self.epoch = net.now.timestamp()
        self.trust = net.trust()
        """What every node of the mesh trusts (see :meth:`revoke`)."""
        self.nodes: list[StorageNode] = []
        self.dead: set[bytes] = set()
        self.client_nodes: list[Node] = []
        self.client_settings = settings
        self.trust_refresh = trust_refresh
        self.client_trusts: list[MeshTrust] = []
        for index in range(count):
            dc = index % (datacenters or count)
            region = regions[dc % len(regions)]
            credentials = net.credentials(datacenter=f"dc-{dc}", region=region)
            offered = (versions or {}).get(index)
            node = Node(
                credentials, net.transport(credentials), settings=self._node_settings(offered)
            )
            node_dht = self._dht(node, index)
            quota = (quotas or {}).get(index, 1 << 30)
            store: FragmentStore
            if self.memory:
                store = MemoryFragmentStore(quota, identity_quota=identity_quota)
                service = FragmentService(node, store, in_threads=False, wall_clock=self.wall_clock)
            else:
                store = DiskFragmentStore(
                    net.tmp_path / f"store-{index}", quota, identity_quota=identity_quota
                )
                service = FragmentService(node, store)
            member = StorageNode(index, credentials, node, node_dht, service)
            if steward is not None:
                member.steward = Steward(
                    node_dht,
                    {**SHIPPED_RULES, **{rule.name: rule for rule in rules}},
                    store=service.store,
                    settings=steward,
                    rng=random.Random(7000 + index),
                    client_settings=ClientSettings(
                        fragment_timeout=10.0, hedge_after=3.0, in_threads=not self.memory
                    ),
                )
            if trust_refresh is not None:
                member.mesh_trust = MeshTrust(node_dht, interval=trust_refresh)
            self.nodes.append(member)

    def _node_settings(self, versions: tuple[int, ...] | None = None) -> NodeSettings:
        session = SessionSettings(hello_timeout=5, request_timeout=10)
        if versions is None:
            return NodeSettings(session=session)
        return NodeSettings(session=session, protocol_versions=versions)

    def wall_clock(self) -> float:
        """Unix time: in memory virtual, from when the harness's certificates were issued (so
        receipts are checked against certificates in date), real on TLS."""
        return self.epoch + trio.current_time() if self.memory else time.time()

    def _dht(self, node: Node, seed: int) -> Dht:
        return Dht(
            node,
            lambda: node.transport.trust,  # as the daemon does: a reloaded CRL applies at once
            rng=random.Random(seed),
            wall_clock=self.wall_clock,
            settings=self.dht_settings,
        )

    async def start(self, nursery: trio.Nursery, count: int | None = None) -> None:
        """Start the first ``count`` nodes (all by default), joined through the first."""
        started = self.nodes[: len(self.nodes) if count is None else count]
        for member in started:
            await nursery.start(self._run, member)
        first = self.nodes[0].node.address
        async with trio.open_nursery() as joins:
            for member in started[1:]:
                joins.start_soon(member.dht.join, [first])
        await self.nodes[0].dht.join([])

    async def start_more(self, nursery: trio.Nursery, members: list[StorageNode]) -> None:
        """Start nodes created but not started yet, joined through the first node."""
        for member in members:
            await nursery.start(self._run, member)
        async with trio.open_nursery() as joins:
            for member in members:
                joins.start_soon(member.dht.join, [self.nodes[0].node.address])

    async def _run(
        self, member: StorageNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with member.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(member.node.run)
                await nursery.start(member.dht.run)
                if member.mesh_trust is not None:
                    await nursery.start(member.mesh_trust.run)
                if member.steward is not None:
                    await nursery.start(member.steward.run)
                task_status.started()

    async def client(
        self,
        nursery: trio.Nursery,
        settings: ClientSettings | None = None,
        credentials: NodeCredentials | None = None,
        versions: tuple[int, ...] | None = None,
    ) -> Client:
        """A client node (client certificate, no listening port) joined through live nodes,
        offering ``versions`` (default: this release's)."""
        credentials = credentials or self.net.credentials(
            datacenter="office", region="FR-GES", role=Role.CLIENT
        )
        transport = self.net.transport(credentials)
        node = Node(credentials, transport, listen=False, settings=self._node_settings(versions))
        self.client_nodes.append(node)
        dht = self._dht(node, 1000 + len(self.nodes))
        await nursery.start(node.run)
        await nursery.start(dht.run)
        await dht.join([m.node.address for m in self.nodes if m.node_id not in self.dead][:3])
        if self.trust_refresh is not None:  # as a long-lived client (a gateway) does
            mesh_trust = MeshTrust(dht, interval=self.trust_refresh)
            await nursery.start(mesh_trust.run)
            await mesh_trust.refresh()
            self.client_trusts.append(mesh_trust)
        base = settings or self.client_settings
        if self.memory:
            base = dataclasses.replace(base, in_threads=False)
        return Client(dht, settings=base)

    def revoke(self, member: StorageNode) -> None:
        """The mesh CA revokes ``member``'s certificate and every node (and client made here)
        reloads its trust, as SIGHUP does."""
        now = datetime.fromtimestamp(self.wall_clock(), UTC)
        self.net.ca.revoke(member.credentials.identity.serial, now=now)
        self.trust = self.net.trust()
        for node in [m.node for m in self.nodes] + self.client_nodes:
            node.transport.reload_trust(self.trust)
            node.apply_trust(self.trust)

    def kill(self, member: StorageNode) -> None:
        """The node stops at once: its sessions drop, its port closes (in memory: it vanishes)."""
        if self.memory:
            self.net.network.vanish(member.node.address)
        member.scope.cancel()
        self.dead.add(member.node_id)

    def by_id(self, node_id: bytes) -> StorageNode:
        return next(m for m in self.nodes if m.node_id == node_id)
