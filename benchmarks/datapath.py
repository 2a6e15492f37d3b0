"""Put and get through a local mesh of node processes, beside the single-core ceiling of the
same pipeline measured in the same run.

Why: a put or a get can never beat the CPU work it must do, so its throughput only means something
next to what one core does with that work alone.  The issue's targets: put and get each >= 50%
of that ceiling.

Setup: the devnet's ``create_mesh`` (a throw-away mesh CA; one datacenter per node, over two
regions), ``--nodes`` processes of ``p2pstore node run`` (mutual TLS on loopback, every fragment
fsynced to the node's own data directory), and this process as a client node (client
certificate, no listening port) that joins through node-1 and waits until it sees every node.
For the default rule (standard, 4-of-8) and for 3-of-10, each repetition runs, in turn: the
ceiling of the put pipeline, a put, the ceiling of the get pipeline, a get (by a fresh client,
as ``p2pstore get`` would be) -- so the noise of a shared machine hits all alike.  The tables
give medians, [min - max], and the median of the per-repetition ratios.  A get's plaintext is
written to a temporary file whose sha256 must equal the source's.

The ceiling, in one thread, over the same file and chunk size (reading the file not counted):
put = AES-256-GCM seal (the codec's ``ChunkCipher``) + zfec encode + the ids of the n fragments
(Merkle roots, :func:`~p2pstore.codec.fragment_ids.fragment_id`); get = the ids of k fragments
+ zfec decode from the k last shares (parity only when n >= 2k:
zfec's worst case) + AES-256-GCM open.  The get asks the holders it timed quickest, so it
decodes from a mix of primary and parity shares and zfec does real work; the ceiling from the k
primaries (decoding is then a copy) is printed beside it as the best case.

During each put and get the client's, the nodes' and the rest of the machine's CPU time is read
from /proc: the table shows where the cores went, the CPU milliseconds each MiB of user data
cost the client and the nodes, and the throughput those costs would allow if the client and
the nodes had every core to themselves.

``--rss SIZE`` is the memory-bound check instead: a client in a process of its own
(``rss_client.py``) puts then gets a SIZE object of random bytes, and its peak RSS is reported
(the issue: < 300 MiB for 2 GiB).

Run: ``python benchmarks/datapath.py`` (256 MiB, 3 repetitions; about 2 min), ``--quick``
(64 MiB, 1 repetition; about 40 s), ``--explore`` (then chunk size x chunks in flight; about
5 min), ``--rss 2GiB`` (about 3 min).  Linux only for the CPU table and ``--rss``'s ``VmHWM``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
import zfec
from receive_floor import receive_floor_ms
from rss_client import MeshClient, peak_rss_kib

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.devnet import run_node_process
from p2pstore.cli.local_mesh import DevnetNode, create_mesh
from p2pstore.codec import AES_256_GCM, ChunkCipher, ReadCap, iter_chunks
from p2pstore.codec.aead import TAG_BYTES
from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.core.rules import DEFAULT_RULE_NAME, SHIPPED_RULES, CodingRule
from p2pstore.identity import NodeCredentials
from p2pstore.net.client import Client, ClientSettings

MiB = 1024 * 1024
REGIONS = ("FR-GES", "FR-IDF")
RULES = (
    SHIPPED_RULES[DEFAULT_RULE_NAME],
    CodingRule("bench-3-of-10", k=3, n=10, repair_threshold=5),
)
TARGET_RATIO = 0.5
KEY = bytes(range(32))
DISK_MARGIN = 512 * MiB
EXPLORE_IN_FLIGHT = (2, 3, 4, 6)
EXPLORE_CHUNK_SIZES = (4 * MiB, 8 * MiB)
RSS_LIMIT = 300 * MiB


def label(rule: CodingRule) -> str:
    """``standard 4-of-8``; a rule named after its k and n is not named twice."""
    coding = f"{rule.k}-of-{rule.n}"
    return rule.name if rule.name.endswith(coding) else f"{rule.name} {coding}"


# --- the ceiling: one thread, same data, same chunk size -------------------------------------


def _coded(cipher: ChunkCipher, coder: zfec.Encoder, k: int, index: int, chunk: bytes) -> list:
    """Seal the chunk, pad it to k equal blocks, code them into n."""
    sealed = cipher.seal(index, chunk)
    size = -(-len(sealed) // k)
    padded = memoryview(sealed + bytes(size * k - len(sealed)))
    return coder.encode(tuple(padded[i * size : (i + 1) * size] for i in range(k)))


def put_ceiling(path: Path, size: int, rule: CodingRule, chunk_size: int) -> float:
    """MiB/s of user data: seal + zfec encode + the id of every fragment, one thread (its CPU
    time, so other processes on the cores do not lower it)."""
    cipher = ChunkCipher(KEY, cipher=AES_256_GCM, chunk_size=chunk_size, object_size=size)
    coder = zfec.Encoder(rule.k, rule.n)
    busy = 0.0
    with path.open("rb") as source:
        for index, chunk in enumerate(iter_chunks(source, chunk_size)):
            start = time.thread_time()
            for block in _coded(cipher, coder, rule.k, index, chunk):
                fragment_id(block)
            busy += time.thread_time() - start
    return size / MiB / busy


def get_ceilings(path: Path, size: int, rule: CodingRule, chunk_size: int) -> tuple[float, float]:
    """MiB/s of user data of the ids of k fragments + zfec decode + open, one thread: from the
    k primary shares (best case) and from the k last shares (worst case).  Coding the fragments
    first is not counted."""
    k, n = rule.k, rule.n
    cipher = ChunkCipher(KEY, cipher=AES_256_GCM, chunk_size=chunk_size, object_size=size)
    coder, decoder = zfec.Encoder(k, n), zfec.Decoder(k, n)
    primaries, parity = list(range(k)), list(range(n - k, n))
    busy = {"primaries": 0.0, "parity": 0.0}
    with path.open("rb") as source:
        for index, chunk in enumerate(iter_chunks(source, chunk_size)):
            blocks = _coded(cipher, coder, k, index, chunk)
            sealed_size = len(chunk) + TAG_BYTES
            for name, shares in (("primaries", primaries), ("parity", parity)):
                start = time.thread_time()
                chosen = [blocks[s] for s in shares]
                for block in chosen:
                    fragment_id(block)
                rebuilt = chosen if shares == primaries else decoder.decode(chosen, shares)
                padded = b"".join(rebuilt)
                cipher.open(index, memoryview(padded)[:sealed_size])
                busy[name] += time.thread_time() - start
    return size / MiB / busy["primaries"], size / MiB / busy["parity"]


# --- the mesh --------------------------------------------------------------------------------


@dataclass
class Mesh:
    """The node processes' layout and the client's identity, under one directory."""

    directory: Path
    members: list[DevnetNode]
    client_key: Path
    client_cert: Path
    ca_certificate: Path

    @property
    def bootstrap(self) -> str:
        return self.members[0].address

    def check_alive(self) -> None:
        """Raise RuntimeError naming the log of any node process that exited."""
        for member in self.members:
            if member.process is not None and member.process.returncode is not None:
                raise RuntimeError(
                    f"{member.name} exited with code {member.process.returncode}; "
                    f"see {member.directory / 'node.log'}"
                )


def prepare_mesh(directory: Path, nodes: int, audits_per_hour: float | None = None) -> Mesh:
    """CA, node identities and configs (one datacenter per node, logs at warning level) and
    the client's identity under ``directory``; ``audits_per_hour`` sets every node's ``[repair]
    audits_per_holder_per_hour`` (else node.toml leaves the default)."""
    _authority, members, client = create_mesh(directory, nodes, nodes, REGIONS)
    for member in members:
        others = () if member is members[0] else (members[0].address,)
        path = write_local_node_config(
            member.directory, listen=member.address, bootstrap_peers=others, log_level="warning"
        )
        if audits_per_hour is not None:
            with path.open("a", encoding="utf-8") as config:
                config.write(f"\n[repair]\naudits_per_holder_per_hour = {audits_per_hour!r}\n")
    assert client.key_path is not None and client.certificate_path is not None
    return Mesh(
        directory, members, client.key_path, client.certificate_path, directory / "ca" / "ca.crt"
    )


async def run_nodes(mesh: Mesh, *, task_status: trio.TaskStatus[None]) -> None:
    """Every node process; cancelling this stops them all (SIGTERM, then SIGKILL after the
    devnet's grace), also when the benchmark fails."""
    async with trio.open_nursery() as nursery:
        for member in mesh.members:
            member.process = await nursery.start(run_node_process, member)
        task_status.started()


class Interrupted:
    """Turns SIGINT/SIGTERM into cancelling the run, so the nursery stops every node process;
    ``signal`` says which arrived."""

    def __init__(self) -> None:
        self.signal: str | None = None

    async def watch(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                self.signal = signal.Signals(signum).name
                print(f"{self.signal}: stopping every node", file=sys.stderr, flush=True)
                scope.cancel()
                return

    def check(self) -> None:
        """Exit with a message if a signal stopped the run."""
        if self.signal is not None:
            raise SystemExit(f"interrupted by {self.signal}; every node process was stopped")


def check_disk(directory: Path, needed: int) -> None:
    """Refuse clearly, before any work, if the temporary directory's disk is too small."""
    free = shutil.disk_usage(directory).free
    if free < needed + DISK_MARGIN:
        raise SystemExit(
            f"not enough free disk in {directory}: {free / MiB:,.0f} MiB free, "
            f"{(needed + DISK_MARGIN) / MiB:,.0f} MiB needed (the source file, the nodes' "
            "fragments at n/k times the data, and a margin); set TMPDIR to a larger disk "
            "or pass a smaller size"
        )


def write_random_file(path: Path, size: int) -> str:
    """``size`` random bytes, written 4 MiB at a time; returns their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


class CpuMeter:
    """Core-seconds used by this process, by the node processes, and by every other process of
    the machine, from /proc (Linux; on other systems :meth:`sample` returns None)."""

    def __init__(self, node_pids: list[int]) -> None:
        self.node_pids = node_pids
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def sample(self) -> tuple[float, float, float] | None:
        """(this process, the nodes, the whole machine busy), in core-seconds since boot."""
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(x) for x in stat.readline().split()[1:9]]
            nodes = 0
            for pid in self.node_pids:
                with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                    after_name = stat.read().rsplit(")", 1)[1].split()
                nodes += int(after_name[11]) + int(after_name[12])
        except (OSError, ValueError, IndexError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        busy = (user + nice + system + irq + softirq + steal) / self.tick
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime, nodes / self.tick, busy


CPU_PARTS = ("client", "nodes", "others", "idle")


def record_cpu(
    results: Results,
    name: str,
    before: tuple[float, float, float] | None,
    after: tuple[float, float, float] | None,
    seconds: float,
    size: int,
) -> None:
    """Share of the machine's capacity (cores x wall time) each part used during one op, and
    the client's and the nodes' CPU milliseconds per MiB of user data."""
    if before is None or after is None:
        return
    capacity = (os.cpu_count() or 1) * seconds
    client, nodes, busy = (a - b for a, b in zip(after, before, strict=True))
    others = max(0.0, busy - client - nodes)
    idle = max(0.0, capacity - busy)
    for part, used in zip(CPU_PARTS, (client, nodes, others, idle), strict=True):
        results.add(f"{name} cpu {part}", used / capacity)
    results.add(f"{name} ms/MiB client", client * 1000 / (size / MiB))
    results.add(f"{name} ms/MiB nodes", nodes * 1000 / (size / MiB))


# --- measurements through the mesh ------------------------------------------------------------


async def timed_put(
    client: Client, path: Path, size: int, rule: CodingRule
) -> tuple[float, ReadCap]:
    with path.open("rb") as source:
        start = time.perf_counter()
        result = await client.put(source, size, rule)
        return time.perf_counter() - start, result.read_cap


async def timed_get(client: Client, cap: ReadCap, out: Path) -> float:
    """Seconds to get ``cap`` into the file ``out``."""
    with out.open("wb") as sink:

        async def write(data: bytes) -> None:
            await trio.to_thread.run_sync(sink.write, data)

        start = time.perf_counter()
        await client.get(cap, write)
        return time.perf_counter() - start


async def check_and_remove(out: Path, expected_sha256: str) -> None:
    """RuntimeError if ``out`` is not the object put; then remove it."""
    if await trio.to_thread.run_sync(file_sha256, out, abandon_on_cancel=True) != expected_sha256:
        raise RuntimeError("the object got back differs from the one put (sha256 mismatch)")
    await trio.to_thread.run_sync(out.unlink)


@dataclass
class Results:
    """Samples by row name, in the order measured."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def cell(self, name: str) -> str:
        values = self.samples[name]
        return f"{self.median(name):7.1f} [{min(values):.0f}-{max(values):.0f}]"

    def ratio(self, name: str, baseline: str) -> float:
        """Median of the per-repetition ratios ``name / baseline``."""
        pairs = zip(self.samples[name], self.samples[baseline], strict=True)
        return statistics.median(a / b for a, b in pairs)


@dataclass(frozen=True)
class Run:
    """One benchmark's parameters."""

    size: int
    repeats: int
    settings: ClientSettings
    audits_per_hour: float | None = None
    as_json: bool = False


async def measure(
    mesh_client: MeshClient,
    mesh: Mesh,
    source: Path,
    source_sha256: str,
    run: Run,
    results: Results,
    progress: Callable[[str], None],
) -> None:
    """For each repetition and rule: put ceiling, put, get ceilings, get (by a fresh client)."""
    chunk = run.settings.chunk_size
    out = source.with_name("got.bin")
    meter = CpuMeter([m.process.pid for m in mesh.members if m.process is not None])
    sender = NodeCredentials.load(mesh.client_key, mesh.client_cert)
    first = mesh.members[0].directory
    receiver = NodeCredentials.load(first / "node.key", first / "node.crt")
    for repeat in range(1, run.repeats + 1):
        floor = await trio.to_thread.run_sync(
            receive_floor_ms, sender, receiver, mesh.ca_certificate, abandon_on_cancel=True
        )
        for part, ms in floor.items():
            results.add(f"floor {part}", ms)
        for rule in RULES:
            name = label(rule)
            progress(f"repetition {repeat}/{run.repeats}: {name}")
            results.add(
                f"{name} put ceiling",
                await trio.to_thread.run_sync(
                    put_ceiling, source, run.size, rule, chunk, abandon_on_cancel=True
                ),
            )
            before = meter.sample()
            seconds, cap = await timed_put(mesh_client.client(run.settings), source, run.size, rule)
            record_cpu(results, f"{name} put", before, meter.sample(), seconds, run.size)
            results.add(f"{name} put", run.size / MiB / seconds)
            primaries, parity = await trio.to_thread.run_sync(
                get_ceilings, source, run.size, rule, chunk, abandon_on_cancel=True
            )
            results.add(f"{name} get ceiling", parity)
            results.add(f"{name} get ceiling primaries", primaries)
            before = meter.sample()
            seconds = await timed_get(mesh_client.client(run.settings), cap, out)
            record_cpu(results, f"{name} get", before, meter.sample(), seconds, run.size)
            results.add(f"{name} get", run.size / MiB / seconds)
            await check_and_remove(out, source_sha256)
            mesh.check_alive()


def print_results(results: Results, run: Run, nodes: int) -> None:
    settings = run.settings
    print(
        f"object {run.size // MiB} MiB of random bytes, chunk {settings.chunk_size // MiB} MiB, "
        f"{settings.chunks_in_flight} chunks in flight; median of {run.repeats} alternating "
        "repetition(s) [min-max]; MiB/s of user data"
    )
    head = f"{'rule':22} {'op':3} {'measured':>19} {'1-core ceiling':>19} {'ratio':>6}  target"
    print(head)
    print("-" * len(head))
    for rule in RULES:
        name = label(rule)
        for op in ("put", "get"):
            measured, ceiling = f"{name} {op}", f"{name} {op} ceiling"
            ratio = results.ratio(measured, ceiling)
            verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
            print(
                f"{name:22} {op:3} {results.cell(measured):>19} {results.cell(ceiling):>19}"
                f" {ratio:6.1%}  >= {TARGET_RATIO:.0%}: {verdict}"
            )
        primaries = f"{name} get ceiling primaries"
        print(
            f"{'':22} {'':3} {'ceiling from the k primaries:':>39} {results.cell(primaries):>19}"
            f" {results.ratio(f'{name} get', primaries):6.1%}  (best case: decoding is a copy)"
        )
    print(
        "1-core ceilings: put = AES-256-GCM + zfec encode + ids (Merkle roots) of the n "
        "fragments; get = ids of k fragments + zfec decode from k parity shares + AES-256-GCM open"
    )
    print_cpu(results, nodes)
    print_targets(results)
    print(
        f"peak RSS of this process: {peak_rss_kib() / 1024:.0f} MiB (client, ceiling runs and "
        "file hashing in worker threads; --rss measures a client process of its own)"
    )


def print_cpu(results: Results, nodes: int) -> None:
    """Where the machine's cores went during each put and get, and what each MiB cost."""
    if f"{label(RULES[0])} put cpu client" not in results.samples:
        print("(no CPU accounting: /proc is not available)")
        return
    cores = os.cpu_count() or 1
    print(
        f"CPU: {cores} cores, shared by this client, the {nodes} node processes (TLS, hashing, "
        "fsync of every fragment) and every other process of the machine.  Share of cores x "
        "wall time during each op; CPU ms per MiB of user data; the most this op could reach "
        f"if client and nodes had all {cores} cores (medians):"
    )
    head = (
        f"{'':26}" + "".join(f"{part:>7}" for part in CPU_PARTS)
        + f"{'client':>9}{'nodes':>7}{'ceiling':>9}{'bound':>8}"
    )  # fmt: skip
    print(head)
    for rule in RULES:
        for op in ("put", "get"):
            name = f"{label(rule)} {op}"
            shares = "".join(f"{results.median(f'{name} cpu {p}'):7.0%}" for p in CPU_PARTS)
            client = results.median(f"{name} ms/MiB client")
            node = results.median(f"{name} ms/MiB nodes")
            ceiling = 1000 / results.median(f"{name} ceiling")
            bound = cores * 1000 / (client + node)
            print(f"{name:26}{shares}{client:7.1f}ms{node:5.1f}ms{ceiling:7.1f}ms{bound:5.0f}MiB/s")


CPU_TARGETS = {"node": 2.0, "client": 1.5, "put 3-of-10 ms": 30.0}
"""Issue 19: a node's CPU per MiB of fragment received at most 2x the work itself; the client's
at most 1.5x its single-core ceiling; a 3-of-10 put (client + nodes) at most 30 ms per MiB."""


def print_targets(results: Results) -> None:
    """The CPU targets of issue 19, from this run's medians."""
    if "floor total" not in results.samples or f"{label(RULES[0])} put cpu client" not in (
        results.samples
    ):
        return
    floor = {part: results.median(f"floor {part}") for part in ("decrypt", "id", "write", "total")}
    print(
        f"the work a node cannot skip, per MiB of fragment (one thread, CPU time, this run): TLS "
        f"decrypt {floor['decrypt']:.2f} + id {floor['id']:.2f} + fsynced write "
        f"{floor['write']:.2f} = {floor['total']:.2f} ms"
    )

    def verdict(value: float, limit: float) -> str:
        return "met" if value <= limit else "NOT met"

    for rule in RULES:
        name = label(rule)
        per_fragment_mib = results.median(f"{name} put ms/MiB nodes") * rule.k / rule.n
        ratio = per_fragment_mib / floor["total"]
        print(
            f"{name:22} put: nodes {per_fragment_mib:5.2f} ms per MiB of fragment received, "
            f"{ratio:4.2f}x the work   <= {CPU_TARGETS['node']:g}x: "
            f"{verdict(ratio, CPU_TARGETS['node'])}"
        )
        for op in ("put", "get"):
            client = results.median(f"{name} {op} ms/MiB client")
            ceiling = 1000 / results.median(f"{name} {op} ceiling")
            ratio = client / ceiling
            print(
                f"{name:22} {op}: client {client:5.2f} ms per MiB, {ratio:4.2f}x its 1-core "
                f"ceiling ({ceiling:.2f} ms)   <= {CPU_TARGETS['client']:g}x: "
                f"{verdict(ratio, CPU_TARGETS['client'])}"
            )
        if rule.k == 3 and rule.n == 10:
            total = results.median(f"{name} put ms/MiB client") + results.median(
                f"{name} put ms/MiB nodes"
            )
            limit = CPU_TARGETS["put 3-of-10 ms"]
            print(
                f"{name:22} put: client + nodes {total:5.1f} ms per MiB of user data   "
                f"<= {limit:g} ms: {verdict(total, limit)}"
            )


async def benchmark(
    run: Run, nodes: int, explore_repeats: int, progress: Callable[[str], None]
) -> None:
    """The main table; then, if ``explore_repeats``, the ClientSettings variations."""
    stored_per_run = sum(run.size * r.n // r.k for r in RULES)
    combos = len(EXPLORE_IN_FLIGHT) * len(EXPLORE_CHUNK_SIZES)
    needed = run.size * 2 + stored_per_run * (run.repeats + combos * explore_repeats)
    with tempfile.TemporaryDirectory(prefix="p2pstore-datapath-") as tmp:
        directory = Path(tmp)
        check_disk(directory, needed)
        mesh = prepare_mesh(directory, nodes, run.audits_per_hour)
        source = directory / "object.bin"
        progress(f"writing {run.size // MiB} MiB of random bytes")
        digest = write_random_file(source, run.size)
        interrupted = Interrupted()
        async with trio.open_nursery() as nursery:
            await nursery.start(interrupted.watch, nursery.cancel_scope)
            await nursery.start(run_nodes, mesh)
            progress(f"started {nodes} node processes; joining through {mesh.members[0].name}")
            mesh_client = await start_client(nursery, mesh)
            results = Results()
            await measure(mesh_client, mesh, source, digest, run, results, progress)
            if run.as_json:
                json.dump({"size": run.size, "samples": results.samples}, sys.stdout)
                print()
            else:
                print_results(results, run, nodes)
            if explore_repeats:
                variants = Run(run.size, explore_repeats, run.settings)
                await explore_settings(mesh_client, mesh, source, digest, variants, progress)
            nursery.cancel_scope.cancel()
    interrupted.check()


async def start_client(nursery: trio.Nursery, mesh: Mesh) -> MeshClient:
    """This process as a client node of ``mesh``, once it sees every node."""
    mesh_client = MeshClient(
        NodeCredentials.load(mesh.client_key, mesh.client_cert), mesh.ca_certificate
    )
    await nursery.start(mesh_client.run)
    await mesh_client.join(mesh.bootstrap, len(mesh.members))
    return mesh_client


async def explore_settings(
    mesh_client: MeshClient,
    mesh: Mesh,
    source: Path,
    digest: str,
    run: Run,
    progress: Callable[[str], None],
) -> None:
    """Put and get with every combination of chunk size and chunks in flight."""
    print()
    print(
        f"ClientSettings variations: MiB/s (ratio to the 1-core ceiling), median of "
        f"{run.repeats} repetition(s); 'others': CPU share taken by other processes"
    )
    head = f"{'chunk':>5} {'in flight':>9} " + "".join(
        f"{label(r) + ' ' + op:>24}" for r in RULES for op in ("put", "get")
    ) + f"{'others':>8}"  # fmt: skip
    print(head)
    print("-" * len(head))
    for chunk_size in EXPLORE_CHUNK_SIZES:
        for in_flight in EXPLORE_IN_FLIGHT:
            settings = ClientSettings(chunk_size=chunk_size, chunks_in_flight=in_flight)
            progress(f"explore: chunk {chunk_size // MiB} MiB, {in_flight} in flight")
            results = Results()
            variant = Run(run.size, run.repeats, settings)
            await measure(mesh_client, mesh, source, digest, variant, results, progress)
            cells, others = [], []
            for rule in RULES:
                for op in ("put", "get"):
                    name = f"{label(rule)} {op}"
                    ratio = results.ratio(name, f"{name} ceiling")
                    cells.append(f"{results.median(name):.1f} ({ratio:.0%})")
                    if f"{name} cpu others" in results.samples:
                        others.append(results.median(f"{name} cpu others"))
            other = f"{statistics.median(others):8.0%}" if others else f"{'?':>8}"
            row = "".join(f"{cell:>24}" for cell in cells)
            print(f"{chunk_size // MiB:>3}Mi {in_flight:>9} {row}{other}", flush=True)


# --- the memory bound: a client process of its own ---------------------------------------------


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(|KiB|MiB|GiB)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size like 2GiB, 512MiB or bytes")
    unit = {"": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB}[match[2]]
    return int(match[1]) * unit


async def client_process(mesh: Mesh, *command: str) -> dict[str, object]:
    """Run ``rss_client.py`` against ``mesh``; its JSON report."""
    argv = [
        sys.executable,
        str(Path(__file__).with_name("rss_client.py")),
        "--key", str(mesh.client_key),
        "--cert", str(mesh.client_cert),
        "--ca", str(mesh.ca_certificate),
        "--bootstrap", mesh.bootstrap,
        "--nodes", str(len(mesh.members)),
        *command,
    ]  # fmt: skip
    done = await trio.run_process(argv, capture_stdout=True, stderr=None, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the client process failed with code {done.returncode}: {argv}")
    report: dict[str, object] = json.loads(done.stdout)
    return report


async def rss_check(size: int, nodes: int, progress: Callable[[str], None]) -> None:
    rule = RULES[0]
    with tempfile.TemporaryDirectory(prefix="p2pstore-rss-") as tmp:
        directory = Path(tmp)
        check_disk(directory, size + size * rule.n // rule.k)
        mesh = prepare_mesh(directory, nodes)
        source = directory / "object.bin"
        progress(f"writing {size / MiB:,.0f} MiB of random bytes")
        digest = write_random_file(source, size)
        interrupted = Interrupted()
        async with trio.open_nursery() as nursery:
            await nursery.start(interrupted.watch, nursery.cancel_scope)
            await nursery.start(run_nodes, mesh)
            progress(f"started {nodes} node processes; put by a client process")
            put = await client_process(mesh, "put", str(source), "--rule", rule.name)
            mesh.check_alive()
            progress("get by a client process")
            got = await client_process(mesh, "get", str(put["cap"]))
            mesh.check_alive()
            nursery.cancel_scope.cancel()
    interrupted.check()
    if got["sha256"] != digest:
        raise RuntimeError("the object got back differs from the one put (sha256 mismatch)")
    settings = ClientSettings()
    print(
        f"memory bound: {size / MiB:,.0f} MiB object, rule {label(rule)}, chunk "
        f"{settings.chunk_size // MiB} MiB, {settings.chunks_in_flight} chunks in flight; "
        f"client in its own process, {nodes} node processes, {os.cpu_count()} cores"
    )
    for report in (put, got):
        peak, base = int(str(report["peak_rss_kib"])), int(str(report["baseline_rss_kib"]))
        seconds = float(str(report["seconds"]))
        verdict = "met" if peak * 1024 < RSS_LIMIT else "NOT met"
        print(
            f"  {report['op']}: peak RSS {peak / 1024:6.1f} MiB (before the {report['op']}: "
            f"{base / 1024:.1f} MiB, growth {(peak - base) / 1024:.1f} MiB); "
            f"{size / MiB / seconds:.1f} MiB/s; < {RSS_LIMIT // MiB} MiB: {verdict}"
        )
    print("  get: sha256 of the bytes got back equals the source's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB, 1 repetition")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--size", type=parse_size, help="object size (default 256MiB)")
    parser.add_argument("--nodes", type=int, default=10, help="node processes (>= 10)")
    parser.add_argument(
        "--explore", action="store_true", help="also try chunk sizes and chunks in flight"
    )
    parser.add_argument(
        "--rss", type=parse_size, metavar="SIZE", help="memory-bound check of a SIZE object"
    )
    parser.add_argument(
        "--audits-per-hour",
        type=float,
        metavar="N",
        help="every node's [repair] audits_per_holder_per_hour (default: node.toml's default)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the samples as one JSON line, no table"
    )
    args = parser.parse_args()
    if args.nodes < max(r.n for r in RULES):
        parser.error(f"--nodes must be at least {max(r.n for r in RULES)}: one per fragment")

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.rss is not None:
        trio.run(rss_check, args.rss, args.nodes, progress)
        return
    size = args.size or (64 * MiB if args.quick else 256 * MiB)
    repeats = args.repeat or (1 if args.quick else 3)
    if not args.json:
        print(
            f"p2pstore data path: {args.nodes} node processes (p2pstore node run, mutual TLS on "
            "loopback, one datacenter each, fragments fsynced to disk) and this process as the "
            "client"
        )
    explore_repeats = (args.repeat or 1) if args.explore and not args.json else 0
    run = Run(size, repeats, ClientSettings(), args.audits_per_hour, args.json)
    trio.run(benchmark, run, args.nodes, explore_repeats, progress)


if __name__ == "__main__":
    main()
