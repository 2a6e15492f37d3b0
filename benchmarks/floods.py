"""Floods against one node of a local mesh: what each costs the node and its honest peers,
measured without and with the flood in the same run.

Why: a node of a regional mesh sees hostile traffic every few minutes, from strangers and from
members with valid certificates (issue 14).  Each flood must leave the node within bounds:
peak RSS under +100 MiB of its idle RSS, an honest peer's p99 request latency within 5x of its
p99 without the flood, an honest put and get at least half as fast as without, and the node's
own loops (steward rounds, scrub passes) on schedule.  The figures mean something only beside
the same figures without the flood, on the same machine, minutes apart: both are measured for
every flood, and the machine's ceiling (raw loopback TCP round trips between two processes,
the single-core put/get pipeline) is printed beside them.

Setup: the devnet's ``create_mesh`` (a throw-away CA, one datacenter per node over two regions),
``--nodes`` node processes (mutual TLS on loopback, JSON logs, the admin endpoint on loopback,
``[repair] check_interval = --check-interval``; ``[scrub] interval = --scrub-interval`` and a
``batch`` of 1 GiB, so each batch verifies the whole store: one pass).  Small objects are put
first, and the target is the node (not node-1, the mesh's entry point) that stewards the most
of them, so that its steward rounds have holders to ask.

Per flood: the target is restarted (so its ``VmHWM`` and memory start afresh), then two windows
of ``--duration`` seconds, without and then with the flood, measure the same things:

- **RSS**: the target's ``VmRSS`` from /proc every 0.1 s, and its ``VmHWM`` when the window
  raised it; idle = ``VmRSS`` just before the flood starts; the peak with the flood includes
  the 3 s after it stopped, and "after" is the ``VmRSS`` at their end;
- **latency**: an honest client (``flood_peers.py probe``, a process and a certificate of its
  own) sends the target a Ping or a FindNode every 50 ms on its session -- on schedule, however
  long earlier ones take, so a stall shows in full -- and opens a new connection (TCP, TLS,
  Hello, Ping) every second; a probe that fails counts as its timeout (5 s, 10 s);
- **put and get**: a fresh client (the devnet's client certificate, new connections, joined
  through node-1) puts ``--size`` random bytes under the standard rule and gets them back
  (sha256 checked), ``--ops`` times spread over the window; MiB/s = bytes done / time spent,
  a failed or timed-out operation counting its time and no bytes;
- **rounds**: the target's ``/metrics`` every 0.25 s: scrub passes
  (``p2pstore_scrub_passes_total``) and steward rounds (``p2pstore_steward_rounds_total``),
  the growth from the first to the last scrape of the window.  Kept: at least the rounds of
  the window without, scaled to the same length, less 10% (at least one);
- **the node**: whether it exited, error-level lines and ``internal_error`` events in its log,
  log lines written, and the admin endpoint's p99.

The floods (each also bounded by ``--duration``; the attacker is a process of its own,
``flood_peers.py attack``, with a client certificate of the mesh CA where TLS is needed):

- ``ping``: 300,000 Pings pipelined on one connection whose replies are never read;
- ``handshake``: 200 TCP connections that never start TLS, each reopened when closed;
- ``partial``: 24 connections of one certificate, each announcing a 16 MiB frame and sending
  all but its last byte, then holding it;
- ``findnode``: FindNode from one connection, 10,000 kept in flight (replies read).

Every process started (nodes, prober, attacker) is stopped at the end, on errors, on
SIGINT/SIGTERM and after ``--timeout``; each also stops when this process is gone, and the
attacker and the prober after their own deadline.  Loopback only.

Run: ``python benchmarks/floods.py`` (4 floods x 2 windows of 25 s; about 5 min),
``--quick`` (8 s windows, 8 nodes, 8 MiB; about 2 min), ``--floods ping,partial``,
``--duration 30``, ``--json``, ``--keep`` (keep the mesh's directory: logs and stores).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import trio
from datapath import Interrupted, check_disk, file_sha256, get_ceilings, parse_size, put_ceiling
from flood_report import (
    CONNECT_TIMEOUT,
    FLOODS,
    REQUEST_TIMEOUT,
    RULE,
    Ceilings,
    FloodResult,
    Latency,
    MiB,
    Op,
    Options,
    Scrape,
    Window,
    as_json,
    json_lines,
    log_summary,
    percentile,
    print_report,
    proc_cpu,
    proc_status,
    scrape,
    summary,
)
from repair import http_get
from rss_client import MeshClient, get_hashed, put_file
from transport import ECHO, ECHO_SIZE, _process, _read_port, _recv_exactly

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import LOCAL_RULES, DevnetNode, create_mesh
from p2pstore.codec import ReadCap
from p2pstore.core.records import manifest_key
from p2pstore.errors import P2PStoreError
from p2pstore.identity import NodeCredentials, Role
from p2pstore.net.client import Client, ClientSettings
from p2pstore.net.scrubber import ScrubSettings

PEERS = Path(__file__).with_name("flood_peers.py")
REGIONS = ("FR-GES", "FR-IDF")
RSS_POLL = 0.1
METRICS_POLL = 0.25
READY_TIMEOUT = 120.0
FLOODING_TIMEOUT = 45.0
"""Seconds an attacker has to get its flood fully under way (24 x 16 MiB over TLS takes a few)."""
SETTLE = 3.0
"""Seconds after a flood stops during which the target's RSS is still watched ("after": its
RSS at the end of them)."""
STOP_GRACE = 10.0
ATTACKER_SOURCE = "127.0.0.2"
"""The attacker dials from a loopback address of its own, as from a host of its own: the node
bounds handshakes and sessions per source address, and on 127.0.0.1 the attacker would share
its bound with every honest node and client of the mesh."""
STEWARD_OBJECTS = 3
"""Small objects put per node before choosing the target."""
SMALL_OBJECT = 64 * 1024
SCRUB_BATCH = 1 << 30
"""``[scrub] batch``: more than a node holds here, so that each batch is a whole pass."""

# --- processes --------------------------------------------------------------------------------


async def _stop(process: trio.Process) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_GRACE seconds."""
    process.terminate()
    with trio.move_on_after(STOP_GRACE):
        await process.wait()
        return
    process.kill()


async def run_child(
    argv: list[str], log_path: Path, *, task_status: trio.TaskStatus[trio.Process]
) -> None:
    """One child process, stdout and stderr appended to ``log_path``; cancelling this stops it
    (SIGTERM, then SIGKILL)."""
    with log_path.open("ab") as log_file:
        await trio.run_process(
            argv,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            deliver_cancel=_stop,
            task_status=task_status,
        )


async def stop_now(process: trio.Process) -> None:
    """Stop ``process`` and wait for it, even while being cancelled."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            await _stop(process)
            await process.wait()


@dataclass
class Mesh:
    """The node processes and the identities of the honest client, the prober, the attacker."""

    directory: Path
    members: list[DevnetNode]
    nursery: trio.Nursery
    ca: Path
    client: NodeCredentials
    prober: NodeCredentials
    attacker: NodeCredentials

    async def start(self, member: DevnetNode) -> None:
        argv = [sys.executable, str(PEERS), "node", "--config", str(member.directory / "node.toml")]
        member.process = await self.nursery.start(run_child, argv, member.directory / "node.log")

    def check_alive(self, members: Sequence[DevnetNode]) -> None:
        for member in members:
            if member.process is not None and member.process.returncode is not None:
                raise RuntimeError(
                    f"{member.name} exited with code {member.process.returncode}; "
                    f"see {member.directory / 'node.log'}"
                )


def prepare(directory: Path, options: Options) -> tuple[list[DevnetNode], dict[str, Path]]:
    """CA, node identities and node.toml files (JSON logs, admin endpoint, the local rules, the
    check interval), and client certificates for the honest client, prober and attacker."""
    authority, members, client = create_mesh(directory, options.nodes, options.nodes, REGIONS)
    for member in members:
        others = () if member is members[0] else (members[0].address,)
        write_local_node_config(
            member.directory,
            listen=member.address,
            bootstrap_peers=others,
            log_format="json",
            metrics_listen=member.admin_address,
            rules=LOCAL_RULES,
            repair_check_interval=options.check_interval,
            scrub=ScrubSettings(batch_bytes=SCRUB_BATCH, interval=options.scrub_interval),
        )
    now = datetime.now(UTC)
    files: dict[str, Path] = {}
    assert client.key_path is not None and client.certificate_path is not None
    files["client.key"], files["client.crt"] = client.key_path, client.certificate_path
    for name in ("prober", "attacker"):
        (directory / name).mkdir()
        issued = authority.issue(
            directory / name, name, datacenter=name, region=REGIONS[0], role=Role.CLIENT, now=now
        )
        assert issued.key_path is not None and issued.certificate_path is not None
        files[f"{name}.key"], files[f"{name}.crt"] = issued.key_path, issued.certificate_path
    return members, files


async def wait_healthy(mesh: Mesh, members: Sequence[DevnetNode]) -> None:
    """Until every member's /health says it joined and knows every other node."""
    with trio.fail_after(READY_TIMEOUT):
        for member in members:
            while True:
                mesh.check_alive(members)
                body = await http_get(member.admin_address, "/health")
                if body is not None:
                    health = json.loads(body)
                    if health["joined"] and health["contacts"] >= len(mesh.members) - 1:
                        break
                await trio.sleep(0.3)


async def restart(mesh: Mesh, member: DevnetNode) -> None:
    """Stop the node process and start it again (its data directory and identity stay)."""
    if member.process is not None:
        await stop_now(member.process)
    await mesh.start(member)
    await wait_healthy(mesh, [member])


# --- one window -------------------------------------------------------------------------------


class Run:
    """The mesh, the target, the honest client's source file, and the options."""

    def __init__(
        self, mesh: Mesh, target: DevnetNode, source: Path, digest: str, options: Options
    ) -> None:
        self.mesh = mesh
        self.target = target
        self.source = source
        self.digest = digest
        self.options = options
        self.probe_log = mesh.directory / "prober" / "probes.jsonl"

    @property
    def pid(self) -> int:
        assert self.target.process is not None
        return self.target.process.pid

    async def window(self, flood: str | None) -> Window:
        """Measure one window; with ``flood``, the attacker runs through it."""
        window = Window(flooded=flood is not None)
        status = proc_status(self.pid)
        window.idle_rss = status[0] if status else 0
        attacker: trio.Process | None = None
        log_path = self.mesh.directory / "attacker" / f"{flood}.jsonl"
        try:
            if flood is not None:
                attacker = await self.start_attack(flood, log_path)
            await self.measure(window, attacker)
        finally:
            if attacker is not None:
                await stop_now(attacker)
        if attacker is not None:
            done = [line for line in json_lines(log_path) if line.get("event") == "done"]
            window.attacker = done[-1] if done else {"event": "no report", "log": str(log_path)}
        window.exited = self.target.process.returncode if self.target.process else None
        window.log = log_summary(self.target.directory / "node.log", window.start, window.end)
        probes = [
            p
            for p in json_lines(self.probe_log)
            if window.start <= float(str(p.get("t", 0))) <= window.end
        ]
        window.requests = Latency.of([p for p in probes if p["kind"] != "connect"], REQUEST_TIMEOUT)
        window.connects = Latency.of([p for p in probes if p["kind"] == "connect"], CONNECT_TIMEOUT)
        return window

    async def start_attack(self, flood: str, log_path: Path) -> trio.Process:
        """Start the attacker; return once it says its flood is under way."""
        mesh = self.mesh
        lifetime = self.options.duration + self.options.ops * self.options.op_timeout + 120
        argv = [
            sys.executable, str(PEERS), "attack", flood,
            "--target", self.target.address,
            "--key", str(mesh.attacker.key_path), "--cert", str(mesh.attacker.certificate_path),
            "--ca", str(mesh.ca), "--duration", str(lifetime), "--source", ATTACKER_SOURCE,
        ]  # fmt: skip
        process: trio.Process = await self.mesh.nursery.start(run_child, argv, log_path)
        with trio.move_on_after(FLOODING_TIMEOUT):
            while not any(line.get("event") == "flooding" for line in json_lines(log_path)):
                if process.returncode is not None:
                    raise RuntimeError(f"the {flood} attacker exited; see {log_path}")
                await trio.sleep(0.1)
        return process

    async def measure(self, window: Window, attacker: trio.Process | None) -> None:
        """RSS, /metrics and the honest put/get, for ``--duration`` seconds or until the
        operations end, whichever is later; then stop the attacker and watch the RSS for
        SETTLE seconds more."""
        rss: list[int] = []
        scrapes: list[Scrape] = []
        admin_seconds: list[float] = []
        window.start = time.time()
        cpu_before = proc_cpu(self.pid)
        attacker_before = proc_cpu(attacker.pid) if attacker is not None else None
        start = trio.current_time()
        status = proc_status(self.pid)
        high_before = status[1] if status else 0

        async def sample_rss() -> None:
            while True:
                status = proc_status(self.pid)
                if status is not None:
                    rss.append(status[0])
                    over = status[0] > self.options.rss_limit
                    if over and attacker is not None and not window.rss_limit_hit:
                        window.rss_limit_hit = True
                        self.options.progress(
                            f"  target RSS {status[0] / MiB:,.0f} MiB is over --rss-limit: "
                            "stopping the flood"
                        )
                        await stop_now(attacker)
                await trio.sleep(RSS_POLL)

        async def poll_metrics() -> None:
            while True:
                found = await scrape(self.target.admin_address)
                if found is None:
                    window.scrapes_failed += 1
                else:
                    scrapes.append(found)
                    admin_seconds.append(found.seconds)
                await trio.sleep(METRICS_POLL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_rss)
            async with trio.open_nursery() as polls:
                polls.start_soon(poll_metrics)
                await self.honest_ops(window, start)
                await trio.sleep_until(start + self.options.duration)
                final = await scrape(self.target.admin_address)
                if final is not None:
                    scrapes.append(final)
                polls.cancel_scope.cancel()
            window.end = time.time()
            cpu_after = proc_cpu(self.pid)
            if cpu_before is not None and cpu_after is not None:
                window.cpu_seconds = cpu_after - cpu_before
            attacker_after = proc_cpu(attacker.pid) if attacker is not None else None
            if attacker_before is not None and attacker_after is not None:
                window.attacker_cpu_seconds = attacker_after - attacker_before
            if attacker is not None:  # what the flood left behind counts too
                await stop_now(attacker)
                await trio.sleep(SETTLE)
                status = proc_status(self.pid)
                window.after_rss = status[0] if status else None
            nursery.cancel_scope.cancel()
        # VmHWM counts only if this window raised it: it also remembers the windows before.
        status = proc_status(self.pid)
        high = [status[1]] if status and status[1] > high_before else []
        window.peak_rss = max([*rss, *high, 0])
        window.scrapes_ok = len(scrapes)
        if len(scrapes) >= 2 and scrapes[-1].steward_rounds >= scrapes[0].steward_rounds:
            window.steward_rounds = scrapes[-1].steward_rounds - scrapes[0].steward_rounds
            window.scrub_passes = scrapes[-1].scrub_passes - scrapes[0].scrub_passes
            window.scrape_span = scrapes[-1].at - scrapes[0].at
        if admin_seconds:
            window.admin_p99_ms = percentile(admin_seconds, 0.99) * 1000

    async def honest_ops(self, window: Window, start: float) -> None:
        """A fresh client joins through node-1, then puts and gets ``--ops`` times, spread
        over the window."""
        client_node = MeshClient(self.mesh.client, self.mesh.ca)
        entry = self.mesh.members[0].address
        async with trio.open_nursery() as nursery:
            await nursery.start(client_node.run)
            began = time.perf_counter()
            try:
                # The target need not be in its table: a client that cannot reach it goes on.
                await client_node.join(entry, len(self.mesh.members) - 1, self.options.op_timeout)
                window.join_seconds = time.perf_counter() - began
            except (trio.TooSlowError, P2PStoreError) as exc:
                window.join_error = str(exc) or type(exc).__name__
            if window.join_error is None:
                client = client_node.client(ClientSettings())
                for rep in range(self.options.ops):
                    await trio.sleep_until(start + rep * self.options.duration / self.options.ops)
                    cap = await self.put(client, window)
                    if cap is not None:
                        await self.get(client, cap, window)
            with trio.move_on_after(5):
                await client_node.node.stop()
            nursery.cancel_scope.cancel()

    async def put(self, client: Client, window: Window) -> ReadCap | None:
        began = time.perf_counter()
        with trio.move_on_after(self.options.op_timeout):
            try:
                report = await put_file(client, self.source, RULE)
            except (P2PStoreError, ExceptionGroup) as exc:
                window.puts.append(Op(time.perf_counter() - began, 0, describe(exc)))
                return None
            window.puts.append(Op(float(str(report["seconds"])), self.options.size))
            return ReadCap.parse(str(report["cap"]))
        window.puts.append(Op(time.perf_counter() - began, 0, "timeout"))
        return None

    async def get(self, client: Client, cap: ReadCap, window: Window) -> None:
        began = time.perf_counter()
        with trio.move_on_after(self.options.op_timeout):
            try:
                report = await get_hashed(client, cap)
            except (P2PStoreError, ExceptionGroup) as exc:
                window.gets.append(Op(time.perf_counter() - began, 0, describe(exc)))
                return
            seconds = float(str(report["seconds"]))
            if report["sha256"] != self.digest:
                window.gets.append(Op(seconds, 0, "sha256 of the bytes got differs"))
            else:
                window.gets.append(Op(seconds, self.options.size))
            return
        window.gets.append(Op(time.perf_counter() - began, 0, "timeout"))


def describe(error: BaseException) -> str:
    """One line for a failed operation; an exception group that is not all P2PStoreError is
    a bug of the benchmark or the client, and is raised again."""
    if isinstance(error, ExceptionGroup):
        matched, rest = error.split(P2PStoreError)
        if rest is not None or matched is None:
            raise error
        return "; ".join(str(e) for e in matched.exceptions)[:300]
    return str(error)[:300]


# --- the steward objects and the target -------------------------------------------------------


async def choose_target(mesh: Mesh, options: Options) -> DevnetNode:
    """Put small objects, then pick the node (not node-1) that stewards the most of them: the
    node closest to an object's manifest key is its steward."""
    client_node = MeshClient(mesh.client, mesh.ca)
    keys: list[bytes] = []
    payload = mesh.directory / "small.bin"
    payload.write_bytes(os.urandom(SMALL_OBJECT))
    async with trio.open_nursery() as nursery:
        await nursery.start(client_node.run)
        await client_node.join(mesh.members[0].address, len(mesh.members))
        client = client_node.client(ClientSettings())
        for _ in range(STEWARD_OBJECTS * len(mesh.members)):
            report = await put_file(client, payload, RULE)
            keys.append(manifest_key(ReadCap.parse(str(report["cap"])).object_id))
        await client_node.node.stop()
        nursery.cancel_scope.cancel()
    stewarded = dict.fromkeys((m.name for m in mesh.members), 0)
    for key in keys:
        closest = min(
            mesh.members,
            key=lambda m: int.from_bytes(m.node_id, "big") ^ int.from_bytes(key, "big"),
        )
        stewarded[closest.name] += 1
    candidates = mesh.members[1:]
    target = max(candidates, key=lambda m: stewarded[m.name])
    options.progress(
        f"{len(keys)} small objects put; target {target.name} stewards {stewarded[target.name]}"
    )
    return target


# --- the run ----------------------------------------------------------------------------------
def tcp_round_trips(count: int = 4000) -> tuple[float, float]:
    """p50 and p99 in ms of 64-byte round trips, one at a time, over loopback TCP to a
    blocking echo server in another process (transport.py's raw server)."""
    raw_server = [sys.executable, str(Path(__file__).with_name("transport.py")), "--raw-server"]
    with _process([*raw_server, "blocking"]) as server:
        port = _read_port(server)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(ECHO)
            message = bytes(ECHO_SIZE)
            times = []
            for _ in range(count):
                started = time.perf_counter()
                sock.sendall(message)
                _recv_exactly(sock, ECHO_SIZE)
                times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 0.5), percentile(times, 0.99)


async def benchmark(options: Options) -> tuple[list[FloodResult], Ceilings, dict[str, object]]:
    results: list[FloodResult] = []
    directory = Path(tempfile.mkdtemp(prefix="p2pstore-floods-"))
    finished = False
    try:
        check_disk(directory, 4 * options.size * options.ops * len(options.floods) * 2)
        members, files = prepare(directory, options)
        source = directory / "object.bin"
        source.write_bytes(os.urandom(options.size))
        digest = file_sha256(source)
        interrupted = Interrupted()
        async with trio.open_nursery() as nursery:
            await nursery.start(interrupted.watch, nursery.cancel_scope)
            ceilings = await measure_ceilings(source, options)
            mesh = Mesh(
                directory,
                members,
                nursery,
                directory / "ca" / "ca.crt",
                NodeCredentials.load(files["client.key"], files["client.crt"]),
                NodeCredentials.load(files["prober.key"], files["prober.crt"]),
                NodeCredentials.load(files["attacker.key"], files["attacker.crt"]),
            )
            for member in members:
                await mesh.start(member)
            options.progress(f"started {len(members)} node processes in {directory}")
            await wait_healthy(mesh, members)
            target = await choose_target(mesh, options)
            run = Run(mesh, target, source, digest, options)
            prober = await start_prober(mesh, target, run.probe_log, options)
            for number, flood in enumerate(options.floods):
                if number:
                    options.progress(f"restarting {target.name} (fresh RSS and high-water mark)")
                    await restart(mesh, target)
                    mesh.check_alive([m for m in members if m is not target])
                options.progress(f"{flood}: {options.duration:g} s without the flood")
                without = await run.window(None)
                options.progress(f"{flood}: {options.duration:g} s with it: {FLOODS[flood]}")
                flooded = await run.window(flood)
                results.append(FloodResult(flood, without, flooded))
                options.progress(f"  {summary(results[-1], options)}")
            await stop_now(prober)
            nursery.cancel_scope.cancel()
        interrupted.check()
        finished = True
    finally:
        if options.keep or not finished:
            options.progress(f"the mesh's directory (logs, stores) is kept: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    setup = {
        "target": target.name,
        "nodes": options.nodes,
        "cores": os.cpu_count(),
        "directory": str(directory) if options.keep else None,
    }
    return results, ceilings, setup


async def measure_ceilings(source: Path, options: Options) -> Ceilings:
    options.progress("ceilings: raw loopback TCP round trips, 1-core put/get pipeline")
    rtt = await trio.to_thread.run_sync(tcp_round_trips)
    chunk = ClientSettings().chunk_size
    put_top = await trio.to_thread.run_sync(put_ceiling, source, options.size, RULE, chunk)
    _best, get_top = await trio.to_thread.run_sync(get_ceilings, source, options.size, RULE, chunk)
    return Ceilings(rtt[0], rtt[1], put_top, get_top)


async def start_prober(
    mesh: Mesh, target: DevnetNode, log_path: Path, options: Options
) -> trio.Process:
    lifetime = 600 + len(options.floods) * (2 * options.duration + options.ops * 4 * 60)
    argv = [
        sys.executable, str(PEERS), "probe",
        "--target", target.address, "--node-id", target.node_id.hex(),
        "--key", str(mesh.prober.key_path), "--cert", str(mesh.prober.certificate_path),
        "--ca", str(mesh.ca), "--duration", str(lifetime),
        "--timeout", str(REQUEST_TIMEOUT), "--connect-timeout", str(CONNECT_TIMEOUT),
    ]  # fmt: skip
    process: trio.Process = await mesh.nursery.start(run_child, argv, log_path)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The module docstring (and benchmarks/README.md) says what each figure means.",
    )
    parser.add_argument(
        "--floods", default=",".join(FLOODS), help=f"comma-separated, of: {', '.join(FLOODS)}"
    )
    parser.add_argument("--duration", type=float, help="seconds per window (25; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="8 s windows, 8 nodes, 8 MiB")
    parser.add_argument("--nodes", type=int, help="node processes (10; 8 with --quick; >= 8)")
    parser.add_argument("--size", type=parse_size, help="honest object size (16MiB; quick 8MiB)")
    parser.add_argument("--ops", type=int, help="honest put+get per window (2; 1 with --quick)")
    parser.add_argument("--op-timeout", type=float, default=60.0, help="s per put, get, join")
    parser.add_argument("--check-interval", type=float, default=2.0, help="steward rounds, s")
    parser.add_argument("--scrub-interval", type=float, default=2.0, help="scrub passes, s")
    parser.add_argument(
        "--rss-limit",
        type=parse_size,
        default=3 * 1024 * MiB,
        help="stop a flood once the target's RSS passes this (3GiB)",
    )
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the mesh's directory")
    args = parser.parse_args()
    floods = tuple(name.strip() for name in args.floods.split(",") if name.strip())
    unknown = [name for name in floods if name not in FLOODS]
    if unknown or not floods:
        parser.error(f"--floods: unknown {unknown}; choose among {', '.join(FLOODS)}")
    nodes = args.nodes or (8 if args.quick else 10)
    if nodes < RULE.n:
        parser.error(f"--nodes must be at least {RULE.n}: one per fragment of the rule")
    if not sys.platform.startswith("linux"):
        parser.error("Linux only: the target's memory is read from /proc")

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    options = Options(
        floods=floods,
        nodes=nodes,
        duration=args.duration or (8.0 if args.quick else 25.0),
        size=args.size or (8 * MiB if args.quick else 16 * MiB),
        ops=args.ops or (1 if args.quick else 2),
        op_timeout=args.op_timeout,
        check_interval=args.check_interval,
        scrub_interval=args.scrub_interval,
        rss_limit=args.rss_limit,
        keep=args.keep,
        progress=progress,
    )
    budget = args.timeout or 300 + len(floods) * (
        2 * (options.duration + SETTLE + options.ops * 2 * options.op_timeout) + 180
    )
    # The clients see sessions break when the target restarts or drowns: expected, not news.
    logging.getLogger("p2pstore").setLevel(logging.ERROR)

    async def bounded() -> tuple[list[FloodResult], Ceilings, dict[str, object]]:
        with trio.fail_after(budget):
            return await benchmark(options)

    try:
        results, ceilings, setup = trio.run(bounded)
    except trio.TooSlowError:
        raise SystemExit(
            f"gave up after --timeout {budget:g} s; every process was stopped"
        ) from None
    if args.json:
        json.dump(as_json(results, ceilings, setup, options), sys.stdout, indent=1, allow_nan=False)
        print()
    else:
        print_report(results, ceilings, setup, options)


if __name__ == "__main__":
    main()
