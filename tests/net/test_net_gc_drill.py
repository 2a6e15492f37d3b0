"""GC drill: a holder returning after its fragments were rebuilt elsewhere, a put killed half-way
and junk fragments from one identity are all freed within the grace period, while the named
object they sit beside keeps every fragment of its current placement and reads back."""

from __future__ import annotations

import random

import pytest
import trio
from test_net_bucket_client import SETTINGS, read, tenant
from test_net_client import put_bytes
from test_net_collection import QUIET, gc_settings, held, sweep_all, with_collectors
from test_net_references import put

from p2pstore.codec import parse_capability
from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.core.rules import CodingRule
from p2pstore.net.buckets import BucketService
from p2pstore.net.fragments import store_fragment
from p2pstore.net.leases import LeaseRenewer
from p2pstore.net.references import MeshReferences, ReferenceSettings
from p2pstore.net.steward import StewardSettings
from p2pstore.testing.storage_mesh import StorageMesh

HOUR = 3600.0
RULE = CodingRule("test-3-of-6", k=3, n=6, repair_threshold=6, grace_period=1200.0)


def drill_mesh(net, count: int = 9):
    settings = gc_settings(net, initial_lease=2 * HOUR, grace_period=4 * HOUR)
    steward = StewardSettings(check_interval=300.0, query_timeout=2.0, queries_per_second=200.0)
    references = ReferenceSettings(recheck=600.0, replicas=3, rpc_timeout=3.0)
    mesh = StorageMesh(net, count, steward=steward, dht=QUIET, rules=(RULE,))
    collectors = with_collectors(mesh, settings)
    for member, collector in zip(mesh.nodes, collectors, strict=True):
        source = MeshReferences(member.dht, references, buckets=BucketService(member.dht, SETTINGS))
        member.steward.renewer = LeaseRenewer(
            member.dht, source, collector=collector, ttl=settings.initial_lease
        )
    return mesh, collectors, settings


class Killed(BaseException):
    """The put's process dies here."""


@pytest.mark.parametrize("net", ["memory"], indirect=True)
async def test_stale_orphaned_and_junk_fragments_go_within_the_grace(net, clock):
    mesh, collectors, settings = drill_mesh(net)
    with trio.fail_after(30 * 86400):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            alice = await tenant(mesh, nursery)
            await alice.create("lab", rule=RULE.name)
            data = random.Random(1).randbytes(60_000)
            info = await put(alice, "lab", "kept.bin", data)
            object_id = parse_capability(info.cap).object_id

            # A put killed half-way: its process dies after three fragments are stored.
            killer = await mesh.client(nursery)
            stored_by_killed: list[bytes] = []
            original_store_on = killer.store_on

            async def dying_store_on(holder, fragment, payload):
                if len(stored_by_killed) >= 3:
                    await trio.sleep(1)  # the others' stores are under way
                    raise Killed
                stored_by_killed.append(fragment)
                await original_store_on(holder, fragment, payload)

            killer.store_on = dying_store_on  # type: ignore[method-assign]
            with pytest.raises(BaseExceptionGroup) as died:
                await put_bytes(killer, random.Random(2).randbytes(60_000), RULE)
            assert died.group_contains(Killed)
            assert len(stored_by_killed) == 3

            # Junk from one identity.
            junk = [random.Random(10 + i).randbytes(8192) for i in range(3)]
            for payload, target in zip(junk, mesh.nodes[-3:], strict=True):
                await store_fragment(killer.dht.node, target.node_id, target.node.address,
                                     fragment_id(payload), payload, timeout=10)  # fmt: skip

            # A holder of kept.bin goes away; its fragments are rebuilt elsewhere; it returns.
            manifest = await alice.client.fetch_manifest(object_id)
            placement = await alice.client.fetch_placement(object_id, manifest)
            away = mesh.by_id(placement.chunks[0][0].node_id)
            placed = {f for c in manifest.chunks for f in c.fragment_ids}
            stale = set(held(mesh)[away.node_id]) & placed
            assert stale
            net.network.vanish(away.node.address)
            await trio.sleep(RULE.grace_period + 12 * 300.0)
            net.network.reappear(away.node.address)
            rebuilt = {f for m, ids in held(mesh).items() if m != away.node_id for f in ids}
            assert stale <= rebuilt, "the away holder's fragments were not rebuilt elsewhere"

            garbage = {fragment_id(j) for j in junk} | set(stored_by_killed)
            before = {f for ids in held(mesh).values() for f in ids}
            assert garbage <= before
            await trio.sleep(settings.initial_lease + settings.grace_period + 1200.0)
            await sweep_all(collectors)
            after = held(mesh)
            left = {f for ids in after.values() for f in ids}
            assert not garbage & left, "junk or a killed put's fragments outlived the grace"
            copies = [f for ids in after.values() for f in ids if f in stale]
            assert len(copies) == len(stale), "a share rebuilt elsewhere kept its stale copy"
            assert placed <= left
            assert sum(len(ids) for ids in after.values()) == len(placed)  # one copy, no garbage
            assert await read(alice, "lab", "kept.bin") == data
            nursery.cancel_scope.cancel()
