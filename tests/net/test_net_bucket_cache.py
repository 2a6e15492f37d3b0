"""A reader's cached bucket indexes, on TLS and in memory: a read costs one summary per replica
while nothing changed, the reader's own writes are seen at once, another writer's are read from
the replicas that changed, and a replica lying about its summary hides nothing."""

from __future__ import annotations

import os

import trio
from test_net_buckets import (
    BUCKET,
    SETTINGS,
    DroppingReplica,
    entries,
    services,
    tenant_client,
)

from p2pstore.identity import PeerIdentity
from p2pstore.net.bucket_cache import BucketCache
from p2pstore.net.buckets import BucketService
from p2pstore.testing.storage_mesh import StorageMesh
from p2pstore.wire import BucketPullReply, Message


class RestlessReplica(BucketService):
    """A hostile replica: serves its entries honestly under a new summary every time."""

    async def _on_pull(self, peer: PeerIdentity, message: Message) -> Message:
        reply = await super()._on_pull(peer, message)
        assert isinstance(reply, BucketPullReply)
        return BucketPullReply(entries=reply.entries, cursor=reply.cursor, summary=os.urandom(32))


async def test_a_cached_read_costs_a_summary_per_replica_until_someone_else_writes(net, clock):
    mesh = StorageMesh(net, 6)
    services(mesh)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            reader = await mesh.client(nursery, credentials=tenant_client(mesh))
            cache = BucketCache(BucketService(reader.dht, SETTINGS))
            other = await mesh.client(nursery, credentials=tenant_client(mesh))
            writing = BucketService(other.dht, SETTINGS)
            first = entries(other.node.credentials, other.dht.wall_clock(), 30)
            assert await writing.push(BUCKET, first) == SETTINGS.replicas

            assert len(await cache.index(BUCKET)) == 30
            assert cache.replica_reads == SETTINGS.replicas
            assert len(await cache.index(BUCKET)) == 30
            assert cache.replica_reads == SETTINGS.replicas  # summaries matched: nothing read

            own = entries(reader.node.credentials, reader.dht.wall_clock() + 1, 35)[30:]
            assert await cache.push(BUCKET, own) == SETTINGS.replicas
            assert len(await cache.index(BUCKET)) == 35  # seen at once...
            assert cache.replica_reads == SETTINGS.replicas  # ...and no replica read again

            later = entries(other.node.credentials, other.dht.wall_clock() + 2, 40)[35:]
            assert await writing.push(BUCKET, later) == SETTINGS.replicas
            assert len(await cache.index(BUCKET)) == 40
            assert cache.replica_reads == 2 * SETTINGS.replicas
            fresh = (await cache.service.fetch(BUCKET)).index
            assert fresh.summary() == (await cache.index(BUCKET)).summary()
            nursery.cancel_scope.cancel()


async def test_replicas_lying_about_their_summary_cost_a_read_and_hide_nothing(net, clock):
    mesh = StorageMesh(net, 6)
    held = services(mesh, {1: RestlessReplica, 2: DroppingReplica})
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            writer = await mesh.client(nursery, credentials=tenant_client(mesh))
            writing = BucketService(writer.dht, SETTINGS)
            batch = entries(writer.node.credentials, writer.dht.wall_clock(), 20)
            await writing.push(BUCKET, batch)
            replicas = {c.id for c in await writing.replicas(BUCKET)}
            liars = sum(  # a dropping replica's empty summary is no state's either
                isinstance(held[node_id], RestlessReplica | DroppingReplica) for node_id in replicas
            )
            reader = await mesh.client(nursery, credentials=tenant_client(mesh))
            cache = BucketCache(BucketService(reader.dht, SETTINGS))
            assert len(await cache.index(BUCKET)) == 20
            reads = cache.replica_reads
            for _ in range(3):
                assert len(await cache.index(BUCKET)) == 20
            assert cache.replica_reads == reads + 3 * liars
            nursery.cancel_scope.cancel()
