"""The DHT on the in-memory network under the mock clock, checked against a global oracle."""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter

import pytest
import trio

from p2pstore.core.announcements import decode_announcement
from p2pstore.core.records import RecordKind, sign_record
from p2pstore.errors import PeerUnreachable
from p2pstore.net.dht import DhtSettings
from p2pstore.sim.mesh_dht import republish_rounds
from p2pstore.testing.dht_mesh import DhtMesh, wall_clock

K = 20
SLOW_MAINTENANCE = DhtSettings(rpc_timeout=2.0, refresh_interval=3600.0, expire_interval=300.0)


@pytest.fixture
def clock(autojump_clock):
    return autojump_clock


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    """Hundreds of peers log every session; capturing warnings and errors (internal errors
    included) is what these tests need, and formatting the rest costs more than the mesh."""
    caplog.set_level(logging.WARNING, logger="p2pstore")


async def test_lookups_find_the_true_k_closest_and_survive_vanishing_peers(clock):
    """200 peers: >= 99% exact lookups; after 30% vanish without warning, >= 95% find the k
    closest live peers within one refresh interval.  (200, not 300: the same claims at a third
    of the CI time; the simulator's benchmarks cover thousands of peers.)"""
    mesh = DhtMesh(200, seed=11)
    rng = random.Random(5)
    with trio.fail_after(24 * 3600):  # virtual time: a hang is a failure, not a stalled CI
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)

            exact = 0
            lookups = 200
            for _ in range(lookups):
                member = rng.choice(mesh.members)
                target = rng.randbytes(20)
                result = await member.dht.lookup(target)
                exact += [c.id for c in result.closest] == mesh.oracle(target, K, asker=member)
            assert exact / lookups >= 0.99, f"{exact}/{lookups} exact lookups"

            for member in rng.sample(mesh.members[1:], 60):
                mesh.vanish(member)
            # Within one refresh interval: every node's refresh meets the silent peers.
            await trio.sleep(mesh.settings.refresh_interval + 60)

            exact = 0
            for _ in range(lookups):
                member = rng.choice(mesh.live())
                target = rng.randbytes(20)
                result = await member.dht.lookup(target)
                exact += [c.id for c in result.closest] == mesh.oracle(target, K, asker=member)
            assert exact / lookups >= 0.95, f"{exact}/{lookups} exact lookups after churn"

            # A record stored by one peer is found by every other, outlives its publisher's
            # departure, and is gone everywhere after its expiry.
            publisher = rng.choice(mesh.live())
            key = rng.randbytes(20)
            record = sign_record(
                publisher.credentials, RecordKind.PLACEMENT, key, b"where object 7 lives",
                sequence=1, expires_at=int(wall_clock()) + 900,
            )
            assert await publisher.dht.publish(record) >= K // 2
            for member in mesh.live():
                found = await member.dht.find_records(RecordKind.PLACEMENT, key)
                assert record in found, member.name
            mesh.vanish(publisher)
            await trio.sleep(450)  # the publisher is gone; holders keep serving it
            for member in rng.sample(mesh.live(), 60):
                found = await member.dht.find_records(RecordKind.PLACEMENT, key)
                assert record in found, member.name
            await trio.sleep(500)  # past its expiry
            for member in mesh.live()[:20]:
                assert await member.dht.find_records(RecordKind.PLACEMENT, key) == []
            nursery.cancel_scope.cancel()


async def test_a_record_is_found_by_every_peer_and_outlives_its_publisher(clock):
    # Hours of virtual time: slower maintenance keeps the run cheap (300 peers do it fast).
    mesh = DhtMesh(60, seed=3, settings=SLOW_MAINTENANCE)
    with trio.fail_after(24 * 3600):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            publisher = mesh.members[17]
            value = b"placement of object 42"
            key = random.Random(1).randbytes(20)
            record = sign_record(
                publisher.credentials,
                RecordKind.PLACEMENT,
                key,
                value,
                sequence=1,
                expires_at=int(wall_clock()) + 2 * 3600,
            )
            stored = await publisher.dht.publish(record)
            assert stored >= K // 2
            for member in mesh.members:
                found = await member.dht.find_records(RecordKind.PLACEMENT, key)
                assert [r.value for r in found][:1] == [value], member.name

            mesh.vanish(publisher)
            await trio.sleep(3600)  # an hour later, the publisher long gone
            for member in mesh.live():
                found = await member.dht.find_records(RecordKind.PLACEMENT, key)
                assert value in [r.value for r in found], member.name

            await trio.sleep(3600 + 120)  # past its expiry: gone everywhere
            for member in mesh.live()[:10]:
                assert await member.dht.find_records(RecordKind.PLACEMENT, key) == []
            nursery.cancel_scope.cancel()


async def test_joining_tries_every_bootstrap_peer_and_says_when_none_answers(clock):
    mesh = DhtMesh(4, seed=2)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            for member in mesh.members:
                await nursery.start(mesh._run_member, member)
            first, second, third, newcomer = mesh.members
            mesh.vanish(first)
            answered = await newcomer.dht.join(
                ["nobody-here", first.node.address, second.node.address]
            )
            assert answered == 1
            assert second.node_id in {c.id for c in newcomer.dht.table.contacts()}

            with pytest.raises(PeerUnreachable, match="none of the 2 bootstrap peers") as error:
                await third.dht.join(["nobody-here", first.node.address])
            assert "nobody-here" in str(error.value) and first.node.address in str(error.value)

            # A seed pinned to another node id is refused, even with a valid certificate.
            with pytest.raises(PeerUnreachable, match="expected node") as error:
                await third.dht.join([second.node.address], {second.node.address: first.node_id})
            assert third.dht.table.get(second.node_id) is None
            nursery.cancel_scope.cancel()


async def test_each_kind_is_republished_at_the_period_the_simulator_counts(clock):
    """Over two virtual days a node sends its manifest and placement again daily and its
    announcement every 15 minutes, with the free space of the moment: what the core's
    ``republish_period`` says and the simulator's traffic model counts (nodes once sent every
    record every 30 minutes, 48 times what the simulator reported)."""
    mesh = DhtMesh(8, seed=5, settings=SLOW_MAINTENANCE)
    span = 2 * 86400 + 60
    with trio.fail_after(span + 3600):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            publisher = mesh.members[3].dht
            sent: Counter[RecordKind] = Counter()
            store_on_closest = publisher.publisher.store_on_closest

            async def counting(record):
                sent[RecordKind(record.kind)] += 1
                return await store_on_closest(record)

            publisher.publisher.store_on_closest = counting  # type: ignore[method-assign]
            manifest = b"a manifest"
            key = hashlib.sha256(manifest).digest()[:20]
            free = [10**12]
            started = trio.current_time()
            await publisher.publish_value(RecordKind.MANIFEST, key, manifest)
            await publisher.publish_value(RecordKind.PLACEMENT, key, b"a placement")
            await publisher.announce(lambda: free[0])
            free[0] = 5 * 10**11
            await trio.sleep(span - (trio.current_time() - started))
            for kind in (RecordKind.MANIFEST, RecordKind.PLACEMENT, RecordKind.ANNOUNCEMENT):
                assert sent[kind] == 1 + int(republish_rounds(kind, span)), kind
            assert sent[RecordKind.ANNOUNCEMENT] == 1 + 192
            (found,) = await mesh.members[0].dht.find_records(
                RecordKind.ANNOUNCEMENT, publisher.node_id
            )
            assert decode_announcement(found.value).free_bytes == 5 * 10**11
            nursery.cancel_scope.cancel()
