"""The processes ``floods.py`` starts beside its node processes: the attacker, the honest prober,
and a node process that stops with the harness.

Why processes of their own: an attacker in the harness's event loop would steal the CPU the
harness measures with, and an honest peer's latency is only honest when nothing else in its
process stalls it.  Each prints JSON lines on stdout (the harness sends them to a file) and
stops by itself: at ``--duration``, on SIGTERM, or when its parent is gone, so no flood
outlives the run that started it.

The attacks speak the protocol with the project's own pieces -- the TLS contexts of
:func:`p2pstore.net.tls.make_ssl_contexts`, a client certificate of the mesh CA, and frames
from :func:`p2pstore.wire.encode_envelope` and :func:`p2pstore.wire.frame_header` -- but over a
bare ``trio.SSLStream``, because a flood needs what a :class:`~p2pstore.net.session.Session`
never does: not reading replies, or stopping in the middle of a frame.

  python benchmarks/flood_peers.py attack ping|handshake|partial|findnode --target HOST:PORT \\
      --key K --cert C --ca CA.crt --duration S [--count N] [--source 127.0.0.2]
  python benchmarks/flood_peers.py probe --target HOST:PORT --node-id HEX --key K --cert C \\
      --ca CA.crt --duration S
  python benchmarks/flood_peers.py node --config node.toml
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from p2pstore.errors import P2PStoreError, RequestTimeout
from p2pstore.identity import NODE_ID_BYTES, NodeCredentials, PeerIdentity, TrustAnchor
from p2pstore.net.address import parse_address
from p2pstore.net.node import Node, NodeSettings
from p2pstore.net.session import Session, SessionSettings
from p2pstore.net.tls import TlsSettings, TlsTransport, make_ssl_contexts
from p2pstore.wire import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Envelope,
    ErrorReply,
    FindNode,
    FrameDecoder,
    Hello,
    Kind,
    Message,
    Ping,
    decode_envelope,
    encode_envelope,
    frame_header,
)

MiB = 1024 * 1024
BATCH = 2_000
"""Requests written per ``send_all`` by the pipelining attacks."""
CONNECT_TIMEOUT = 5.0
RETRY_PAUSE = 0.1
"""Seconds an attacker waits after a refused connection before dialling again."""
PARTIAL_FRAME = 16 * MiB
"""Bytes the partial-frame attack announces; it sends all but the last one."""
MAX_REOPENS = 100
"""Each attacking connection is reopened at most this many times (the count bound)."""

DEFAULT_COUNTS = {"ping": 300_000, "handshake": 200, "partial": 24, "findnode": 10_000}
"""ping: requests in all; handshake, partial: connections held at once; findnode: requests
kept in flight."""


def emit(**fields: object) -> None:
    """One JSON line on stdout, flushed (the harness reads it from a file as it is written)."""
    print(json.dumps(fields), flush=True)


def stop_with_parent(grace: float = 10.0) -> None:
    """Stop this process when the process that started it is gone: SIGTERM to ourselves (the
    attacker, the prober and the node all stop on it), then exit outright after ``grace``
    seconds.  A harness killed outright (SIGKILL, a crash) must not leave a flood running.
    (Not ``PR_SET_PDEATHSIG``: it fires when the *thread* that forked us ends, and trio starts
    processes from worker threads that come and go.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


# --- frames and raw TLS ----------------------------------------------------------------------


def frame(kind: Kind, request_id: int, message: Message) -> bytes:
    payload = encode_envelope(Envelope(kind, request_id, message))
    return frame_header(len(payload)) + payload


HELLO = frame(
    Kind.NOTICE,
    0,
    Hello(protocol_version=PROTOCOL_VERSION, listen_address="", software="p2pstore-flood"),
)

RawTls = trio.SSLStream[trio.SocketStream]
BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)
"""What a connection the target closes, refuses or never answers raises."""


async def open_tls(target: str, context: ssl.SSLContext, source: str | None = None) -> RawTls:
    """A TCP connection (from the local address ``source`` if given) and a finished TLS
    handshake with our client certificate, then our ``Hello``: the target now counts us as a
    greeted client."""
    host, port = parse_address(target)
    with trio.fail_after(CONNECT_TIMEOUT):
        tcp = await trio.open_tcp_stream(host, port, local_address=source)
    stream = trio.SSLStream(tcp, context, server_side=False)
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await stream.do_handshake()
        await stream.send_all(HELLO)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def drain(stream: trio.abc.ReceiveStream) -> None:
    """Read and drop whatever comes until the other side closes."""
    while await stream.receive_some(64 * 1024):
        pass


@dataclass
class AttackStats:
    """What an attacker did; printed as its last line."""

    flood: str
    opened: int = 0
    """Connections opened (TCP for ``handshake``, TLS + Hello for the others)."""
    closed_by_target: int = 0
    failed_connects: int = 0
    requests_sent: int = 0
    replies: int = 0
    busy_replies: int = 0
    bytes_sent: int = 0
    frames_held: int = 0
    """Partial frames sent in full but for their last byte."""


class Attack:
    """One flood against ``target`` until ``deadline`` (trio time); ``flooding`` is set (and
    announced on stdout) once the flood is fully under way."""

    def __init__(
        self,
        name: str,
        target: str,
        context: ssl.SSLContext,
        count: int,
        deadline: float,
        source: str | None = None,
    ) -> None:
        """``source``: the local address to dial from (None: the system's choice)."""
        self.stats = AttackStats(name)
        self.target = target
        self.source = source
        self.context = context
        self.count = count
        self.deadline = deadline
        self._announced = False

    def announce(self, **fields: object) -> None:
        if not self._announced:
            self._announced = True
            emit(event="flooding", flood=self.stats.flood, **fields)

    def time_left(self) -> bool:
        return trio.current_time() < self.deadline

    async def connect_tls(self) -> RawTls | None:
        """A greeted connection, or None (counted) if the target refuses or does not answer."""
        try:
            stream = await open_tls(self.target, self.context, self.source)
        except BROKEN:
            self.stats.failed_connects += 1
            await trio.sleep(RETRY_PAUSE)
            return None
        self.stats.opened += 1
        return stream

    # -- 1: pings pipelined, replies never read ------------------------------------------------

    async def ping(self) -> None:
        """``count`` Ping requests in all, written in batches on one connection whose replies
        are never read (reconnecting if the target closes it), then held open."""
        ids = itertools.count(1)
        while self.time_left():
            stream = await self.connect_tls()
            if stream is None:
                continue
            try:
                while self.stats.requests_sent < self.count:
                    size = min(BATCH, self.count - self.stats.requests_sent)
                    batch = b"".join(
                        frame(Kind.REQUEST, rid, Ping(nonce=rid, padding=b""))
                        for rid in itertools.islice(ids, size)
                    )
                    await stream.send_all(batch)
                    self.stats.requests_sent += size
                    self.stats.bytes_sent += len(batch)
                    self.announce()
                await trio.sleep_forever()  # hold the connection; never read
            except BROKEN:
                self.stats.closed_by_target += 1
            finally:
                await trio.aclose_forcefully(stream)

    # -- 2: TCP connections that never start TLS ------------------------------------------------

    async def handshake(self) -> None:
        """``count`` TCP connections that send nothing, each reopened when the target closes
        it (at most MAX_REOPENS times)."""
        host, port = parse_address(self.target)
        up = trio.Semaphore(0)

        async def hold_one() -> None:
            first = True
            for _ in range(MAX_REOPENS + 1):
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        stream = await trio.open_tcp_stream(host, port, local_address=self.source)
                except BROKEN:
                    self.stats.failed_connects += 1
                    await trio.sleep(RETRY_PAUSE)
                    continue
                self.stats.opened += 1
                if first:
                    first = False
                    up.release()
                async with stream:
                    with contextlib.suppress(BROKEN):
                        await drain(stream)
                self.stats.closed_by_target += 1

        async with trio.open_nursery() as nursery:
            for _ in range(self.count):
                nursery.start_soon(hold_one)
            with trio.move_on_after(CONNECT_TIMEOUT):
                for _ in range(self.count):
                    await up.acquire()
            self.announce(connections=self.stats.opened)

    # -- 3: partial 16 MiB frames held open -------------------------------------------------------

    async def partial(self) -> None:
        """``count`` connections of one client certificate, each announcing a 16 MiB frame and
        sending all of it but the last byte, then holding it; reopened when closed."""
        body = bytes(64 * 1024)
        header = frame_header(PARTIAL_FRAME)
        held = trio.Semaphore(0)

        async def hold_one() -> None:
            for _ in range(MAX_REOPENS + 1):
                stream = await self.connect_tls()
                if stream is None:
                    if not self.time_left():
                        return
                    continue
                try:
                    await stream.send_all(header)
                    left = PARTIAL_FRAME - 1
                    while left:
                        piece = body[: min(left, len(body))]
                        await stream.send_all(piece)
                        left -= len(piece)
                        self.stats.bytes_sent += len(piece)
                    self.stats.frames_held += 1
                    held.release()
                    await drain(stream)  # the target's Hello, then its close, if ever
                except BROKEN:
                    pass
                finally:
                    await trio.aclose_forcefully(stream)
                self.stats.closed_by_target += 1

        async with trio.open_nursery() as nursery:
            for _ in range(self.count):
                nursery.start_soon(hold_one)
            with trio.move_on_after(30):
                for _ in range(self.count):
                    await held.acquire()
            self.announce(frames_held=self.stats.frames_held)

    # -- 4: FIND_NODE pipelined ----------------------------------------------------------------

    async def findnode(self) -> None:
        """FindNode requests on one connection, ``count`` kept in flight (replies are read), in
        all at most 100 times ``count``; reconnecting if the target closes the connection."""
        cap = 100 * self.count
        while self.time_left() and self.stats.requests_sent < cap:
            stream = await self.connect_tls()
            if stream is None:
                continue
            try:
                await self._findnode_on(stream, cap)
            finally:
                await trio.aclose_forcefully(stream)

    async def _findnode_on(self, stream: RawTls, cap: int) -> None:
        outstanding = 0
        room = trio.Event()
        ids = itertools.count(1)
        closed = False

        async def read_replies() -> None:
            nonlocal outstanding, closed
            decoder = FrameDecoder(DEFAULT_MAX_FRAME)
            try:
                while data := await stream.receive_some(256 * 1024):
                    decoder.feed(data)
                    while (payload := decoder.next_frame()) is not None:
                        envelope = decode_envelope(payload)
                        if envelope.kind is not Kind.RESPONSE:
                            continue
                        outstanding -= 1
                        self.stats.replies += 1
                        message = envelope.message
                        if isinstance(message, ErrorReply) and message.code == "busy":
                            self.stats.busy_replies += 1
                    if outstanding <= self.count - BATCH:
                        room.set()
            except BROKEN:
                pass
            closed = True
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_replies)
            try:
                while self.stats.requests_sent < cap:
                    if outstanding > self.count - BATCH:
                        room = trio.Event()
                        await room.wait()
                        continue
                    batch = b"".join(
                        frame(Kind.REQUEST, rid, FindNode(target=os.urandom(NODE_ID_BYTES)))
                        for rid in itertools.islice(ids, BATCH)
                    )
                    await stream.send_all(batch)
                    outstanding += BATCH
                    self.stats.requests_sent += BATCH
                    self.stats.bytes_sent += len(batch)
                    self.announce()
            except BROKEN:
                closed = True
            if not closed:
                await trio.sleep_forever()  # every request sent: wait for the replies
            nursery.cancel_scope.cancel()
        if closed:
            self.stats.closed_by_target += 1


async def attack(args: argparse.Namespace) -> None:
    credentials = NodeCredentials.load(args.key, args.cert)
    _server, client_context = make_ssl_contexts(credentials, str(args.ca))
    count = args.count or DEFAULT_COUNTS[args.flood]
    deadline = trio.current_time() + args.duration
    flood = Attack(args.flood, args.target, client_context, count, deadline, args.source)
    run: Callable[[], Awaitable[None]] = getattr(flood, args.flood)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            with trio.move_on_at(deadline):
                await run()
                await trio.sleep_forever()  # the flood stays up (held) until the deadline
            nursery.cancel_scope.cancel()
    emit(event="done", **asdict(flood.stats))


# --- the honest prober -----------------------------------------------------------------------


async def _refuse(peer: PeerIdentity, message: Message) -> Message:
    return ErrorReply(code="unsupported", message="the prober serves nothing")


class Prober:
    """An honest client of the target: a ``Ping`` or a ``FindNode`` every ``interval`` seconds on
    its session (redialled when it breaks), started on schedule whatever the earlier ones are
    doing, so a stalled target cannot hide its stall by slowing the probes down; and every
    ``connect_interval`` seconds a new connection (TCP, TLS, Hello, one Ping), as a peer that
    arrives now would make.  One JSON line per probe: ``t`` (Unix time it started), ``kind``,
    ``ms`` (None if it failed) and ``error``."""

    def __init__(self, args: argparse.Namespace) -> None:
        credentials = NodeCredentials.load(args.key, args.cert)
        crl = Path(args.ca).with_name("crl.pem")
        trust = TrustAnchor.load(args.ca, crl if crl.exists() else None)
        settings = TlsSettings(
            connect_timeout=args.connect_timeout, handshake_timeout=args.connect_timeout
        )
        self.transport = TlsTransport(credentials, trust, str(args.ca), settings=settings)
        session = SessionSettings(request_timeout=args.timeout)
        self.node = Node(
            credentials, self.transport, listen=False, settings=NodeSettings(session=session)
        )
        self.target = args.target
        self.target_id = bytes.fromhex(args.node_id)
        self.args = args
        self.hello = Hello(
            protocol_version=PROTOCOL_VERSION, listen_address="", software="p2pstore-prober"
        )

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.node.run)
            with trio.move_on_after(self.args.duration):
                async with trio.open_nursery() as probes:
                    probes.start_soon(self._every, self.args.connect_interval, self.connect_probe)
                    kinds = itertools.cycle(("ping", "find_node"))
                    await self._every(self.args.interval, lambda: self.request_probe(next(kinds)))
            nursery.cancel_scope.cancel()

    async def _every(self, interval: float, probe: Callable[[], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            next_at = trio.current_time()
            while True:
                nursery.start_soon(probe)
                next_at += interval
                await trio.sleep_until(next_at)

    async def request_probe(self, kind: str) -> None:
        message: Message = Ping(nonce=1, padding=b"")
        if kind == "find_node":
            message = FindNode(target=os.urandom(NODE_ID_BYTES))
        await self._timed(
            kind, self.node.call(self.target_id, self.target, message, timeout=self.args.timeout)
        )

    async def connect_probe(self) -> None:
        await self._timed("connect", self._connect_and_ping())

    async def _connect_and_ping(self) -> None:
        failure: P2PStoreError | None = None

        async def serve(session: Session) -> None:
            with contextlib.suppress(P2PStoreError):
                await session.serve()

        with trio.fail_after(self.args.connect_timeout):
            link = await self.transport.connect(self.target, self.target_id)
            session = Session(link, self.hello, _refuse, SessionSettings())
            await session.greet()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, session)
                try:
                    await session.request(Ping(nonce=2, padding=b""))
                except P2PStoreError as exc:
                    failure = exc
                await session.close("probe done")
        if failure is not None:
            raise failure

    async def _timed(self, kind: str, call: Awaitable[object]) -> None:
        started, wall = time.perf_counter(), time.time()
        error: str | None = None
        try:
            await call
        except (P2PStoreError, trio.TooSlowError) as exc:
            error = "timeout" if isinstance(exc, RequestTimeout | trio.TooSlowError) else str(exc)
        ms = None if error else (time.perf_counter() - started) * 1000
        emit(t=wall, kind=kind, ms=ms, error=error)


async def probe(args: argparse.Namespace) -> None:
    # Its session breaking when the target restarts or drowns is what it measures, not news.
    logging.getLogger("p2pstore").setLevel(logging.ERROR)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await Prober(args).run()
            nursery.cancel_scope.cancel()


# --- a node that stops with the harness --------------------------------------------------------


def run_node(config: Path) -> None:
    """``p2pstore node run --config CONFIG``, nothing else changed (node.toml sets the pace of
    the steward and the scrubber); :func:`stop_with_parent`, called first, stops it with the
    harness."""
    from p2pstore.cli.main import main

    sys.argv = ["p2pstore", "node", "run", "--config", str(config)]
    main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for name in ("attack", "probe"):
        mode = modes.add_parser(name)
        mode.add_argument("--target", required=True, help="HOST:PORT of the target node")
        mode.add_argument("--key", type=Path, required=True)
        mode.add_argument("--cert", type=Path, required=True)
        mode.add_argument("--ca", type=Path, required=True, help="the mesh's ca.crt")
        mode.add_argument("--duration", type=float, required=True, help="seconds, at most")
        if name == "attack":
            mode.add_argument("flood", choices=sorted(DEFAULT_COUNTS))
            mode.add_argument("--count", type=int, help="see DEFAULT_COUNTS")
            mode.add_argument("--source", help="local address to dial from, e.g. 127.0.0.2")
        else:
            mode.add_argument("--node-id", required=True, help="the target's node id, hex")
            mode.add_argument("--interval", type=float, default=0.05, help="s between requests")
            mode.add_argument("--timeout", type=float, default=5.0, help="request deadline, s")
            mode.add_argument("--connect-interval", type=float, default=1.0)
            mode.add_argument("--connect-timeout", type=float, default=10.0)
    node = modes.add_parser("node")
    node.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    stop_with_parent()
    if args.mode == "node":
        run_node(args.config)
    elif args.mode == "attack":
        trio.run(attack, args)
    else:
        trio.run(probe, args)


if __name__ == "__main__":
    main()
