"""Ransomware drill: a bucket with versioning and 30-day compliance retention; an attacker
holding the tenant's key overwrites, deletes and erases every object and tries to shorten the
retention, while a hostile member (one node, steward and holder) releases every lease, shows
holders the shortened retention and deletes what it holds.  Every original version still reads
back byte-identical and nothing of it is freed before the date; after the date, the erasures
the attacker signed take effect and the space goes."""

from __future__ import annotations

import random

import pytest
import trio
from test_net_bucket_client import SETTINGS, tenant
from test_net_collection import QUIET, gc_settings, held, renew, sweep_all, with_collectors
from test_net_references import put

from p2pstore.codec import parse_capability
from p2pstore.codec.bucket_keys import BucketKeys
from p2pstore.core.bucket_entries import Op, bucket_id, sign_entry
from p2pstore.core.leases import DAY
from p2pstore.core.references import sign_reference
from p2pstore.net.buckets import BucketService
from p2pstore.net.leases import LeaseRenewer
from p2pstore.net.references import MeshReferences, ReferenceSettings
from p2pstore.net.steward import StewardSettings
from p2pstore.testing.storage_mesh import RULE_3_OF_6, StorageMesh
from p2pstore.wire import RetentionProof

HOUR = 3600.0
NAMES = ("ledger.xlsx", "thesis.pdf", "scans/0001.tif")


class Nothing:
    """The hostile steward's reference source: every object is garbage to it."""

    async def liveness(self, object_id: bytes, now: float, *, publish: bool = True):
        await trio.lowlevel.checkpoint()

    def proofs(self, object_id: bytes) -> list:
        return []


def closest(mesh, object_id: bytes):
    key = int.from_bytes(object_id[:20], "big")
    return min(mesh.nodes, key=lambda m: int.from_bytes(m.node_id, "big") ^ key)


@pytest.mark.parametrize("net", ["memory"], indirect=True)
async def test_a_stolen_key_and_a_hostile_member_release_nothing_before_the_date(net, clock):
    settings = gc_settings(net, initial_lease=DAY, grace_period=DAY, sweep_interval=DAY)
    steward_settings = StewardSettings(check_interval=8 * HOUR, query_timeout=2.0)
    references = ReferenceSettings(recheck=DAY, replicas=3, rpc_timeout=3.0)
    mesh = StorageMesh(net, 6, steward=steward_settings, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    for member, collector in zip(mesh.nodes, collectors, strict=True):
        source = MeshReferences(member.dht, references, buckets=BucketService(member.dht, SETTINGS))
        member.steward.renewer = LeaseRenewer(
            member.dht, source, collector=collector, ttl=settings.initial_lease
        )
    with trio.fail_after(60 * DAY):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            alice = await tenant(mesh, nursery)
            await alice.create("archive", rule=RULE_3_OF_6.name, versioning=True, retention_days=30)
            date = mesh.wall_clock() + 30 * DAY
            originals = {}
            for seed, name in enumerate(NAMES):
                data = random.Random(seed).randbytes(40_000)
                info = await put(alice, "archive", name, data)
                object_id = parse_capability(info.cap).object_id
                manifest = await alice.client.fetch_manifest(object_id)
                fragments = {f for c in manifest.chunks for f in c.fragment_ids}
                originals[name] = (info, data, object_id, fragments)

            # The attacker: the tenant's key on a machine of its own overwrites and deletes
            # every name, erases every original version and signs a retention of one minute.
            attacker = await tenant(mesh, nursery)
            keys = BucketKeys(attacker._tenant_key, "archive")
            for name in NAMES:
                await put(attacker, "archive", name, b"your files are encrypted")
                await attacker.remove("archive", name)
            signer = attacker.client.dht.node.credentials
            now, shortened = mesh.wall_clock(), []
            for name, (info, _, object_id, _) in originals.items():
                version, token = bytes.fromhex(info.version), keys.name_token(name)
                common = {"bucket_token": keys.bucket_token, "name": token, "version": version}
                erase = sign_entry(signer, op=Op.ERASE, timestamp=int(now * 1000), **common)
                retain = sign_entry(
                    signer, op=Op.RETAIN, timestamp=int(now * 1000), retain_until=int(now) + 60,
                    **common,
                )  # fmt: skip
                bucket = bucket_id(attacker.tenant, keys.bucket_token)
                assert await attacker.service.push(bucket, [erase, retain]) > 0
                reference = sign_reference(signer, object_id, now=now, **common)
                shortened.append(RetentionProof(reference=reference, entry=retain))
            assert await alice.objects("archive") == []  # every name is deleted

            # The hostile member, elected steward of the first original, renews nothing,
            # releases every lease with the shortened retention shown, and deletes what it
            # holds of the originals (its rounds still repair: a steward that stops those too
            # is the repair issue's threat, not this one).
            hostile = closest(mesh, originals[NAMES[0]][2])
            hostile.steward.renewer = LeaseRenewer(hostile.dht, Nothing(), ttl=1.0)
            hostile_collector = collectors[mesh.nodes.index(hostile)]
            for _, _, _, fragments in originals.values():
                for fragment_id in fragments:
                    hostile.service.store.delete(fragment_id)

            async def release() -> None:
                for member, fragment_ids in held(mesh).items():
                    holder = mesh.by_id(member)
                    for _, _, object_id, fragments in originals.values():
                        mine = [f for f in fragment_ids if f in fragments]
                        if mine and holder is not hostile:
                            await renew(hostile, holder, object_id, mine, mesh.wall_clock(),
                                        ttl=-1.0, retention=shortened)  # fmt: skip

            day = 0
            while mesh.wall_clock() < date - 2 * DAY:
                await release()
                await trio.sleep(2 * DAY)
                day += 2
                # The hostile holder's own lapsed leases (fragments it deleted itself and that
                # were rebuilt elsewhere) free nothing; every honest holder frees nothing at all.
                pairs = zip(mesh.nodes, collectors, strict=True)
                honest = [c for m, c in pairs if m is not hostile]
                assert (await hostile_collector.sweep()).bytes_freed == 0
                assert await sweep_all(honest) == 0, "freed before the retention date"
                kept = {f for fragment_ids in held(mesh).values() for f in fragment_ids}
                for name, (info, data, _, fragments) in originals.items():
                    assert len(fragments & kept) >= 3, f"{name} lost its redundancy"
                    if day % 10:
                        continue
                    out = bytearray()
                    await alice.client.get(parse_capability(info.cap), _append(out))
                    assert bytes(out) == data, name

            # Past the date the erasures the attacker signed take effect: the originals go.
            await trio.sleep(
                date - mesh.wall_clock() + settings.initial_lease + settings.grace_period
                + references.recheck + 2 * steward_settings.check_interval + 1
            )  # fmt: skip
            await sweep_all(collectors)
            kept = {f for fragment_ids in held(mesh).values() for f in fragment_ids}
            for name, (_, _, _, fragments) in originals.items():
                assert not fragments & kept, f"{name} erased, yet kept past the date"
            nursery.cancel_scope.cancel()


def _append(out: bytearray):
    async def write(data: bytes) -> None:
        out.extend(data)

    return write
