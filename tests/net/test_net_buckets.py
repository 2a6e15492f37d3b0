"""Bucket indexes on the mesh, on TLS and in memory: replicas on the peers closest to the bucket,
reads that merge every replica's verified entries, anti-entropy, and hostile replicas that drop
or forge entries without changing what a reader sees."""

from __future__ import annotations

import dataclasses
import hashlib

import trio

from p2pstore.core.bucket_entries import Op, bucket_id, sign_entry
from p2pstore.identity import PeerIdentity, Role
from p2pstore.net.buckets import BucketService, BucketSettings
from p2pstore.testing.storage_mesh import StorageMesh
from p2pstore.wire import BucketPullReply, Message

SETTINGS = BucketSettings(replicas=4, rpc_timeout=5.0, anti_entropy_interval=3600.0)
TOKEN = hashlib.sha256(b"photos").digest()
TENANT = "univ-strasbourg"
BUCKET = bucket_id(TENANT, TOKEN)


class DroppingReplica(BucketService):
    """A hostile replica: stores what it is sent, serves nothing of it."""

    async def _on_pull(self, peer: PeerIdentity, message: Message) -> Message:
        return BucketPullReply(entries=(), cursor=b"", summary=b"")


class ForgingReplica(BucketService):
    """A hostile replica: serves its entries with the payloads swapped (signatures break)."""

    async def _on_pull(self, peer: PeerIdentity, message: Message) -> Message:
        reply = await super()._on_pull(peer, message)
        assert isinstance(reply, BucketPullReply)
        forged = tuple(dataclasses.replace(e, payload=b"ransom") for e in reply.entries)
        return dataclasses.replace(reply, entries=forged)


def tenant_client(mesh: StorageMesh):
    return mesh.net.credentials(
        datacenter="office", region="FR-GES", role=Role.CLIENT, tenant=TENANT
    )


def entries(signer, now: float, count: int):
    return [
        sign_entry(
            signer,
            bucket_token=TOKEN,
            name=hashlib.sha256(f"name-{i}".encode()).digest(),
            op=Op.PUT,
            timestamp=int(now * 1000) - i,
            payload=f"sealed-{i}".encode(),
        )
        for i in range(count)
    ]


def services(mesh: StorageMesh, kinds=None) -> dict[bytes, BucketService]:
    kinds = kinds or {}
    return {m.node_id: kinds.get(m.index, BucketService)(m.dht, SETTINGS) for m in mesh.nodes}


async def test_a_tenant_writes_a_bucket_to_its_replicas_and_another_machine_reads_it(net, clock):
    mesh = StorageMesh(net, 6)
    held = services(mesh)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            writer = await mesh.client(nursery, credentials=tenant_client(mesh))
            writing = BucketService(writer.dht, SETTINGS)
            batch = entries(writer.node.credentials, writer.dht.wall_clock(), 70)
            assert await writing.push(BUCKET, batch) == SETTINGS.replicas
            replicas = await writing.replicas(BUCKET)
            for contact in replicas:
                index = held[contact.id].replica.index(BUCKET)
                assert index is not None and len(index) == 70
            reader = await mesh.client(nursery, credentials=tenant_client(mesh))
            outcome = await BucketService(reader.dht, SETTINGS).fetch(BUCKET)
            assert len(outcome.index) == 70
            assert sorted(outcome.answered) == sorted(c.id for c in replicas)
            assert outcome.refused == []
            nursery.cancel_scope.cancel()


async def test_hostile_replicas_that_drop_or_forge_entries_hide_nothing(net, clock):
    mesh = StorageMesh(net, 6)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            writer = await mesh.client(nursery, credentials=tenant_client(mesh))
            writing = BucketService(writer.dht, SETTINGS)
            replicas = await writing.replicas(BUCKET)
            by_id = {m.node_id: m for m in mesh.nodes}
            hostile = {by_id[replicas[0].id].index: DroppingReplica}
            hostile[by_id[replicas[1].id].index] = ForgingReplica
            held = services(mesh, hostile)
            batch = entries(writer.node.credentials, writer.dht.wall_clock(), 10)
            assert await writing.push(BUCKET, batch) == SETTINGS.replicas
            # A forged entry from another tenant's client is refused by every honest replica.
            other = mesh.net.credentials(
                datacenter="office", region="FR-GES", role=Role.CLIENT, tenant="other-tenant"
            )
            stranger = await mesh.client(nursery, credentials=other)
            intruder = dataclasses.replace(
                entries(other, stranger.dht.wall_clock(), 1)[0], tenant=TENANT
            )
            assert await BucketService(stranger.dht, SETTINGS).push(BUCKET, [intruder]) == 0
            for contact in replicas[2:]:
                assert len(held[contact.id].replica.index(BUCKET)) == 10

            reader = await mesh.client(nursery, credentials=tenant_client(mesh))
            outcome = await BucketService(reader.dht, SETTINGS).fetch(BUCKET)
            assert {e.entry for e in outcome.index.entries()} == set(batch)
            assert len(outcome.refused) == 10  # the forger's copies, each caught
            nursery.cancel_scope.cancel()


async def test_anti_entropy_brings_every_replica_to_the_same_index(net, clock):
    mesh = StorageMesh(net, 6)
    held = services(mesh)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            writer = await mesh.client(nursery, credentials=tenant_client(mesh))
            writing = BucketService(writer.dht, SETTINGS)
            replicas = await writing.replicas(BUCKET)
            first, second = (
                entries(writer.node.credentials, writer.dht.wall_clock(), 600)[i::2] for i in (0, 1)
            )
            # Two replicas each got half of the writes (the others none): a partition.
            assert await writing._push_to(replicas[0], BUCKET, first)
            assert await writing._push_to(replicas[1], BUCKET, second)
            await held[replicas[0].id].anti_entropy()
            await held[replicas[1].id].anti_entropy()
            summaries = {held[c.id].replica.index(BUCKET).summary() for c in replicas}
            assert len(summaries) == 1
            # 600 entries: several pages each way (256 per message).
            assert all(len(held[c.id].replica.index(BUCKET)) == 600 for c in replicas)
            nursery.cancel_scope.cancel()


class LoopingReplica(BucketService):
    """A hostile replica: every page says "more after this", with the same cursor."""

    async def _on_pull(self, peer: PeerIdentity, message: Message) -> Message:
        reply = await super()._on_pull(peer, message)
        assert isinstance(reply, BucketPullReply)
        return dataclasses.replace(reply, cursor=b"\x00" * 32, summary=b"lies")


async def test_anti_entropy_with_hostile_peers_keeps_only_what_verifies_and_terminates(
    net, clock, log_events
):
    mesh = StorageMesh(net, 6)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            writer = await mesh.client(nursery, credentials=tenant_client(mesh))
            writing = BucketService(writer.dht, SETTINGS)
            replicas = await writing.replicas(BUCKET)
            by_id = {m.node_id: m for m in mesh.nodes}
            hostile = {by_id[replicas[1].id].index: ForgingReplica}
            hostile[by_id[replicas[2].id].index] = LoopingReplica
            held = services(mesh, hostile)
            batch = entries(writer.node.credentials, writer.dht.wall_clock(), 20)
            for contact in replicas[1:3]:
                assert await writing._push_to(contact, BUCKET, batch)
            assert await writing._push_to(replicas[0], BUCKET, batch[:1])  # it knows the bucket
            honest = held[replicas[0].id]
            await honest.anti_entropy()
            # It took nothing from the forger, and the looping peer's entries once.
            assert {e.entry for e in honest.replica.index(BUCKET).entries()} == set(batch)
            assert log_events.matching(event="bucket_entry_refused")
            assert log_events.matching(event="bucket_pull_looped")
            reader = await mesh.client(nursery, credentials=tenant_client(mesh))
            outcome = await BucketService(reader.dht, SETTINGS).fetch(BUCKET)
            assert {e.entry for e in outcome.index.entries()} == set(batch)
            nursery.cancel_scope.cancel()
