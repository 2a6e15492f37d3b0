"""boto3 against ``p2pstore gateway`` in front of a mesh of real node processes over mutual TLS:
the gateway is a process of its own, as an institution runs it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError
from gateway_harness import S3, boto_client

from p2pstore.cli.client_config import connected_client, load_client_config
from p2pstore.cli.local_mesh import DEVNET_TENANT, create_mesh, free_loopback_ports
from p2pstore.core.rules import CodingRule
from p2pstore.errors import P2PStoreError
from p2pstore.gateway.keys import AccessKey

MiB = 1024 * 1024
CHUNK = 4 * MiB  # the client's default chunk size
PARTS = 20  # a 100 MiB multipart upload in 5 MiB parts
DEADLINE = 300.0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pstore", *args]


async def wait_until_joined(config: Path, count: int) -> None:
    everyone = CodingRule("probe", k=1, n=1, repair_threshold=1)
    with trio.fail_after(60):
        while True:
            try:
                async with connected_client(load_client_config(config)) as client:
                    if len(await client.candidates(everyone)) >= count:
                        return
            except* (P2PStoreError, OSError):
                pass  # a node not listening yet
            await trio.sleep(0.3)


@asynccontextmanager
async def node_processes(directory: Path, count: int) -> AsyncIterator[Path]:
    """``count`` node processes of a fresh local mesh; yields the client config."""
    _authority, members, _client = create_mesh(directory, count, count, ("FR-GES", "FR-IDF"))
    processes = []
    try:
        for member in members:
            with (member.directory / "node.log").open("ab") as log:
                processes.append(
                    await trio.lowlevel.open_process(
                        cli("node", "run", "--config", str(member.directory / "node.toml")),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                    )
                )
        config = directory / "client" / "client.toml"
        await wait_until_joined(config, count)
        yield config
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
        with trio.CancelScope(shield=True):
            for process in processes:
                await process.wait()


async def run_cli(*args: str, config: Path) -> str:
    done = await trio.run_process(
        cli(*args, "--config", str(config)), capture_stdout=True, capture_stderr=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def make_key(config: Path, *args: str) -> AccessKey:
    done = await trio.run_process(
        cli("gateway", "--config", str(config), "key", "create", "--json", *args),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    made = json.loads(done.stdout)
    return AccessKey(made["access_key_id"], made["secret_access_key"], "", None, False, 0.0)


@asynccontextmanager
async def gateway_process(config: Path) -> AsyncIterator[tuple[str, trio.Process]]:
    """``p2pstore gateway`` started, and the URL it reports once it serves."""
    process = await trio.lowlevel.open_process(
        cli("gateway", "--config", str(config)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    try:
        with trio.fail_after(60):
            while b"serving S3 on " not in seen or not seen.endswith(b"\n"):
                piece = await process.stderr.receive_some(4096)
                assert piece, f"the gateway exited: {seen.decode(errors='replace')}"
                seen += piece
        line = next(x for x in seen.decode().splitlines() if "serving S3 on " in x)
        url = line.split("serving S3 on ")[1].split()[0]
        yield url, process
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


@pytest.mark.integration
async def test_boto3_through_the_gateway_to_node_processes(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with node_processes(tmp_path / "mesh", 8) as client_config:
            config = tmp_path / "gateway.toml"
            admin = f"127.0.0.1:{free_loopback_ports(1)[0]}"
            config.write_text(
                f'[gateway]\nlisten = "127.0.0.1:0"\nclient = "{client_config}"\n'
                f'admin = "{admin}"\n'
            )
            writer = await make_key(config, "--tenant", DEVNET_TENANT)
            notes = tmp_path / "notes.txt"
            notes.write_bytes(b"made by p2pstore cp\n")
            await run_cli("bucket", "create", "from-cli", config=client_config)
            await run_cli("cp", str(notes), "from-cli/notes.txt", config=client_config)
            reader = await make_key(config, "--tenant", DEVNET_TENANT, "--read-only")
            async with gateway_process(config) as (url, process):
                s3 = S3(boto_client(url, writer))
                await s3.create_bucket(Bucket="archive")
                data = os.urandom(2 * CHUNK + 12345)
                put = await s3.put_object(Bucket="archive", Key="scan/1.tif", Body=data)
                assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
                body, _ = await s3.get_bytes(Bucket="archive", Key="scan/1.tif")
                assert body == data
                for start, stop in (
                    (CHUNK - 100, CHUNK + 100),
                    (2 * CHUNK - 1, 2 * CHUNK + 1),
                    (0, 1),
                    (len(data) - 5, len(data)),
                ):
                    body, got = await s3.get_bytes(
                        Bucket="archive", Key="scan/1.tif", Range=f"bytes={start}-{stop - 1}"
                    )
                    assert body == data[start:stop], (start, stop)
                    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206

                # 100 MiB in 5 MiB parts, one of them copied from an object (UploadPartCopy).
                upload = await s3.create_multipart_upload(Bucket="archive", Key="big")
                uid = upload["UploadId"]
                listed = await s3.list_multipart_uploads(Bucket="archive")
                assert [u["UploadId"] for u in listed["Uploads"]] == [uid]
                whole_md5, tags, third = hashlib.md5(), [], b""
                for number in range(1, PARTS + 1):
                    if number == 2:
                        copied = await s3.upload_part_copy(
                            Bucket="archive", Key="big", UploadId=uid, PartNumber=number,
                            CopySource="archive/scan/1.tif",
                            CopySourceRange=f"bytes=0-{5 * MiB - 1}",
                        )  # fmt: skip
                        tags.append(copied["CopyPartResult"]["ETag"])
                        whole_md5.update(data[: 5 * MiB])
                        continue
                    part = os.urandom(5 * MiB)
                    whole_md5.update(part)
                    third = part if number == 3 else third
                    answer = await s3.upload_part(
                        Bucket="archive", Key="big", UploadId=uid, PartNumber=number, Body=part
                    )
                    tags.append(answer["ETag"])
                await s3.complete_multipart_upload(
                    Bucket="archive",
                    Key="big",
                    UploadId=uid,
                    MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(tags, 1)]
                    },
                )
                assert (await s3.list_multipart_uploads(Bucket="archive")).get("Uploads") is None
                got_md5 = hashlib.md5()

                def read_all() -> dict[str, Any]:
                    response = s3.client.get_object(Bucket="archive", Key="big")
                    for piece in response["Body"].iter_chunks(MiB):
                        got_md5.update(piece)
                    return response  # type: ignore[no-any-return]

                got = await trio.to_thread.run_sync(read_all)
                assert got_md5.digest() == whole_md5.digest()
                assert got["ContentLength"] == PARTS * 5 * MiB
                assert got["ETag"].endswith(f'-{PARTS}"')
                edge = 10 * MiB  # the copied part's end, the third part's start
                body, _ = await s3.get_bytes(
                    Bucket="archive", Key="big", Range=f"bytes={edge - 10}-{edge + 9}"
                )
                assert body == data[5 * MiB - 10 : 5 * MiB] + third[:10]

                # The CLI sees what S3 wrote, and S3 what the CLI made (one bucket index).
                listed_cli = json.loads(
                    await run_cli("ls", "archive", "--json", config=client_config)
                )
                assert {o["key"]: o["size"] for o in listed_cli}["big"] == PARTS * 5 * MiB
                body, _ = await s3.get_bytes(Bucket="from-cli", Key="notes.txt")
                assert body == b"made by p2pstore cp\n"

                await s3.copy_object(
                    Bucket="archive", Key="copy", CopySource={"Bucket": "archive", "Key": "big"}
                )
                head = await s3.head_object(Bucket="archive", Key="copy")
                assert head["ContentLength"] == PARTS * 5 * MiB
                listing = await s3.list_objects_v2(Bucket="archive", Delimiter="/")
                assert [o["Key"] for o in listing["Contents"]] == ["big", "copy"]
                assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["scan/"]

                presigned = s3.client.generate_presigned_url(
                    "get_object", Params={"Bucket": "archive", "Key": "scan/1.tif"}, ExpiresIn=60
                )
                fetched = await trio.to_thread.run_sync(
                    lambda: urllib.request.urlopen(presigned, timeout=30).read()
                )
                assert fetched == data

                readonly = S3(boto_client(url, reader))
                assert (await readonly.head_object(Bucket="archive", Key="big"))["ContentLength"]
                with pytest.raises(ClientError) as caught:
                    await readonly.put_object(Bucket="archive", Key="x", Body=b"no")
                assert code(caught.value) == "AccessDenied"
                forged = AccessKey(writer.key_id, "wrong" * 8, "", None, False, 0.0)
                with pytest.raises(ClientError) as caught:
                    await S3(boto_client(url, forged)).list_buckets()
                assert code(caught.value) == "SignatureDoesNotMatch"
                with pytest.raises(ClientError) as caught:
                    await s3.put_bucket_tagging(
                        Bucket="archive", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}
                    )
                assert code(caught.value) == "NotImplemented"

                # Object Lock: an early delete of a retained version is refused.
                await s3.create_bucket(Bucket="vault", ObjectLockEnabledForBucket=True)
                kept = await s3.put_object(
                    Bucket="vault", Key="doc", Body=b"kept", ObjectLockMode="COMPLIANCE",
                    ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
                )  # fmt: skip
                with pytest.raises(ClientError) as caught:
                    await s3.delete_object(Bucket="vault", Key="doc", VersionId=kept["VersionId"])
                assert code(caught.value) == "AccessDenied"

                await s3.delete_object(Bucket="archive", Key="copy")
                with pytest.raises(ClientError) as caught:
                    await s3.head_object(Bucket="archive", Key="copy")
                assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
                metrics = await trio.to_thread.run_sync(
                    lambda: urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read()
                )
                parts_line = f'operation="UploadPart",status="200"}} {PARTS - 1}.0'
                assert b"p2pstore_gateway_requests_total{" + parts_line.encode() in metrics
                assert b"p2pstore_gateway_request_seconds_bucket" in metrics
                print(f"gateway peak RSS: {peak_rss_mib(process.pid):.0f} MiB")
                process.send_signal(signal.SIGINT)
                with trio.fail_after(30):
                    await process.wait()
