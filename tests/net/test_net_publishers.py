"""Certified, bounded publishers (issue 13), replayed on TLS and in memory: a record signed by a
key without a mesh certificate is refused by every node; one member's junk records and junk
fragments stop at its quota on each node, are not handed over beyond it, and other members' puts
keep working; revoking a member drops its records everywhere."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hostile import flood_fragments, flood_records, forge_record, junk_fragments, junk_manifests

from p2pstore.core.records import RecordKind, manifest_key, sign_record
from p2pstore.errors import PutFailed
from p2pstore.net.dht import DhtSettings
from p2pstore.testing.storage_mesh import DHT, RULE_3_OF_6, StorageMesh

KiB = 1024
MiB = 1024 * KiB


async def put_and_get(client, data: bytes) -> None:
    """An honest put, then a get of the same bytes through the mesh."""
    result = await client.put(io.BytesIO(data), len(data), RULE_3_OF_6)
    out = bytearray()

    async def write(piece: bytes) -> None:
        out.extend(piece)

    await client.get(result.read_cap, write)
    assert bytes(out) == data


async def test_a_record_signed_by_a_throwaway_key_is_refused_by_every_node(net, clock):
    """Issue 13's forged placement: a throw-away key, sequence 2**62, whatever certificate it
    carries (junk, or the attacker's own valid client certificate) — no node holds it."""
    mesh = StorageMesh(net, 5)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            attacker = await mesh.client(nursery)
            key = manifest_key(hashlib.sha256(b"an honest object").digest())
            expires_at = int(attacker.dht.wall_clock()) + 600
            throwaway = Ed25519PrivateKey.generate()
            forged = [
                forge_record(
                    throwaway, RecordKind.PLACEMENT, key, b"nowhere", sequence=1 << 62,
                    expires_at=expires_at, certificate=certificate,
                )
                for certificate in (b"\x30\x00", attacker.node.credentials.certificate_der())
            ]  # fmt: skip
            for member in mesh.nodes:
                outcome = await flood_records(
                    attacker.node, member.node_id, member.node.address, forged
                )
                assert outcome.accepted == 0
                assert all("certificate" in reason for reason in outcome.refusals)
                assert member.dht.store.get(int(RecordKind.PLACEMENT), key, expires_at - 1) == []
                refused = member.node.metrics.value(
                    "p2pstore_records_refused_total", reason="uncertified"
                )
                assert refused == len(forged)
            assert await attacker.dht.publish(forged[0]) == 0  # the DHT's own path: refused too
            reader = await mesh.client(nursery)
            assert await reader.dht.find_records(RecordKind.PLACEMENT, key) == []
            nursery.cancel_scope.cancel()


SMALL_RECORD_STORE = DhtSettings(
    rpc_timeout=DHT.rpc_timeout,
    refresh_interval=DHT.refresh_interval,
    max_record_bytes=2 * MiB,  # so one publisher's quota is 512 KiB
)
JUNK_SIZE = 64 * KiB


async def test_junk_manifests_stop_at_the_identity_s_quota_and_are_not_handed_over_beyond_it(
    net, clock, log_events
):
    """Issue 13's record flood, scaled down 256x: a client's junk "manifests" (any bytes hash to
    their own key) fill a quarter of each node's record store, no more; a node joining later
    receives at most that quarter per holder; another client's put keeps working."""
    mesh = StorageMesh(net, 7, dht=SMALL_RECORD_STORE)
    quota = SMALL_RECORD_STORE.max_record_bytes // 4
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery, count=6)
            attacker = await mesh.client(nursery)
            attacker_id = attacker.node.identity.node_id
            expires_at = int(attacker.dht.wall_clock()) + 3600
            junk = junk_manifests(
                attacker.node.credentials, 24, JUNK_SIZE, expires_at=expires_at, seed=1
            )
            for flooded, member in enumerate(mesh.nodes[:6], start=1):
                outcome = await flood_records(
                    attacker.node, member.node_id, member.node.address, junk
                )
                usage = member.dht.store.usage_of(attacker_id)
                assert usage.bytes <= quota < usage.bytes + JUNK_SIZE
                assert outcome.accepted == usage.records < len(junk)
                assert all(reason.startswith("over quota") for reason in outcome.refusals)
                assert attacker.node.identity.describe() in outcome.refusals[0]
                # Logged once per node for the whole flood, not once per refusal.
                lines = log_events.matching(
                    event="record_quota_exceeded", publisher=attacker_id.hex()
                )
                assert len(lines) == flooded
                assert member.node.metrics.value(
                    "p2pstore_records_refused_total", reason="over-quota"
                ) == len(outcome.refusals)

            honest = await mesh.client(nursery)
            await put_and_get(honest, random.Random(3).randbytes(100 * KiB))

            newcomer = mesh.nodes[6]
            received = newcomer.node.metrics.value("p2pstore_received_bytes_total")
            await mesh.start_more(nursery, [newcomer])
            # Every holder hands the newcomer the records it is now closer to.
            await log_events.wait_for_count(
                6, event="records_handed_over", peer=newcomer.node_id.hex()
            )
            assert newcomer.dht.store.usage_of(attacker_id).bytes <= quota
            # Each holder offered only what it held, at most a quota of junk: unbounded, the 6
            # holders would have sent up to 6 x 24 x 64 KiB = 9 MiB.
            sent = newcomer.node.metrics.value("p2pstore_received_bytes_total") - received
            assert sent < 6 * (quota + 256 * KiB), sent
            nursery.cancel_scope.cancel()


async def test_junk_fragments_stop_at_the_identity_s_quota_while_another_client_puts(
    net, clock, log_events
):
    """Issue 13's fragment flood, scaled down: a client's junk fragments fill its quarter of
    each node's store, no more, logged once per node; another client's put and get work, and the
    flooder's own put is refused by every holder, naming its quota."""
    store_quota = 256 * KiB
    mesh = StorageMesh(net, 6, quotas=dict.fromkeys(range(6), store_quota))
    share = store_quota // 4
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            attacker = await mesh.client(nursery)
            attacker_id = attacker.node.identity.node_id
            junk = junk_fragments(8, 16 * KiB, seed=7)
            for member in mesh.nodes:
                outcome = await flood_fragments(
                    attacker.node, member.node_id, member.node.address, junk
                )
                assert outcome.accepted == share // (16 * KiB) == 4
                assert all(r.startswith("QuotaExceeded") for r in outcome.refusals)
                assert attacker_id.hex()[:8] in outcome.refusals[0]
                assert "another node" in outcome.refusals[0]
                store = member.service.store
                assert store.uploaded_by(attacker_id) == share
                assert store.usage().write_refusal is None  # the node is not full
                metrics = member.node.metrics
                assert metrics.value("p2pstore_fragments_over_identity_quota_total") == 4
            lines = log_events.matching(event="fragment_quota_exceeded", peer=attacker_id.hex())
            assert len(lines) == len(mesh.nodes)  # once per node, not once per refusal

            honest = await mesh.client(nursery)
            await put_and_get(honest, random.Random(5).randbytes(60 * KiB))
            with pytest.raises(PutFailed) as failed:  # every holder refuses it: no share left
                await attacker.put(io.BytesIO(b"x" * 60 * KiB), 60 * KiB, RULE_3_OF_6)
            assert "one identity may hold" in str(failed.value)
            nursery.cancel_scope.cancel()


async def test_revoking_an_identity_drops_its_records_on_every_node(net, clock, log_events):
    mesh = StorageMesh(net, 4)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            rogue = await mesh.client(nursery)
            honest = await mesh.client(nursery)
            now = int(rogue.dht.wall_clock())
            key = manifest_key(hashlib.sha256(b"object").digest())
            mine = sign_record(
                rogue.node.credentials, RecordKind.PLACEMENT, key, b"rogue", sequence=1,
                expires_at=now + 3600,
            )  # fmt: skip
            theirs = sign_record(
                honest.node.credentials, RecordKind.PLACEMENT, key, b"honest", sequence=1,
                expires_at=now + 3600,
            )  # fmt: skip
            assert await rogue.dht.publish(mine) == len(mesh.nodes)
            assert await honest.dht.publish(theirs) == len(mesh.nodes)

            net.ca.revoke(rogue.node.identity.serial, now=net.now)
            trust = net.trust()  # the CRL the CA just wrote, as SIGHUP reloads it
            for node in mesh.nodes:
                node.node.transport.reload_trust(trust)
                node.node.apply_trust(trust)
            for node in mesh.nodes:
                held = node.dht.store.get(int(RecordKind.PLACEMENT), key, now)
                assert held == [theirs]
            lines = log_events.matching(
                event="records_revoked", publisher=rogue.node.identity.node_id.hex()
            )
            assert len(lines) == len(mesh.nodes) and all(r.records == 1 for r in lines)
            found = await honest.dht.find_records(RecordKind.PLACEMENT, key)
            assert found == [theirs]
            nursery.cancel_scope.cancel()
