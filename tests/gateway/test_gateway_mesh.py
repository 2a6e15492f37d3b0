"""boto3 against the gateway whose names are the tenant's bucket indexes in a mesh of storage
nodes on the in-memory network (real time: boto3 runs in threads), beside the CLI's
:class:`TenantBuckets` on another machine of the tenant: each sees what the other wrote, and
Object Lock is the mesh's, not only the gateway's."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError
from gateway_harness import Gateway, running_gateway

from p2pstore.codec.bucket_keys import BucketKeys
from p2pstore.core.bucket_entries import Op, bucket_id, sign_entry
from p2pstore.gateway.blobs import MeshBlobs
from p2pstore.gateway.mesh_backend import MeshBackend
from p2pstore.gateway.uploads import UploadStore
from p2pstore.identity import Role
from p2pstore.net import buckets as buckets_module
from p2pstore.net.bucket_client import TenantBuckets
from p2pstore.net.buckets import BucketService, BucketSettings
from p2pstore.net.client import Client, ClientSettings
from p2pstore.testing.net_harness import NetHarness
from p2pstore.testing.storage_mesh import RULE_3_OF_6, StorageMesh

CHUNK = 64 * 1024
MiB = 1024 * 1024
TENANT = "uni"
TENANT_KEY = bytes(range(32))
SETTINGS = BucketSettings(replicas=3, rpc_timeout=5.0, anti_entropy_interval=3600.0)


def code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


@dataclass
class Setup:
    mesh: StorageMesh
    gw: Gateway
    backend: MeshBackend
    client: Client
    cli: TenantBuckets
    """Another machine of the tenant, as ``p2pstore bucket``/``cp``/``ls`` use it."""


@asynccontextmanager
async def gateway_on_mesh(tmp_path: Path) -> AsyncIterator[Setup]:
    net = NetHarness("memory", tmp_path)
    async with trio.open_nursery() as nursery:
        mesh = StorageMesh(net, 6)
        mesh.epoch = time.time() - trio.current_time()  # real time: certificates in date
        for member in mesh.nodes:
            BucketService(member.dht, SETTINGS)
        await mesh.start(nursery)

        def credentials():  # type: ignore[no-untyped-def]
            return mesh.net.credentials(
                datacenter="office", region="FR-GES", role=Role.CLIENT, tenant=TENANT
            )

        joined = await mesh.client(nursery, credentials=credentials())
        client = Client(
            joined.dht,
            settings=ClientSettings(chunk_size=CHUNK, fragment_timeout=10.0, in_threads=True),
        )
        uploads = UploadStore(":memory:", clock=time.time)
        backend = MeshBackend(
            MeshBlobs(client, RULE_3_OF_6),
            TENANT_KEY,
            uploads,
            service=BucketService(client.dht, SETTINGS),
        )
        laptop = await mesh.client(nursery, credentials=credentials())
        cli = TenantBuckets(laptop, TENANT_KEY, settings=SETTINGS, wall_clock=mesh.wall_clock)
        async with running_gateway(tmp_path, None, backend=backend) as gw:  # type: ignore[arg-type]
            yield Setup(mesh, gw, backend, client, cli)
        nursery.cancel_scope.cancel()


async def cli_read(cli: TenantBuckets, bucket: str, key: str) -> bytes:
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    await cli.get(bucket, key, write)
    return bytes(out)


async def test_s3_and_the_cli_share_buckets_ranges_multipart_and_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(180):
        async with gateway_on_mesh(tmp_path) as setup:
            s3, cli, client = setup.gw.s3, setup.cli, setup.client
            fetched: list[int] = []
            fetch_chunk = client.fetch_chunk

            async def counted(manifest, placement, index):  # type: ignore[no-untyped-def]
                fetched.append(index)
                return await fetch_chunk(manifest, placement, index)

            client.fetch_chunk = counted  # type: ignore[method-assign]

            # A bucket S3 makes is the CLI's, and the other way round.
            await s3.create_bucket(Bucket="mesh")
            assert [b.name for b in await cli.buckets()] == ["mesh"]
            data = os.urandom(5 * CHUNK + 333)
            put = await s3.put_object(Bucket="mesh", Key="dir/obj", Body=data, Metadata={"a": "b"})
            assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            assert [(o.key, o.size) for o in await cli.objects("mesh")] == [("dir/obj", len(data))]
            assert await cli_read(cli, "mesh", "dir/obj") == data
            await cli.create("from-cli", rule=RULE_3_OF_6.name)
            await cli.put("from-cli", "notes.txt", io.BytesIO(b"hello"), 5, rule=RULE_3_OF_6)
            listed = await s3.list_buckets()
            assert [b["Name"] for b in listed["Buckets"]] == ["from-cli", "mesh"]
            body, got = await s3.get_bytes(Bucket="from-cli", Key="notes.txt")
            assert body == b"hello" and got["ETag"].endswith('-1"')  # no MD5 recorded

            body, got = await s3.get_bytes(Bucket="mesh", Key="dir/obj")
            assert body == data and got["Metadata"] == {"a": "b"}
            for start, stop, chunks in (
                (CHUNK - 1, CHUNK + 1, [0, 1]),
                (2 * CHUNK, 3 * CHUNK, [2]),
                (5 * CHUNK, len(data), [5]),
            ):
                fetched.clear()
                body, _ = await s3.get_bytes(
                    Bucket="mesh", Key="dir/obj", Range=f"bytes={start}-{stop - 1}"
                )
                assert body == data[start:stop]
                assert sorted(fetched) == chunks  # only the chunks the range needs

            # Overwrite without versioning: one version is left.
            await s3.put_object(Bucket="mesh", Key="dir/obj", Body=b"second")
            versions = await s3.list_object_versions(Bucket="mesh")
            assert [v["Key"] for v in versions["Versions"]] == ["dir/obj"]

            # Multipart, with a part copied from an object, then read by the CLI too.
            upload = await s3.create_multipart_upload(Bucket="mesh", Key="mp")
            uid = upload["UploadId"]
            listed = await s3.list_multipart_uploads(Bucket="mesh")
            assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [("mp", uid)]
            first = os.urandom(5 * MiB)
            tags = [
                (
                    await s3.upload_part(
                        Bucket="mesh", Key="mp", UploadId=uid, PartNumber=1, Body=first
                    )
                )["ETag"]
            ]
            copied = await s3.upload_part_copy(
                Bucket="mesh", Key="mp", UploadId=uid, PartNumber=2,
                CopySource={"Bucket": "from-cli", "Key": "notes.txt"}, CopySourceRange="bytes=1-3",
            )  # fmt: skip
            tags.append(copied["CopyPartResult"]["ETag"])
            assert tags[1] == f'"{hashlib.md5(b"ell").hexdigest()}"'
            await s3.complete_multipart_upload(
                Bucket="mesh",
                Key="mp",
                UploadId=uid,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(tags, 1)]
                },
            )
            assert (await s3.list_multipart_uploads(Bucket="mesh")).get("Uploads", []) == []
            whole = first + b"ell"
            body, got = await s3.get_bytes(
                Bucket="mesh", Key="mp", Range=f"bytes={5 * MiB - 3}-{5 * MiB + 1}"
            )
            assert body == whole[5 * MiB - 3 : 5 * MiB + 2]
            assert got["ETag"].endswith('-2"')
            assert await cli_read(cli, "mesh", "mp") == whole  # the CLI reads the segment list
            await s3.copy_object(Bucket="mesh", Key="mp-copy", CopySource="mesh/mp")
            body, _ = await s3.get_bytes(Bucket="mesh", Key="mp-copy")
            assert body == whole

            listing = await s3.list_objects_v2(Bucket="mesh", Delimiter="/")
            assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["dir/"]
            assert [o["Key"] for o in listing["Contents"]] == ["mp", "mp-copy"]
            page = await s3.list_objects_v2(Bucket="mesh", MaxKeys=1)
            assert [o["Key"] for o in page["Contents"]] == ["dir/obj"] and page["IsTruncated"]
            page = await s3.list_objects_v2(
                Bucket="mesh", MaxKeys=5, ContinuationToken=page["NextContinuationToken"]
            )
            assert [o["Key"] for o in page["Contents"]] == ["mp", "mp-copy"]

            await s3.delete_object(Bucket="mesh", Key="mp-copy")  # unversioned: no tombstone
            gone = await s3.list_object_versions(Bucket="mesh", Prefix="mp-copy")
            assert "Versions" not in gone and "DeleteMarkers" not in gone

            # Versioning: versions are the index's; a delete is a marker the CLI honours.
            await s3.put_bucket_versioning(
                Bucket="mesh", VersioningConfiguration={"Status": "Enabled"}
            )
            v1 = (await s3.put_object(Bucket="mesh", Key="v", Body=b"one"))["VersionId"]
            v2 = (await s3.put_object(Bucket="mesh", Key="v", Body=b"two"))["VersionId"]
            assert v1 != v2
            body, _ = await s3.get_bytes(Bucket="mesh", Key="v", VersionId=v1)
            assert body == b"one"
            assert await cli_read(cli, "mesh", "v") == b"two"
            gone = await s3.delete_object(Bucket="mesh", Key="v")
            assert gone["DeleteMarker"]
            assert "v" not in [o.key for o in await cli.objects("mesh")]
            listed = await s3.list_object_versions(Bucket="mesh", Prefix="v")
            assert [v["VersionId"] for v in listed["Versions"]] == [v2, v1]
            assert [m["VersionId"] for m in listed["DeleteMarkers"]] == [gone["VersionId"]]
            await s3.delete_object(Bucket="mesh", Key="v", VersionId=v1)
            listed = await s3.list_object_versions(Bucket="mesh", Prefix="v")
            assert [v["VersionId"] for v in listed["Versions"]] == [v2]

            # A request asks each replica for its summary only: nothing is read whole or
            # verified again while nobody else writes (the gateway's own writes join its copy);
            # another writer's entry is read from the replicas that changed, verified once.
            verified: list[object] = []
            verify = buckets_module.verify_entry

            def counted_verify(*args: Any, **kwargs: Any) -> Any:
                verified.append(args[0])
                return verify(*args, **kwargs)

            monkeypatch.setattr(buckets_module, "verify_entry", counted_verify)
            cache = setup.backend.cache
            reads = cache.replica_reads
            await s3.head_object(Bucket="mesh", Key="mp")
            await s3.put_object(Bucket="mesh", Key="w", Body=b"w")
            await s3.head_object(Bucket="mesh", Key="mp")
            assert verified == [] and cache.replica_reads == reads
            await cli.put("mesh", "from-laptop", io.BytesIO(b"l"), 1, rule=RULE_3_OF_6)
            verified.clear()  # what the laptop itself read and checked
            body, _ = await s3.get_bytes(Bucket="mesh", Key="from-laptop")
            assert body == b"l"
            assert 0 < cache.replica_reads - reads <= SETTINGS.replicas
            assert 0 < len(verified) <= SETTINGS.replicas  # only the new entry, once a replica
            monkeypatch.undo()

            # A bucket the CLI removes is gone for S3.
            await cli.remove("from-cli", "notes.txt")
            await cli.remove_bucket("from-cli")
            setup.backend._cached = None  # the settings cache would hide it for two seconds
            with pytest.raises(ClientError) as caught:
                await s3.head_bucket(Bucket="from-cli")
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_object_lock_is_enforced_by_the_mesh_replicas(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with gateway_on_mesh(tmp_path) as setup:
            s3 = setup.gw.s3
            await s3.create_bucket(Bucket="vault", ObjectLockEnabledForBucket=True)
            await s3.put_object_lock_configuration(
                Bucket="vault",
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
                },
            )
            version = (await s3.put_object(Bucket="vault", Key="doc", Body=b"kept"))["VersionId"]
            later = datetime.now(UTC) + timedelta(days=30)
            await s3.put_object_retention(
                Bucket="vault", Key="doc", VersionId=version,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later},
            )  # fmt: skip
            await s3.put_object(
                Bucket="vault", Key="held", Body=b"held", ObjectLockLegalHoldStatus="ON"
            )

            # Through S3: S3's refusals.
            with pytest.raises(ClientError) as caught:
                await s3.delete_object(Bucket="vault", Key="doc", VersionId=version)
            assert code(caught.value) == "AccessDenied"
            with pytest.raises(ClientError) as caught:
                await s3.put_object_retention(
                    Bucket="vault", Key="doc", VersionId=version,
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC)},
                )  # fmt: skip
            assert code(caught.value) == "AccessDenied"

            stranger = setup.gw.client(
                setup.gw.key(tenant="other-uni", buckets=None, read_only=False)
            )
            with pytest.raises(ClientError) as caught:  # this gateway acts for one tenant
                await stranger.list_buckets()
            assert code(caught.value) == "AccessDenied"

            # Signed directly with the tenant's own certificate, past the gateway: a shorter
            # date and erasures reach every replica, and change nothing a reader sees.
            keys = BucketKeys(TENANT_KEY, "vault")
            bucket = bucket_id(TENANT, keys.bucket_token)
            service = setup.cli.service  # another machine of the tenant, no gateway in between
            index = (await service.fetch(bucket)).index
            now = setup.mesh.wall_clock()
            views = {v.version.hex(): v for n in index.names() for v in index.versions(n, now)}
            doc = views[version]
            assert doc.retain_until >= int(later.timestamp())
            held = next(v for v in views.values() if v.legal_hold)
            credentials = setup.cli.client.dht.node.credentials
            stamp = int(now * 1000)
            forged = [
                sign_entry(
                    credentials, bucket_token=keys.bucket_token, name=doc.name, op=Op.RETAIN,
                    timestamp=stamp, version=doc.version, retain_until=int(now) + 60,
                ),
                *(
                    sign_entry(
                        credentials, bucket_token=keys.bucket_token, name=v.name, op=Op.ERASE,
                        timestamp=stamp, version=v.version,
                    )
                    for v in (doc, held)
                ),
            ]  # fmt: skip
            assert await service.push(bucket, forged) > 0  # the replicas took them...
            checked = 0
            for replica in setup.mesh.nodes:
                held_index = None
                for listener in replica.node.listeners:
                    if isinstance(listener, BucketService):
                        held_index = listener.replica.index(bucket)
                if held_index is None:
                    continue
                kept = {v.version: v for v in held_index.versions(doc.name, now)}
                assert kept[doc.version].retain_until == doc.retain_until  # ...not shortened
                assert kept[doc.version].erase_requested
                checked += 1
            assert checked == SETTINGS.replicas
            index = (await service.fetch(bucket)).index
            in_a_week = now + 7 * 86400
            assert [v.version for v in index.versions(doc.name, in_a_week)] == [doc.version]
            assert [v.version for v in index.versions(held.name, 10 * 365 * 86400 + now)] == [
                held.version
            ]
            body, _ = await s3.get_bytes(Bucket="vault", Key="doc", VersionId=version)
            assert body == b"kept"
            # Once the date passes, the erasure the index kept takes effect.
            assert index.versions(doc.name, now + 31 * 86400) == []

            # A legal hold is lifted through S3 (the latest decision on it counts); the
            # erasure then waits only for the version's retention date.
            await s3.put_object_legal_hold(Bucket="vault", Key="held", LegalHold={"Status": "OFF"})
            lifted = await s3.get_object_legal_hold(Bucket="vault", Key="held")
            assert lifted["LegalHold"]["Status"] == "OFF"
            index = (await service.fetch(bucket)).index
            (still,) = index.versions(held.name, now)
            assert not still.legal_hold and still.retain_until == held.retain_until > now
            assert index.versions(held.name, held.retain_until - 1) != []
            assert index.versions(held.name, held.retain_until + 1) == []
