"""boto3 against the gateway whose blobs are objects in a mesh of storage nodes on the
in-memory network (real time: boto3 runs in threads), through the native client."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio
from gateway_harness import running_gateway
from net_harness import NetHarness
from storage_mesh import RULE_3_OF_6, StorageMesh

from p2pstore.gateway.blobs import MeshBlobs
from p2pstore.net.client import Client, ClientSettings

CHUNK = 64 * 1024
MiB = 1024 * 1024


async def test_gateway_over_an_in_memory_mesh(tmp_path: Path) -> None:
    net = NetHarness("memory", tmp_path)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            mesh = StorageMesh(net, 6)
            mesh.epoch = time.time() - trio.current_time()  # real time: certificates in date
            await mesh.start(nursery)
            joined = await mesh.client(nursery)
            client = Client(
                joined.dht,
                settings=ClientSettings(chunk_size=CHUNK, fragment_timeout=10.0, in_threads=True),
            )
            fetched: list[int] = []
            fetch_chunk = client.fetch_chunk

            async def counted(manifest, placement, index):  # type: ignore[no-untyped-def]
                fetched.append(index)
                return await fetch_chunk(manifest, placement, index)

            client.fetch_chunk = counted  # type: ignore[method-assign]
            async with running_gateway(tmp_path, MeshBlobs(client, RULE_3_OF_6)) as gw:
                s3 = gw.s3
                await s3.create_bucket(Bucket="mesh")
                data = os.urandom(5 * CHUNK + 333)
                await s3.put_object(Bucket="mesh", Key="obj", Body=data)
                body, _ = await s3.get_bytes(Bucket="mesh", Key="obj")
                assert body == data
                for start, stop, chunks in (
                    (CHUNK - 1, CHUNK + 1, [0, 1]),
                    (2 * CHUNK, 3 * CHUNK, [2]),
                    (5 * CHUNK, len(data), [5]),
                    (10, 20, [0]),
                ):
                    fetched.clear()
                    body, _ = await s3.get_bytes(
                        Bucket="mesh", Key="obj", Range=f"bytes={start}-{stop - 1}"
                    )
                    assert body == data[start:stop]
                    assert sorted(fetched) == chunks  # only the chunks the range needs
                await s3.put_object(Bucket="mesh", Key="empty", Body=b"")
                body, _ = await s3.get_bytes(Bucket="mesh", Key="empty")
                assert body == b""
                upload = await s3.create_multipart_upload(Bucket="mesh", Key="mp")
                parts = [os.urandom(5 * MiB), os.urandom(1000)]
                tags = [
                    (
                        await s3.upload_part(
                            Bucket="mesh",
                            Key="mp",
                            UploadId=upload["UploadId"],
                            PartNumber=n,
                            Body=p,
                        )
                    )["ETag"]
                    for n, p in enumerate(parts, 1)
                ]
                await s3.complete_multipart_upload(
                    Bucket="mesh",
                    Key="mp",
                    UploadId=upload["UploadId"],
                    MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(tags, 1)]
                    },
                )
                body, _ = await s3.get_bytes(
                    Bucket="mesh", Key="mp", Range=f"bytes={5 * MiB - 3}-{5 * MiB + 2}"
                )
                assert body == b"".join(parts)[5 * MiB - 3 : 5 * MiB + 3]
            nursery.cancel_scope.cancel()
