"""A tenant's buckets end to end, on TLS and in memory: create, put, list by prefix, get,
overwrite, delete; versioning keeps older versions; retention survives a stolen key."""

from __future__ import annotations

import io

import pytest
import trio

from p2pstore.codec import parse_capability
from p2pstore.codec.bucket_keys import BucketKeys
from p2pstore.errors import BucketNotFound
from p2pstore.identity import Role
from p2pstore.net.bucket_client import BucketNotEmpty, TenantBuckets
from p2pstore.net.buckets import BucketService, BucketSettings
from p2pstore.testing.storage_mesh import RULE_3_OF_6, StorageMesh

SETTINGS = BucketSettings(replicas=3, rpc_timeout=5.0, anti_entropy_interval=3600.0)
TENANT_KEY = bytes(range(32))


async def tenant(mesh: StorageMesh, nursery: trio.Nursery, key: bytes = TENANT_KEY):
    credentials = mesh.net.credentials(
        datacenter="office", region="FR-GES", role=Role.CLIENT, tenant="univ-strasbourg"
    )
    client = await mesh.client(nursery, credentials=credentials)
    return TenantBuckets(client, key, settings=SETTINGS, wall_clock=mesh.wall_clock)


async def read(buckets: TenantBuckets, bucket: str, key: str) -> bytes:
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    await buckets.get(bucket, key, write)
    return bytes(out)


async def put(buckets: TenantBuckets, bucket: str, key: str, data: bytes):
    return await buckets.put(bucket, key, io.BytesIO(data), len(data), rule=RULE_3_OF_6)


async def test_put_list_get_overwrite_and_delete_by_name(net, clock):
    mesh = StorageMesh(net, 6)
    for member in mesh.nodes:
        BucketService(member.dht, SETTINGS)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            alice = await tenant(mesh, nursery)
            await alice.create("photos", rule=RULE_3_OF_6.name)
            assert [b.name for b in await alice.buckets()] == ["photos"]
            await put(alice, "photos", "2026/a.jpg", b"A" * 5000)
            await put(alice, "photos", "2026/b.jpg", b"B" * 100)
            await put(alice, "photos", "notes.txt", b"hello")
            listed = await alice.objects("photos", "2026/")
            assert [(o.key, o.size) for o in listed] == [("2026/a.jpg", 5000), ("2026/b.jpg", 100)]

            laptop = await tenant(mesh, nursery)  # another machine of the tenant
            assert await read(laptop, "photos", "2026/a.jpg") == b"A" * 5000
            await trio.sleep(0.01)  # a later mtime for the overwrite
            await put(laptop, "photos", "2026/a.jpg", b"new")
            assert await read(alice, "photos", "2026/a.jpg") == b"new"
            with pytest.raises(BucketNotEmpty):
                await alice.remove_bucket("photos")
            for key in ("2026/a.jpg", "2026/b.jpg", "notes.txt"):
                await alice.remove("photos", key)
            assert await alice.objects("photos") == []
            with pytest.raises(BucketNotFound):
                await alice.stat("photos", "notes.txt")
            await alice.remove_bucket("photos")
            assert await alice.buckets() == []

            stranger = await tenant(mesh, nursery, key=bytes(32))  # same tenant, wrong key
            assert await stranger.buckets() == []
            nursery.cancel_scope.cancel()


async def test_a_stolen_key_cannot_undo_versioning_and_retention(net, clock):
    """The ransomware drill on the index: versions and retention outlive every overwrite
    and delete the thief signs (collection at holders is a follow-up)."""
    mesh = StorageMesh(net, 6)
    for member in mesh.nodes:
        BucketService(member.dht, SETTINGS)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            alice = await tenant(mesh, nursery)
            await alice.create("archive", rule=RULE_3_OF_6.name, versioning=True, retention_days=30)
            original = await put(alice, "archive", "thesis.pdf", b"the real thesis")
            thief = await tenant(mesh, nursery)
            await trio.sleep(0.01)
            await put(thief, "archive", "thesis.pdf", b"ransom note")
            await thief.remove("archive", "thesis.pdf")
            assert await thief.objects("archive") == []

            index = await alice._fetch(alice_keys(alice, "archive"))
            name = alice_keys(alice, "archive").name_token("thesis.pdf")
            now = mesh.wall_clock()
            kept = [v for v in index.versions(name, now) if v.version.hex() == original.version]
            assert kept and kept[0].retain_until == original.retain_until > now + 29 * 86400
            payload = alice_keys(alice, "archive").open(kept[0].payload, name_token=name, op=1)
            out = bytearray()

            async def write(data: bytes) -> None:
                out.extend(data)

            await alice.client.get(parse_capability(payload.cap), write)
            assert bytes(out) == b"the real thesis"
            nursery.cancel_scope.cancel()


def alice_keys(buckets: TenantBuckets, name: str) -> BucketKeys:
    return BucketKeys(buckets._tenant_key, name)
