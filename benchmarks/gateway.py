"""PUT and GET through the S3 gateway with boto3, beside the native ``p2pstore`` client, in the
same run against the same local mesh of node processes; and the gateway's peak RSS.

Setup: the devnet's ``create_mesh`` (one datacenter per node over two regions, mutual TLS on
loopback), ``--nodes`` processes of ``p2pstore node run``, ``p2pstore gateway`` as a process of
its own in front of them (names in the tenant's bucket index in the mesh, bytes in the mesh
through the native client),
and an access key made with ``p2pstore gateway key create``.  For each repetition, in turn:
``p2pstore put FILE`` and ``p2pstore get CAP`` (native, each a process), then boto3's
``upload_file`` and ``download_file`` (multipart, 8 MiB parts) through the gateway.  Throughput
is MiB of user data per second, wall clock; every read back is checked by SHA-256.  The
gateway's peak RSS is its ``VmHWM`` after the run (the issue: under 300 MiB during a 2 GiB
upload; ``--size 2GiB`` checks exactly that).

Run: ``python benchmarks/gateway.py`` (256 MiB, 1 repetition), ``--size 64MiB`` for a quick one,
``--s3-put-only --size 2GiB`` for the memory bound alone (one upload through the gateway).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import trio
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from p2pstore.cli.devnet import run_node_process
from p2pstore.cli.local_mesh import DEVNET_TENANT, create_mesh

MiB = 1024 * 1024
PART = 8 * MiB


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pstore", *args]


def parse_size(text: str) -> int:
    units = {"GiB": 1024 * MiB, "MiB": MiB}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(*args: str) -> bytes:
    done = await trio.run_process(cli(*args), capture_stdout=True, capture_stderr=True)
    return bytes(done.stdout)


async def joined(client_config: Path, nodes: int) -> None:
    from p2pstore.cli.client_config import connected_client, load_client_config
    from p2pstore.core.rules import CodingRule
    from p2pstore.errors import P2PStoreError

    everyone = CodingRule("probe", k=1, n=1, repair_threshold=1)
    with trio.fail_after(90):
        while True:
            try:
                async with connected_client(load_client_config(client_config)) as client:
                    if len(await client.candidates(everyone)) >= nodes:
                        return
            except* (P2PStoreError, OSError):
                pass
            await trio.sleep(0.5)


async def start_gateway(config: Path) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        cli("gateway", "--config", str(config)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(60):
        while b"serving S3 on " not in seen or not seen.endswith(b"\n"):
            piece = await process.stderr.receive_some(4096)
            if not piece:
                raise SystemExit(f"the gateway exited: {seen.decode(errors='replace')}")
            seen += piece
    line = next(x for x in seen.decode().splitlines() if "serving S3 on " in x)
    return process, line.split("serving S3 on ")[1].split()[0]


async def benchmark(
    size: int, nodes: int, repetitions: int, directory: Path, *, s3_put_only: bool = False
) -> dict[str, object]:
    source = directory / "source.bin"
    expected = write_random(source, size)
    _authority, members, _client = create_mesh(
        directory / "mesh", nodes, nodes, ("FR-GES", "FR-IDF")
    )
    client_config = directory / "mesh" / "client" / "client.toml"
    gateway_config = directory / "gateway.toml"
    gateway_config.write_text(f'[gateway]\nlisten = "127.0.0.1:0"\nclient = "{client_config}"\n')
    results: dict[str, list[float]] = {
        "native_put": [],
        "native_get": [],
        "s3_put": [],
        "s3_get": [],
    }
    async with trio.open_nursery() as nursery:
        for member in members:
            await nursery.start(run_node_process, member)
        await joined(client_config, nodes)
        made = json.loads(
            await run(
                "gateway",
                "--config",
                str(gateway_config),
                "key",
                "create",
                "--tenant",
                DEVNET_TENANT,
                "--json",
            )
        )
        gateway, url = await start_gateway(gateway_config)
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=made["access_key_id"],
            aws_secret_access_key=made["secret_access_key"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        transfer = TransferConfig(
            multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=4
        )
        await trio.to_thread.run_sync(lambda: s3.create_bucket(Bucket="bench"))
        out = directory / "out.bin"
        if s3_put_only:
            started = time.perf_counter()
            await trio.to_thread.run_sync(
                lambda: s3.upload_file(str(source), "bench", "object", Config=transfer)
            )
            seconds = time.perf_counter() - started
            peak = vm_hwm_mib(gateway.pid)
            gateway.kill()
            await gateway.wait()
            nursery.cancel_scope.cancel()
            return {
                "size_mib": size / MiB,
                "s3_put_mib_s": round(size / MiB / seconds, 1),
                "gateway_peak_rss_mib": round(peak),
            }
        for _ in range(repetitions):
            started = time.perf_counter()
            put = json.loads(
                await run("put", str(source), "--json", "--config", str(client_config))
            )
            results["native_put"].append(size / MiB / (time.perf_counter() - started))
            started = time.perf_counter()
            await run("get", put["read_cap"], "-o", str(out), "--config", str(client_config))
            results["native_get"].append(size / MiB / (time.perf_counter() - started))
            assert sha256_of(out) == expected
            out.unlink()
            started = time.perf_counter()
            await trio.to_thread.run_sync(
                lambda: s3.upload_file(str(source), "bench", "object", Config=transfer)
            )
            results["s3_put"].append(size / MiB / (time.perf_counter() - started))
            started = time.perf_counter()
            await trio.to_thread.run_sync(
                lambda: s3.download_file("bench", "object", str(out), Config=transfer)
            )
            results["s3_get"].append(size / MiB / (time.perf_counter() - started))
            assert sha256_of(out) == expected
            out.unlink()
        peak = vm_hwm_mib(gateway.pid)
        gateway.kill()
        await gateway.wait()
        nursery.cancel_scope.cancel()
    medians = {name: statistics.median(values) for name, values in results.items()}
    return {
        "size_mib": size / MiB,
        "nodes": nodes,
        **{f"{name}_mib_s": round(value, 1) for name, value in medians.items()},
        "put_ratio": round(medians["s3_put"] / medians["native_put"], 2),
        "get_ratio": round(medians["s3_get"] / medians["native_get"], 2),
        "gateway_peak_rss_mib": round(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--s3-put-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pstore-gateway-bench-") as directory:
        result = trio.run(
            functools.partial(
                benchmark,
                parse_size(args.size),
                args.nodes,
                args.repetitions,
                Path(directory),
                s3_put_only=args.s3_put_only,
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
