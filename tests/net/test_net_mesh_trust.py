"""Revocation spreads through the mesh: the CA's revocation list is published once as a DHT
record and every node adopts it within its refresh interval, without a file copied or a node
reloaded by hand; the revoked node's sessions close and its fragments are repaired elsewhere.
Replayed, older or forged lists change nothing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import trio
from test_net_client import get_bytes, put_bytes
from test_net_receipts import steward_of
from test_net_steward import (
    assert_within,
    patience,
    rule_of,
    steward_settings,
    until_whole,
)

from p2pstore.core.ca_records import policy_record, revocation_record
from p2pstore.core.mesh_policy import MeshPolicy
from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.net.mesh_trust import publish_ca_record
from p2pstore.testing.storage_mesh import StorageMesh


def refresh_interval(net) -> float:
    return 300.0 if net.kind == "memory" else 5.0


async def until_all_revoke(
    mesh: StorageMesh, serial: int, bound: float, *, started_nodes: int | None = None
) -> float:
    """Wait until every live node (of the first ``started_nodes``) and client refuses
    ``serial``; how long it took."""
    started = trio.current_time()
    members = mesh.nodes[:started_nodes]
    trusts = [m.mesh_trust for m in members if m.node_id not in mesh.dead] + mesh.client_trusts
    with trio.fail_after(bound):
        for trust in trusts:
            assert trust is not None
            while serial not in trust.dht.trust().revoked_serials:
                await trust.wait_adopted()
    return trio.current_time() - started


async def test_a_published_revocation_reaches_every_node_and_its_fragments_move(net, clock):
    """The CA revokes a holder and publishes its CRL through a client: within the refresh
    interval every node refuses it (no reload by hand), no node keeps a session with it, and
    its fragments are repaired on other nodes."""
    interval = refresh_interval(net)
    rule = rule_of(net, threshold=6)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,), trust_refresh=interval)
    data = random.Random(8).randbytes(100_000)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        object_id = result.read_cap.object_id
        steward = steward_of(mesh, object_id)
        revoked = next(
            mesh.by_id(h.node_id)
            for h in result.placement.chunks[0]
            if h is not None and h.node_id != steward.node_id
        )
        serial = revoked.credentials.identity.serial
        now = datetime.fromtimestamp(mesh.wall_clock(), UTC)
        net.ca.revoke(serial, now=now)
        record = revocation_record(net.ca, mesh.wall_clock())
        assert await publish_ca_record(client.dht, record) >= 1
        took = await until_all_revoke(mesh, serial, interval)
        assert took < interval
        honest = [m for m in mesh.nodes if m is not revoked]
        assert all(
            revoked.node_id not in {p.identity.node_id for p in m.node.peers()} for m in honest
        )
        status = await until_whole(mesh, client, result.verify_cap, 2, rule.n, patience(net, 4))
        assert_within(status, rule, {revoked.node_id})
        reader = await mesh.client(nursery)
        assert await get_bytes(reader, result.read_cap) == data
        nursery.cancel_scope.cancel()


async def test_a_node_that_missed_the_news_fetches_it_on_its_next_refresh(net, clock):
    """A node that heard no gossip (it was not running) takes the list from the DHT at its
    next refresh; a replay of the older list afterwards changes nothing."""
    interval = refresh_interval(net)
    mesh = StorageMesh(net, 5, trust_refresh=interval)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery, count=4)
        old = revocation_record(net.ca, mesh.wall_clock())
        victim = net.credentials(datacenter="dc-9")
        net.ca.revoke(victim.identity.serial, now=datetime.fromtimestamp(mesh.wall_clock(), UTC))
        record = revocation_record(net.ca, mesh.wall_clock())
        assert record.sequence == old.sequence + 1
        client = await mesh.client(nursery)
        await publish_ca_record(client.dht, record)
        await until_all_revoke(mesh, victim.identity.serial, interval, started_nodes=4)
        late = mesh.nodes[4]
        await mesh.start_more(nursery, [late])
        assert late.mesh_trust is not None
        with trio.fail_after(interval * 2):
            while victim.identity.serial not in late.dht.trust().revoked_serials:
                await late.mesh_trust.wait_adopted()
        assert not late.mesh_trust.offer(old)
        assert late.dht.trust().crl_number == record.sequence
        nursery.cancel_scope.cancel()


async def test_an_older_or_foreign_list_is_refused_by_every_holder(net, clock):
    """A member replays an older list, or a list of another CA under this mesh's key: holders
    refuse both, and nobody's trust goes back."""
    mesh = StorageMesh(net, 4, trust_refresh=refresh_interval(net))
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        old = revocation_record(net.ca, mesh.wall_clock())
        victim = net.credentials(datacenter="dc-9")
        net.ca.revoke(victim.identity.serial, now=datetime.fromtimestamp(mesh.wall_clock(), UTC))
        new = revocation_record(net.ca, mesh.wall_clock())
        client = await mesh.client(nursery)
        await publish_ca_record(client.dht, new)
        await until_all_revoke(mesh, victim.identity.serial, refresh_interval(net))
        foreign = revocation_record(net.other_ca(), mesh.wall_clock())
        assert await publish_ca_record(client.dht, old) == 0
        assert await publish_ca_record(client.dht, foreign) == 0
        assert all(m.dht.trust().crl_number == new.sequence for m in mesh.nodes)
        nursery.cancel_scope.cancel()


async def test_the_mesh_policy_reaches_every_node_and_the_newest_wins(net, clock):
    """The CA publishes a policy, then a newer one: every node and client ends with the newer,
    its callback told once per version; a replay of the older changes nothing."""
    interval = refresh_interval(net)
    mesh = StorageMesh(net, 4, trust_refresh=interval)
    told: list[tuple[int, int]] = []
    for member in mesh.nodes:
        assert member.mesh_trust is not None
        member.mesh_trust._on_policy = lambda p, i=member.index: told.append((i, p.sequence))
    fed = CodingRule("fed", k=2, n=4, repair_threshold=3)
    first = MeshPolicy(10, {**SHIPPED_RULES, "fed": fed})
    second = MeshPolicy(11, dict(SHIPPED_RULES))
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        for policy in (first, second):
            assert await publish_ca_record(
                client.dht, policy_record(net.ca, policy, mesh.wall_clock())
            )
            with trio.fail_after(interval):
                for trust in [m.mesh_trust for m in mesh.nodes] + mesh.client_trusts:
                    assert trust is not None
                    while trust.policy != policy:
                        await trust.wait_adopted()
        assert sorted(told) == sorted((m.index, s) for m in mesh.nodes for s in (10, 11))
        stale = policy_record(net.ca, first, mesh.wall_clock())
        assert await publish_ca_record(client.dht, stale) == 0
        assert all(m.mesh_trust.policy == second for m in mesh.nodes)  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
