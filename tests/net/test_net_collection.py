"""Holders free what no lease keeps: after a put's initial lease and the grace period, on both
transports; renewals from eligible stewards keep fragments, a hostile steward's "release" and
leases beyond its share change nothing, and a retention the tenant signed outlives any lease."""

from __future__ import annotations

import random

import pytest
import trio
from test_net_client import put_bytes

from p2pstore.core.bucket_entries import Op, sign_entry
from p2pstore.core.leases import sign_renewal
from p2pstore.core.references import sign_reference
from p2pstore.identity import Role
from p2pstore.net.collection import CollectionSettings, Collector
from p2pstore.net.dht import DhtSettings
from p2pstore.store.leases import lease_table_for
from p2pstore.testing.storage_mesh import StorageMesh
from p2pstore.wire import LeaseItem, RenewLeases, RenewLeasesReply, RetentionProof

QUIET = DhtSettings(rpc_timeout=3.0, refresh_interval=86400.0)
"""Days of virtual time pass in these tests: refresh the routing tables daily, not every 10 min."""


def gc_settings(net, **changes) -> CollectionSettings:
    """Hours in virtual time (each virtual hour costs the mesh's timers CPU), seconds on TLS."""
    if net.kind == "memory":
        base = {"grace_period": 6 * 3600.0, "initial_lease": 3 * 3600.0, "sweep_interval": 600.0}
    else:
        base = {"grace_period": 2.0, "initial_lease": 2.0, "sweep_interval": 0.5}
    return CollectionSettings(**{"enabled": True, **base, **changes})


def with_collectors(mesh: StorageMesh, settings: CollectionSettings) -> list[Collector]:
    for m in mesh.nodes:
        m.collector = Collector(m.service, m.dht, lease_table_for(m.service.store), settings)
    return [m.collector for m in mesh.nodes]


def held(mesh: StorageMesh) -> dict[bytes, list[bytes]]:
    """Fragment ids per holder."""
    return {m.node_id: m.service.store.ids(None, 1000) for m in mesh.nodes}


async def renew(steward, holder, object_id, fragment_ids, wall, *, ttl, retention=()):
    """``steward`` signs a lease on ``holder`` and sends it (to itself: through its collector's
    handler, as a steward renews its own fragments)."""
    renewal = sign_renewal(
        steward.credentials,
        holder.node_id,
        [LeaseItem(object_id=object_id, fragment_ids=tuple(fragment_ids))],
        now=wall,
        ttl=ttl,
        retention=retention,
    )
    if holder is steward:
        reply = await steward.collector.renew_own(renewal)
    else:
        reply = await steward.node.call(holder.node_id, holder.node.address, renewal, timeout=10)
    assert isinstance(reply, RenewLeasesReply)
    return reply


async def sweep_all(collectors: list[Collector]) -> int:
    return sum([(await c.sweep()).freed for c in collectors])


async def test_a_put_nobody_renews_is_freed_on_every_holder_after_the_grace(net, clock):
    settings = gc_settings(net)
    mesh = StorageMesh(net, 6, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        await put_bytes(client, random.Random(3).randbytes(100_000))
        before = held(mesh)
        assert sum(len(ids) for ids in before.values()) == 2 * 6  # 2 chunks of 3-of-6
        await trio.sleep(settings.initial_lease + settings.grace_period - 1)
        assert await sweep_all(collectors) == 0, "freed inside the initial lease + grace"
        await trio.sleep(2)
        assert await sweep_all(collectors) == 12
        assert all(m.service.store.usage().bytes_used == 0 for m in mesh.nodes)
        freed = sum(m.node.metrics.value("p2pstore_gc_freed_bytes_total") for m in mesh.nodes)
        assert freed > 100_000
        nursery.cancel_scope.cancel()


async def test_eligible_renewals_keep_and_a_hostile_release_does_not_free(net, clock):
    settings = gc_settings(net)
    mesh = StorageMesh(net, 6, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, random.Random(4).randbytes(50_000))
        object_id = result.verify_cap.object_id
        steward, hostile = mesh.nodes[0], mesh.nodes[1]
        long_lease = 3 * (settings.initial_lease + settings.grace_period)
        for member, ids in held(mesh).items():
            holder = mesh.by_id(member)
            if ids:
                reply = await renew(
                    steward, holder, object_id, ids, mesh.wall_clock(), ttl=long_lease
                )
                assert reply.applied == len(ids)
                await renew(hostile, holder, object_id, ids, mesh.wall_clock(), ttl=-1.0)
        await trio.sleep(settings.initial_lease + settings.grace_period + 1)
        assert await sweep_all(collectors) == 0
        assert sum(len(ids) for ids in held(mesh).values()) == 6
        nursery.cancel_scope.cancel()


async def test_a_signed_retention_outlives_every_lease(net, clock):
    settings = gc_settings(net)
    mesh = StorageMesh(net, 6, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        tenant = net.credentials(datacenter="office", region="FR-GES", role=Role.CLIENT,
                                 tenant="univ-strasbourg")  # fmt: skip
        client = await mesh.client(nursery, credentials=tenant)
        result = await put_bytes(client, random.Random(5).randbytes(50_000))
        object_id = result.verify_cap.object_id
        wall = mesh.wall_clock()
        retain = 4 * (settings.initial_lease + settings.grace_period)
        entry = sign_entry(
            tenant,
            bucket_token=b"b" * 32,
            name=b"n" * 32,
            op=Op.PUT,
            timestamp=int(wall * 1000),
            payload=b"sealed",
            retain_until=int(wall + retain),
        )
        reference = sign_reference(
            tenant,
            object_id,
            now=wall,
            bucket_token=entry.bucket_token,
            name=entry.name,
            version=entry.version,
        )
        proof = RetentionProof(reference=reference, entry=entry)
        steward = mesh.nodes[0]
        for member, ids in held(mesh).items():
            if ids:
                reply = await renew(
                    steward, mesh.by_id(member), object_id, ids, wall, ttl=1.0, retention=[proof]
                )
                assert reply.refused == ()
        await trio.sleep(2 * (settings.initial_lease + settings.grace_period))
        assert await sweep_all(collectors) == 0, "a retained object was freed"
        await trio.sleep(retain)
        assert await sweep_all(collectors) == 6
        nursery.cancel_scope.cancel()


async def test_a_far_steward_or_one_over_its_share_keeps_nothing(net, clock):
    settings = gc_settings(net, width=1, steward_share=10**9)
    mesh = StorageMesh(net, 6, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, random.Random(6).randbytes(50_000))
        object_id = result.verify_cap.object_id
        key = int.from_bytes(object_id[:20], "big")
        far = max(mesh.nodes, key=lambda m: int.from_bytes(m.node_id, "big") ^ key)
        refused = 0
        for member, ids in held(mesh).items():
            holder = mesh.by_id(member)
            if ids and holder is not far:
                reply = await renew(far, holder, object_id, ids, mesh.wall_clock(), ttl=10**7)
                assert reply.applied == 0
                refused += len(reply.refused)
        assert refused >= 4
        await trio.sleep(settings.initial_lease + settings.grace_period + 1)
        freed = await sweep_all(collectors)
        left = sum(len(ids) for ids in held(mesh).values())
        assert left == 6 - freed and left <= 1  # only what ``far`` holds itself may stay
        nursery.cancel_scope.cancel()


async def test_garbage_from_any_identity_goes_after_the_grace(net, clock):
    """Fragments stored and never stated (an interrupted put, junk) are orphans."""
    settings = gc_settings(net)
    mesh = StorageMesh(net, 3, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        junk = random.Random(7).randbytes(4096)
        from p2pstore.codec.fragment_ids import fragment_id
        from p2pstore.net.fragments import store_fragment

        target = mesh.nodes[2]
        await store_fragment(
            client.dht.node, target.node_id, target.node.address, fragment_id(junk), junk,
            timeout=10,
        )  # fmt: skip
        assert target.service.store.has(fragment_id(junk))
        await trio.sleep(settings.grace_period + 1)
        assert await sweep_all(collectors) == 1
        assert not target.service.store.has(fragment_id(junk))
        nursery.cancel_scope.cancel()


assert RenewLeases  # the message under test


@pytest.mark.parametrize("net", ["memory"], indirect=True)
async def test_with_gc_off_a_sweep_frees_nothing(net, clock):
    """The daemon's default until stewards read references: sweeps only adopt."""
    settings = gc_settings(net, enabled=False)
    mesh = StorageMesh(net, 6, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        await put_bytes(client, random.Random(10).randbytes(50_000))
        await trio.sleep(10 * (settings.initial_lease + settings.grace_period))
        assert await sweep_all(collectors) == 0
        assert sum(len(ids) for ids in held(mesh).values()) == 6
        nursery.cancel_scope.cancel()
