"""Stewards read the tenants' references from the mesh: put -> ls -> get -> overwrite -> delete,
and the space of what no name keeps is freed on every holder within the grace period, on both
transports; two names for the same bytes keep them until both are deleted."""

from __future__ import annotations

import io
import random

import pytest
import trio
from test_net_bucket_client import SETTINGS, read, tenant
from test_net_client import put_bytes
from test_net_collection import QUIET, gc_settings, held, sweep_all, with_collectors

from p2pstore.net.buckets import BucketService
from p2pstore.net.leases import LeaseRenewer
from p2pstore.net.references import MeshReferences, ReferenceSettings, keep
from p2pstore.net.steward import StewardSettings
from p2pstore.testing.storage_mesh import RULE_3_OF_6, StorageMesh

SECRET = b"s" * 32


def timings(net, settings) -> tuple[StewardSettings, ReferenceSettings, float]:
    """Steward rounds and reference checks well inside a lease; the lease stewards grant."""
    if net.kind == "memory":
        steward = StewardSettings(check_interval=1200.0, query_timeout=2.0)
        references = ReferenceSettings(recheck=600.0, replicas=3, rpc_timeout=3.0)
        return steward, references, settings.initial_lease
    steward = StewardSettings(check_interval=0.5, query_timeout=2.0)
    return steward, ReferenceSettings(recheck=0.5, replicas=3, rpc_timeout=3.0), 3.0


def referencing_mesh(net, count: int = 6):
    """A mesh whose nodes hold bucket replicas, steward, renew what is referenced, collect."""
    settings = gc_settings(net)
    steward, references, ttl = timings(net, settings)
    mesh = StorageMesh(net, count, steward=steward, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    sources = []
    for member, collector in zip(mesh.nodes, collectors, strict=True):
        buckets = BucketService(member.dht, SETTINGS)
        source = MeshReferences(member.dht, references, buckets=buckets)
        member.steward.renewer = LeaseRenewer(member.dht, source, collector=collector, ttl=ttl)
        sources.append(source)
    cycle = ttl + settings.grace_period + 2 * steward.check_interval + references.recheck + 1
    return mesh, collectors, sources, cycle


async def put(buckets, bucket: str, key: str, data: bytes, secret: bytes | None = None):
    return await buckets.put(
        bucket, key, io.BytesIO(data), len(data), rule=RULE_3_OF_6, convergence_secret=secret
    )


def total(mesh) -> int:
    return sum(len(ids) for ids in held(mesh).values())


async def test_deleting_every_name_frees_the_space_on_every_holder(net, clock):
    mesh, collectors, _, cycle = referencing_mesh(net)
    with trio.fail_after(20 * cycle + 600):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            alice = await tenant(mesh, nursery)
            await alice.create("photos", rule=RULE_3_OF_6.name)
            first = random.Random(1).randbytes(50_000)
            shared = random.Random(2).randbytes(50_000)
            await put(alice, "photos", "a.jpg", first)
            await put(alice, "photos", "b.jpg", shared, SECRET)
            await put(alice, "photos", "c.jpg", shared, SECRET)  # the same bytes, deduplicated
            assert [o.key for o in await alice.objects("photos")] == ["a.jpg", "b.jpg", "c.jpg"]
            assert await read(alice, "photos", "a.jpg") == first
            assert total(mesh) == 12  # 2 objects of one chunk, 3-of-6

            await trio.sleep(2 * cycle)
            assert await sweep_all(collectors) == 0, "a named object lost fragments"
            second = random.Random(3).randbytes(50_000)
            await trio.sleep(1)
            await put(alice, "photos", "a.jpg", second)  # an overwrite erases the old version
            assert await read(alice, "photos", "a.jpg") == second
            await trio.sleep(cycle)
            assert await sweep_all(collectors) == 6, "the overwritten version was not freed"
            assert total(mesh) == 12

            await alice.remove("photos", "b.jpg")
            await trio.sleep(2 * cycle)
            assert await sweep_all(collectors) == 0, "freed while c.jpg still names the bytes"
            assert await read(alice, "photos", "c.jpg") == shared

            await alice.remove("photos", "c.jpg")
            await alice.remove("photos", "a.jpg")
            deleted_at = trio.current_time()
            await trio.sleep(cycle)
            assert await sweep_all(collectors) == 12
            assert trio.current_time() - deleted_at <= cycle + 1
            assert total(mesh) == 0
            assert all(m.service.store.usage().bytes_used == 0 for m in mesh.nodes)
            assert await alice.objects("photos") == []
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("net", ["memory"], indirect=True)
async def test_a_bare_put_is_kept_by_its_lease_reference_until_it_expires(net, clock):
    mesh, collectors, _, cycle = referencing_mesh(net)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        kept = await put_bytes(client, random.Random(4).randbytes(50_000))
        await keep(client.dht, kept.read_cap.object_id, now=mesh.wall_clock(), seconds=3 * cycle)
        await put_bytes(client, random.Random(5).randbytes(50_000))  # nobody keeps this one
        await trio.sleep(2 * cycle)
        assert await sweep_all(collectors) == 6, "only the unreferenced put goes"
        placed = {f for c in kept.manifest.chunks for f in c.fragment_ids}
        assert {f for ids in held(mesh).values() for f in ids} == placed
        await trio.sleep(2 * cycle)  # the lease reference expired a cycle ago
        assert await sweep_all(collectors) == 6
        assert total(mesh) == 0
        nursery.cancel_scope.cancel()
