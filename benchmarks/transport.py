"""Round trips and streaming over the mutual-TLS transport, beside raw loopback TCP.

Why: a node's throughput is bounded by its transport.  This benchmark starts one real node
process (``p2pstore node run``) on a throw-away mesh CA and talks to it from this process as a
second node, over ``TlsTransport`` and a ``Session``: sequential and concurrent ``Ping`` round
trips (requests/s), and ``Ping`` with 1 MiB / 4 MiB padding, several in flight (MiB/s of
payload; the node answers ``Pong`` with the length received, which is checked).

The machine's own ceiling is measured in the same run, also between two processes: a child
process (this file with ``--raw-server``) sinks or echoes plain TCP, once with blocking sockets
and once with trio streams, so the gap splits into trio's cost and TLS + framing's cost.
AES-256-GCM in this process is the crypto ceiling.  Measurements alternate (raw, trio, mTLS, ...
in every round) so the noise of a shared 2-core machine hits all alike; the table gives medians
and the median of per-round ratios.  Target: mTLS streaming >= 50% of blocking loopback TCP.

Run: ``python benchmarks/transport.py`` (about 70 s), ``--quick`` (about 15 s), ``--json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import free_loopback_ports
from p2pstore.errors import P2PStoreError
from p2pstore.identity import MeshCA, NodeCredentials, PeerIdentity, TrustAnchor
from p2pstore.net.session import Session, SessionSettings
from p2pstore.net.tls import TlsSettings, TlsTransport
from p2pstore.wire import PROTOCOL_VERSION, ErrorReply, Hello, Message, Ping, Pong

MiB = 1024 * 1024
ECHO_SIZE = 64
"""Bytes of one raw echo message: about the size of an encoded Ping/Pong frame."""
SINK, ECHO = b"S", b"E"
COUNT = struct.Struct(">Q")
READY_TIMEOUT = 10.0
CONCURRENT_REQUESTS = 16
STREAM_IN_FLIGHT = 4


# --- the raw TCP child process ---------------------------------------------------------------


def _blocking_connection(conn: socket.socket) -> None:
    """Serve one raw connection with blocking calls: sink (count, then reply) or echo."""
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray(MiB)
        view = memoryview(buffer)
        n = conn.recv_into(buffer)
        if n == 0:
            return
        mode, total = buffer[:1], n - 1
        if mode == SINK:
            while n := conn.recv_into(buffer):
                total += n
            conn.sendall(COUNT.pack(total))
        else:
            if total:
                conn.sendall(view[1:n])
            while n := conn.recv_into(buffer):
                conn.sendall(view[:n])


def _serve_blocking() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_blocking_connection, args=(conn,), daemon=True).start()


async def _trio_connection(stream: trio.SocketStream) -> None:
    async with stream:
        data = await stream.receive_some(MiB)
        if not data:
            return
        mode, total = data[:1], len(data) - 1
        if mode == SINK:
            while data := await stream.receive_some(MiB):
                total += len(data)
            await stream.send_all(COUNT.pack(total))
        else:
            if total:
                await stream.send_all(data[1:])
            while data := await stream.receive_some(MiB):
                await stream.send_all(data)


async def _serve_trio() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(_trio_connection, listeners)


def raw_server(kind: str) -> None:
    """Child process: print the port, then sink or echo raw TCP until terminated."""
    if kind == "blocking":
        _serve_blocking()
    else:
        trio.run(_serve_trio)


# --- raw TCP measurements (this process) ----------------------------------------------------


def _connect_blocking(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("raw server closed the connection early")
        data += chunk
    return bytes(data)


def blocking_stream(port: int, seconds: float, block: int = MiB) -> float:
    """MiB/s of ``block``-sized blocking writes, until the sink acknowledged every byte."""
    payload = bytes(block)
    with _connect_blocking(port) as sock:
        sock.sendall(SINK)
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            sock.sendall(payload)
            sent += block
        sock.shutdown(socket.SHUT_WR)
        (received,) = COUNT.unpack(_recv_exactly(sock, COUNT.size))
        elapsed = time.perf_counter() - start
    if received != sent:
        raise RuntimeError(f"raw sink received {received} bytes of {sent}")
    return sent / MiB / elapsed


def blocking_echo(port: int, seconds: float, in_flight: int) -> float:
    """Round trips/s of ``ECHO_SIZE``-byte messages with ``in_flight`` outstanding."""
    message = bytes(ECHO_SIZE)
    with _connect_blocking(port) as sock:
        sock.sendall(ECHO)
        start = time.perf_counter()
        deadline = start + seconds
        sock.sendall(message * in_flight)
        outstanding, done, pending = in_flight, 0, 0
        while outstanding:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("raw echo server closed the connection early")
            pending += len(chunk)
            answered, pending = divmod(pending, ECHO_SIZE)
            done += answered
            outstanding -= answered
            if answered and time.perf_counter() < deadline:
                sock.sendall(message * answered)
                outstanding += answered
        elapsed = time.perf_counter() - start
    return done / elapsed


async def _trio_stream(port: int, seconds: float, block: int) -> float:
    payload = bytes(block)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(SINK)
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            await stream.send_all(payload)
            sent += block
        await stream.send_eof()
        reply = b""
        while len(reply) < COUNT.size:
            chunk = await stream.receive_some(COUNT.size - len(reply))
            if not chunk:
                raise ConnectionError("raw sink closed the connection early")
            reply += chunk
        elapsed = time.perf_counter() - start
    (received,) = COUNT.unpack(reply)
    if received != sent:
        raise RuntimeError(f"trio sink received {received} bytes of {sent}")
    return sent / MiB / elapsed


def trio_stream(port: int, seconds: float, block: int = MiB) -> float:
    """MiB/s of ``block``-sized ``send_all`` calls on a trio stream, acknowledged by the sink."""
    return trio.run(_trio_stream, port, seconds, block)


def aes_gcm(seconds: float, block: int = MiB) -> float:
    """MiB/s of AES-256-GCM encryption of ``block``-sized messages in this process."""
    aead = AESGCM(bytes(range(32)))
    data = bytes(block)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    for counter in itertools.count():
        aead.encrypt(counter.to_bytes(12, "big"), data, None)
        done += block
        if time.perf_counter() >= deadline:
            break
    return done / MiB / (time.perf_counter() - start)


# --- the node process and the mTLS measurements ---------------------------------------------


@dataclass
class Mesh:
    """A throw-away CA, the node's directory and our own credentials."""

    directory: Path
    node_address: str
    node_id: bytes
    credentials: NodeCredentials
    trust: TrustAnchor
    ca_path: Path
    node_config: Path


def create_mesh(directory: Path) -> Mesh:
    """A CA, one node identity and config, and our own node identity under ``directory``."""
    now = datetime.now(UTC)
    authority = MeshCA.create(directory / "ca", mesh_name="bench", now=now)
    node_dir = directory / "node"
    node = authority.issue(node_dir, "node", datacenter="dc-1", region="FR", now=now)
    mine = authority.issue(directory / "bench", "bench", datacenter="dc-2", region="FR", now=now)
    address = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    config = write_local_node_config(node_dir, listen=address, log_level="warning")
    return Mesh(
        directory=directory,
        node_address=address,
        node_id=node.identity.node_id,
        credentials=mine,
        trust=authority.trust_anchor(),
        ca_path=directory / "ca" / "ca.crt",
        node_config=config,
    )


async def _refuse(peer: PeerIdentity, message: Message) -> Message:
    return ErrorReply(code="unsupported", message="the benchmark peer serves nothing")


_nonces = itertools.count(1)


async def _check_ping(session: Session, padding: bytes) -> None:
    nonce = next(_nonces)
    reply = await session.request(Ping(nonce=nonce, padding=padding))
    if not isinstance(reply, Pong) or reply.nonce != nonce or reply.received != len(padding):
        raise RuntimeError(f"bad answer to Ping({nonce}, {len(padding)} bytes): {reply!r}")


class TlsBench:
    """Connects to the node over mutual TLS, greets, and measures one workload per call."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.hello = Hello(
            protocol_version=PROTOCOL_VERSION, listen_address="", software="p2pstore-bench"
        )

    def _transport(self, connect_timeout: float = 10.0) -> TlsTransport:
        settings = TlsSettings(connect_timeout=connect_timeout, handshake_timeout=10.0)
        return TlsTransport(
            self.mesh.credentials, self.mesh.trust, str(self.mesh.ca_path), settings=settings
        )

    async def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Retry connecting until the node answers, at most ``READY_TIMEOUT`` seconds."""
        transport = self._transport(connect_timeout=1.0)
        with trio.move_on_after(READY_TIMEOUT):
            while process.poll() is None:
                try:
                    link = await transport.connect(self.mesh.node_address, self.mesh.node_id)
                except P2PStoreError:
                    await trio.sleep(0.05)
                    continue
                await link.aclose()
                return
        raise RuntimeError(
            f"the node did not accept connections within {READY_TIMEOUT:g}s "
            f"(exit code {process.poll()}); see {self.mesh.directory / 'node' / 'node.log'}"
        )

    async def _measure(self, seconds: float, tasks: int, padding: bytes) -> tuple[int, float]:
        """(requests answered, elapsed) with ``tasks`` requests in flight for ``seconds``."""
        link = await self._transport().connect(self.mesh.node_address, self.mesh.node_id)
        session = Session(link, self.hello, _refuse, SessionSettings(request_timeout=30))
        await session.greet()
        done = 0

        async def worker(deadline: float) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await _check_ping(session, padding)
                done += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve)
            start = time.perf_counter()
            async with trio.open_nursery() as workers:
                for _ in range(tasks):
                    workers.start_soon(worker, start + seconds)
            elapsed = time.perf_counter() - start
            await session.close("benchmark done")
        return done, elapsed

    def round_trips(self, seconds: float, in_flight: int) -> float:
        """Ping requests/s with no padding and ``in_flight`` requests outstanding."""
        done, elapsed = trio.run(self._measure, seconds, in_flight, b"")
        return done / elapsed

    def stream(self, seconds: float, block: int, in_flight: int) -> float:
        """MiB/s of Ping padding with ``block``-byte pings, ``in_flight`` outstanding."""
        done, elapsed = trio.run(self._measure, seconds, in_flight, bytes(block))
        return done * block / MiB / elapsed


@contextmanager
def _process(argv: list[str], log_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv``; stdout is a pipe unless ``log_path`` is given.  Terminated on exit."""
    log = log_path.open("wb") if log_path is not None else None
    process = subprocess.Popen(  # a list argv of our own interpreter, no shell
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log if log is not None else subprocess.PIPE,
        stderr=log if log is not None else None,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if log is not None:
            log.close()


def _read_port(process: subprocess.Popen[bytes]) -> int:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"raw server did not print its port (exit code {process.poll()})")
    return int(line)


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pair:
    """A figure and the ceiling it is compared with, round by round."""

    name: str
    baseline: str


@dataclass
class Results:
    unit: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, unit: str, value: float) -> None:
        self.unit[name] = unit
        self.samples.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, pair: Pair) -> float:
        """Median of the per-round ratios ``name / baseline``."""
        return statistics.median(
            a / b for a, b in zip(self.samples[pair.name], self.samples[pair.baseline], strict=True)
        )


STREAM_RAW = "TCP stream, blocking sockets, 1 MiB writes"
STREAM_TRIO = "TCP stream, trio streams, 1 MiB send_all"
STREAM_TLS_1 = f"mTLS session, Ping 1 MiB, {STREAM_IN_FLIGHT} in flight"
STREAM_TLS_4 = f"mTLS session, Ping 4 MiB, {STREAM_IN_FLIGHT} in flight"
RPS_RAW_1 = f"TCP echo {ECHO_SIZE} B, blocking, sequential"
RPS_TLS_1 = "mTLS session, Ping, sequential"
RPS_RAW_N = f"TCP echo {ECHO_SIZE} B, blocking, {CONCURRENT_REQUESTS} in flight"
RPS_TLS_N = f"mTLS session, Ping, {CONCURRENT_REQUESTS} in flight"
AES = "AES-256-GCM encrypt 1 MiB, in process"

PAIRS = (
    Pair(STREAM_TRIO, STREAM_RAW),
    Pair(STREAM_TLS_1, STREAM_RAW),
    Pair(STREAM_TLS_4, STREAM_RAW),
    Pair(STREAM_TLS_1, STREAM_TRIO),
    Pair(RPS_TLS_1, RPS_RAW_1),
    Pair(RPS_TLS_N, RPS_RAW_N),
)
TARGET = Pair(STREAM_TLS_1, STREAM_RAW)
TARGET_RATIO = 0.5


def run(rounds: int, seconds: float, progress: Callable[[str], None]) -> Results:
    """Start the node and the raw servers, then alternate every measurement ``rounds`` times."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-") as tmp:
        mesh = create_mesh(Path(tmp))
        node_argv = [sys.executable, "-m", "p2pstore", "node", "run", "--config"]
        me = [sys.executable, os.path.abspath(__file__), "--raw-server"]
        with (
            _process(
                [*node_argv, str(mesh.node_config)], mesh.directory / "node" / "node.log"
            ) as node,
            _process([*me, "blocking"]) as blocking_server,
            _process([*me, "trio"]) as trio_server,
        ):
            blocking_port, trio_port = _read_port(blocking_server), _read_port(trio_server)
            tls = TlsBench(mesh)
            trio.run(tls.wait_ready, node)
            results.add(AES, "MiB/s", aes_gcm(seconds / 2))
            for number in range(1, rounds + 1):
                progress(f"round {number}/{rounds}")
                measures: list[tuple[str, str, Callable[[], float]]] = [
                    (STREAM_RAW, "MiB/s", lambda: blocking_stream(blocking_port, seconds)),
                    (STREAM_TRIO, "MiB/s", lambda: trio_stream(trio_port, seconds)),
                    (STREAM_TLS_1, "MiB/s", lambda: tls.stream(seconds, MiB, STREAM_IN_FLIGHT)),
                    (STREAM_TLS_4, "MiB/s", lambda: tls.stream(seconds, 4 * MiB, STREAM_IN_FLIGHT)),
                    (RPS_RAW_1, "req/s", lambda: blocking_echo(blocking_port, seconds * 0.6, 1)),
                    (RPS_TLS_1, "req/s", lambda: tls.round_trips(seconds * 0.6, 1)),
                    (
                        RPS_RAW_N,
                        "req/s",
                        lambda: blocking_echo(blocking_port, seconds * 0.6, CONCURRENT_REQUESTS),
                    ),
                    (
                        RPS_TLS_N,
                        "req/s",
                        lambda: tls.round_trips(seconds * 0.6, CONCURRENT_REQUESTS),
                    ),
                ]
                for name, unit, measure in measures:
                    results.add(name, unit, measure())
            results.add(AES, "MiB/s", aes_gcm(seconds / 2))
            if node.poll() is not None:
                raise RuntimeError(f"the node exited during the run with code {node.returncode}")
    return results


def print_table(results: Results, rounds: int) -> None:
    print(f"median of {rounds} alternating rounds, [min - max]; 2 processes on loopback")
    for name, samples in results.samples.items():
        unit = results.unit[name]
        print(
            f"  {name:48} {results.median(name):10,.0f} {unit:6}"
            f" [{min(samples):,.0f} - {max(samples):,.0f}]"
        )
    print("ratios (median of per-round ratios)")
    for pair in PAIRS:
        print(f"  {pair.name:48} / {pair.baseline:48} {results.ratio(pair):6.1%}")
    ratio = results.ratio(TARGET)
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target: mTLS streaming >= {TARGET_RATIO:.0%} of blocking TCP: {ratio:.1%}, {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds (about 15 s)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5)")
    parser.add_argument("--seconds", type=float, help="seconds per streaming measurement")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--raw-server", choices=("blocking", "trio"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server:
        raw_server(args.raw_server)
        return
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (0.5 if args.quick else 1.5)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results = run(rounds, seconds, progress)
    if args.json:
        document = {
            "rounds": rounds,
            "seconds": seconds,
            "figures": {
                name: {
                    "unit": results.unit[name],
                    "median": results.median(name),
                    "samples": samples,
                }
                for name, samples in results.samples.items()
            },
            "ratios": [
                {"figure": p.name, "baseline": p.baseline, "ratio": results.ratio(p)} for p in PAIRS
            ],
            "target": {"ratio": results.ratio(TARGET), "required": TARGET_RATIO},
        }
        print(json.dumps(document, indent=2))
    else:
        print_table(results, rounds)


if __name__ == "__main__":
    main()
