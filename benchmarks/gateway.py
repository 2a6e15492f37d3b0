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

Beside them, measured in the same run on one thread (its CPU time): the ceiling of the put
pipeline (seal + zfec encode + fragment ids, as ``datapath.py``) and of the hashes an S3 PUT
adds to every byte (MD5 for the ETag, SHA-256 of a signed payload), and for every operation the
CPU milliseconds per MiB of user data spent by boto3 (this process), the native client, the
gateway (its trio thread apart: the HTTP server, SigV4 and the hashes of the body run there) and
the nodes.  Repetitions alternate, so the noise of a shared machine hits all alike; figures are
medians [min-max].

Run: ``python benchmarks/gateway.py`` (256 MiB, 3 repetitions), ``--size 64MiB --repetitions 1``
for a quick one, ``--s3-put-only --size 2GiB`` for the memory bound alone (one upload through
the gateway), ``--profile DIR`` to run the gateway under cProfile (``profiling/sitecustomize.py``;
its trio thread only) and leave ``PID.prof`` in DIR.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import boto3
import trio
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from datapath import put_ceiling

from p2pstore.cli.devnet import run_node_process
from p2pstore.cli.local_mesh import DEVNET_TENANT, create_mesh
from p2pstore.core.rules import DEFAULT_RULE_NAME, SHIPPED_RULES
from p2pstore.net.client import ClientSettings

MiB = 1024 * 1024
PART = 8 * MiB
HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
OPS = ("native_put", "native_get", "s3_put", "s3_get")
PARTS = ("boto3", "native", "gateway", "gateway_trio", "nodes", "machine")


def hash_ceiling(path: Path, name: str) -> float:
    """MiB/s of one hash over the file, one thread (its CPU time)."""
    busy, size = 0.0, 0
    with path.open("rb") as source:
        while block := source.read(4 * MiB):
            start = time.thread_time()
            hashlib.new(name, block)
            busy += time.thread_time() - start
            size += len(block)
    return size / MiB / busy


def _proc_seconds(path: str) -> float:
    after_name = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / TICK


class CpuMeter:
    """Core-seconds so far of each part of the run, from /proc and getrusage (Linux)."""

    def __init__(self, gateway: int, nodes: list[int]) -> None:
        self.gateway = gateway
        self.nodes = nodes

    def sample(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # the native put/get processes
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return {
            "boto3": own.ru_utime + own.ru_stime,
            "native": reaped.ru_utime + reaped.ru_stime,
            "gateway": _proc_seconds(f"/proc/{self.gateway}/stat"),
            "gateway_trio": _proc_seconds(f"/proc/{self.gateway}/task/{self.gateway}/stat"),
            "nodes": sum(_proc_seconds(f"/proc/{pid}/stat") for pid in self.nodes),
            "machine": (user + nice + system + irq + softirq + steal) / TICK,
        }


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
    with trio.fail_after(180):
        while True:
            try:
                async with connected_client(load_client_config(client_config)) as client:
                    if len(await client.candidates(everyone)) >= nodes:
                        return
            except* (P2PStoreError, OSError):
                pass
            await trio.sleep(0.5)


async def start_gateway(config: Path, profile: Path | None) -> tuple[trio.Process, str]:
    env = dict(os.environ)
    if profile is not None:  # made and resolved by main()
        env["P2PSTORE_BENCH_PROFILE"] = str(profile)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE / "profiling"), *filter(None, [env.get("PYTHONPATH")])]
        )
    process = await trio.lowlevel.open_process(
        cli("gateway", "--config", str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
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


async def kill_on_exit(process: trio.Process) -> None:
    """However the run ends (an error, Ctrl-C), the gateway process ends with it."""
    try:
        await trio.sleep_forever()
    finally:
        if process.returncode is None:
            process.kill()


async def stop_gateway(gateway: trio.Process) -> None:
    """SIGINT: a clean exit, so a profile is written."""
    gateway.send_signal(signal.SIGINT)
    with trio.move_on_after(30):
        await gateway.wait()
    if gateway.returncode is None:
        gateway.kill()
        await gateway.wait()


async def benchmark(
    size: int,
    nodes: int,
    repetitions: int,
    directory: Path,
    *,
    s3_put_only: bool = False,
    profile: Path | None = None,
) -> dict[str, object]:
    source = directory / "source.bin"
    expected = write_random(source, size)
    _authority, members, _client = create_mesh(
        directory / "mesh", nodes, nodes, ("FR-GES", "FR-IDF")
    )
    client_config = directory / "mesh" / "client" / "client.toml"
    gateway_config = directory / "gateway.toml"
    gateway_config.write_text(f'[gateway]\nlisten = "127.0.0.1:0"\nclient = "{client_config}"\n')
    results: dict[str, list[float]] = {name: [] for name in OPS}
    cpu: dict[str, list[float]] = {}
    async with trio.open_nursery() as nursery:
        node_pids = [(await nursery.start(run_node_process, member)).pid for member in members]
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
        gateway, url = await start_gateway(gateway_config, profile)
        nursery.start_soon(kill_on_exit, gateway)
        meter = CpuMeter(gateway.pid, node_pids)
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
            await stop_gateway(gateway)
            nursery.cancel_scope.cancel()
            return {
                "size_mib": size / MiB,
                "s3_put_mib_s": round(size / MiB / seconds, 1),
                "gateway_peak_rss_mib": round(peak),
            }

        async def timed(name: str, work: Callable[[], Awaitable[object]]) -> None:
            before = meter.sample()
            started = time.perf_counter()
            await work()
            seconds = time.perf_counter() - started
            after = meter.sample()
            results[name].append(size / MiB / seconds)
            for part in PARTS:
                used = after[part] - before[part]
                cpu.setdefault(f"{name} {part}", []).append(used * 1000 / (size / MiB))
            cpu.setdefault(f"{name} idle", []).append(
                max(0.0, 1 - (after["machine"] - before["machine"]) / (2 * seconds)) * 100
            )

        put: dict[str, str] = {}

        async def native_put() -> None:
            put.update(
                json.loads(await run("put", str(source), "--json", "--config", str(client_config)))
            )

        async def native_get() -> None:
            await run("get", put["read_cap"], "-o", str(out), "--config", str(client_config))

        for _ in range(repetitions):
            await timed("native_put", native_put)
            await timed("native_get", native_get)
            assert sha256_of(out) == expected
            out.unlink()
            await timed(
                "s3_put",
                lambda: trio.to_thread.run_sync(
                    lambda: s3.upload_file(str(source), "bench", "object", Config=transfer)
                ),
            )
            await timed(
                "s3_get",
                lambda: trio.to_thread.run_sync(
                    lambda: s3.download_file("bench", "object", str(out), Config=transfer)
                ),
            )
            assert sha256_of(out) == expected
            out.unlink()
        peak = vm_hwm_mib(gateway.pid)
        await stop_gateway(gateway)
        nursery.cancel_scope.cancel()
    rule = SHIPPED_RULES[DEFAULT_RULE_NAME]
    chunk = ClientSettings().chunk_size
    ceilings = {
        f"put_pipeline_{rule.k}_of_{rule.n}": put_ceiling(source, size, rule, chunk),
        "md5": hash_ceiling(source, "md5"),
        "sha256": hash_ceiling(source, "sha256"),
    }
    medians = {name: statistics.median(values) for name, values in results.items()}
    report(size, repetitions, results, cpu, ceilings)
    return {
        "size_mib": size / MiB,
        "nodes": nodes,
        **{f"{name}_mib_s": round(value, 1) for name, value in medians.items()},
        "put_ratio": round(medians["s3_put"] / medians["native_put"], 2),
        "get_ratio": round(medians["s3_get"] / medians["native_get"], 2),
        "put_ratios": [
            round(a / b, 2) for a, b in zip(results["s3_put"], results["native_put"], strict=True)
        ],
        "gateway_peak_rss_mib": round(peak),
        "ceilings_mib_s": {name: round(value, 1) for name, value in ceilings.items()},
        "cpu_ms_per_mib": {name: round(statistics.median(v), 1) for name, v in cpu.items()},
    }


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.0f}-{max(values):.0f}]"


def report(
    size: int,
    repetitions: int,
    results: dict[str, list[float]],
    cpu: dict[str, list[float]],
    ceilings: dict[str, float],
) -> None:
    print(
        f"object {size // MiB} MiB; median [min-max] of {repetitions} alternating repetition(s)",
        file=sys.stderr,
    )
    columns = ("MiB/s", "boto3", "native", "gateway", "gw trio", "nodes", "idle %")
    print(f"{'op':<11}" + "".join(f"{c:>16}" for c in columns), file=sys.stderr)
    print(f"{'':<11}{'':>16}{'CPU ms per MiB of user data':>80}", file=sys.stderr)
    for op in OPS:
        cells = [_cell(results[op])] + [
            _cell(cpu[f"{op} {part}"])
            for part in ("boto3", "native", "gateway", "gateway_trio", "nodes", "idle")
        ]
        print(f"{op:<11}" + "".join(f"{c:>16}" for c in cells), file=sys.stderr)
    ratios = [a / b for a, b in zip(results["s3_put"], results["native_put"], strict=True)]
    print(
        f"PUT ratio {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] "
        "(per repetition), target >= 0.8",
        file=sys.stderr,
    )
    print(
        "machine ceilings, one thread: "
        + ", ".join(f"{name} {value:.0f} MiB/s" for name, value in ceilings.items()),
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--s3-put-only", action="store_true")
    parser.add_argument("--profile", type=Path, help="directory for the gateway's cProfile dump")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="p2pstore-gateway-bench-") as directory:
        result = trio.run(
            functools.partial(
                benchmark,
                parse_size(args.size),
                args.nodes,
                args.repetitions,
                Path(directory),
                s3_put_only=args.s3_put_only,
                profile=args.profile,
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
