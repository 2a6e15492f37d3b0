"""The TLS transport admits nothing but mutual TLS with a mesh certificate, and one bad or slow
client never stops it serving the others.  Real sockets, real time, a deadline on every test."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from p2pstore.errors import PeerUnreachable, RemoteProtocolError
from p2pstore.identity import MeshCA, NodeCredentials, PeerIdentity
from p2pstore.net.address import parse_address
from p2pstore.net.session import Session
from p2pstore.net.tls import TlsLink, TlsSettings, TlsTransport
from p2pstore.wire import (
    DEFAULT_MAX_FRAME,
    FRAME_HEADER,
    PROTOCOL_VERSION,
    Envelope,
    Goodbye,
    Hello,
    Kind,
    Message,
    Ping,
    Pong,
    decode_envelope,
    encode_envelope,
    frame_header,
)

DEADLINE = 10.0
HANDSHAKE_TIMEOUT = 1.5
HELLO = Hello(protocol_version=PROTOCOL_VERSION, listen_address="", software="test")
HELLO_PAYLOAD = encode_envelope(Envelope(Kind.NOTICE, 0, HELLO))
HELLO_FRAME = frame_header(len(HELLO_PAYLOAD)) + HELLO_PAYLOAD  # what a session sends first


async def echo(peer: PeerIdentity, message: Message) -> Message:
    assert isinstance(message, Ping)
    return Pong(nonce=message.nonce, received=len(message.padding))


class Mesh:
    """A CA on disk and identities issued by it, as the TLS transport needs them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.now = datetime.now(UTC)
        self.ca = MeshCA.create(tmp_path / "ca", mesh_name="test", now=self.now)
        self.ca_path = tmp_path / "ca" / "ca.crt"
        self._count = 0

    def credentials(self) -> NodeCredentials:
        self._count += 1
        return self.ca.issue(
            self.tmp_path, f"node-{self._count}", datacenter="dc-1", region="FR-GES", now=self.now
        )

    def transport(self, handshake_timeout: float = 5.0) -> TlsTransport:
        return TlsTransport(
            self.credentials(),
            self.ca.trust_anchor(),
            str(self.ca_path),
            settings=TlsSettings(connect_timeout=5, handshake_timeout=handshake_timeout),
        )


class Server:
    """A listening transport running one session per inbound link; records how each ended."""

    def __init__(self, transport: TlsTransport) -> None:
        self.transport = transport
        self.errors: list[Exception] = []
        self.ended = trio.Event()

    async def handle(self, link: TlsLink) -> None:
        session = Session(link, HELLO, echo)
        try:
            await session.run()
        except (RemoteProtocolError, PeerUnreachable) as exc:
            self.errors.append(exc)
        finally:
            self.ended.set()
            self.ended = trio.Event()

    @property
    def address(self) -> str:
        return self.transport.listen_address


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    return Mesh(tmp_path)


async def start_server(nursery: trio.Nursery, mesh: Mesh, handshake_timeout: float = 5.0) -> Server:
    server = Server(mesh.transport(handshake_timeout))
    await nursery.start(server.transport.listen, server.handle)
    return server


async def assert_serves_a_proper_client(mesh: Mesh, server: Server) -> None:
    """A mesh client still gets a session and an answer from ``server``."""
    link = await mesh.transport().connect(server.address)
    session = Session(link, HELLO, echo)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        reply = await session.request(Ping(nonce=42, padding=b"abc"))
        assert reply == Pong(nonce=42, received=3)
        await session.close()


async def raw_stream(address: str) -> trio.SocketStream:
    host, port = parse_address(address)
    return await trio.open_tcp_stream(host, port)


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the other side sends until it closes (a reset counts as closed)."""
    received = b""
    try:
        while data := await stream.receive_some(65536):
            received += data
    except trio.BrokenResourceError:
        pass
    return received


async def greeted_link(mesh: Mesh, server: Server) -> TlsLink:
    """A mutually authenticated link to ``server`` whose Hellos were exchanged by hand."""
    link = await mesh.transport().connect(server.address)
    assert isinstance(link, TlsLink)
    await link.send_frame(HELLO_PAYLOAD)
    payload = await link.receive_frame()
    assert payload is not None
    assert isinstance(decode_envelope(payload).message, Hello)
    return link


@pytest.mark.parametrize(
    "payload",
    [b"GET / HTTP/1.0\r\n\r\n", HELLO_FRAME],
    ids=["http-request", "msgpack-hello-frame"],
)
async def test_plain_tcp_is_refused_and_the_listener_keeps_serving(mesh, log_events, payload):
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, mesh)
            stream = await raw_stream(server.address)
            await stream.send_all(payload)
            record = await log_events.wait_for(event="peer_refused")
            assert record.reason == "not-tls"
            assert "does not speak TLS" in record.getMessage()
            assert record.remote.startswith("127.0.0.1:")
            # The server hung up; whatever it sent first (a TLS alert at most) is no answer.
            answer = await read_until_closed(stream)
            assert b"HTTP" not in answer
            assert len(answer) < 64
            await stream.aclose()
            assert server.errors == []  # refused before any session existed
            await assert_serves_a_proper_client(mesh, server)
            nursery.cancel_scope.cancel()


async def test_a_silent_client_is_dropped_after_the_handshake_timeout_without_blocking_others(
    mesh, log_events
):
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, mesh, handshake_timeout=HANDSHAKE_TIMEOUT)
            silent = await raw_stream(server.address)
            connected_at = trio.current_time()
            await assert_serves_a_proper_client(mesh, server)
            assert trio.current_time() - connected_at < HANDSHAKE_TIMEOUT  # served meanwhile
            answer = await read_until_closed(silent)
            waited = trio.current_time() - connected_at
            assert answer == b""  # never got a ServerHello: it never sent a ClientHello
            assert HANDSHAKE_TIMEOUT * 0.9 <= waited < HANDSHAKE_TIMEOUT + 3
            await silent.aclose()
            # That log line carries no ``event`` field (yet): match it by its format string.
            record = await log_events.wait_for(event="handshake_lost")
            assert f"took longer than {HANDSHAKE_TIMEOUT:g}s" in record.getMessage()
            await assert_serves_a_proper_client(mesh, server)
            nursery.cancel_scope.cancel()


async def test_a_frame_larger_than_the_limit_ends_that_session_only(mesh):
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, mesh)
            link = await greeted_link(mesh, server)
            ended = server.ended
            await link._stream.send_all(FRAME_HEADER.pack(DEFAULT_MAX_FRAME + 1))
            # The server names the problem in a Goodbye, then hangs up.
            payload = await link.receive_frame()
            assert payload is not None
            goodbye = decode_envelope(payload).message
            assert isinstance(goodbye, Goodbye)
            assert f"{DEFAULT_MAX_FRAME + 1} bytes" in goodbye.reason
            assert await link.receive_frame() is None
            await ended.wait()
            [error] = server.errors
            assert isinstance(error, RemoteProtocolError)
            assert "more than the limit" in str(error)
            await link.aclose()
            await assert_serves_a_proper_client(mesh, server)
            nursery.cancel_scope.cancel()


async def test_a_peer_closing_mid_frame_ends_that_session_only(mesh):
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, mesh)
            link = await greeted_link(mesh, server)
            ended = server.ended
            await link._stream.send_all(FRAME_HEADER.pack(100) + b"x" * 10)
            await link.aclose()  # a clean TLS close_notify, 90 bytes short of the frame
            await ended.wait()
            [error] = server.errors
            assert isinstance(error, RemoteProtocolError)
            assert "in the middle of a frame" in str(error)
            await assert_serves_a_proper_client(mesh, server)
            nursery.cancel_scope.cancel()


async def test_a_client_without_a_certificate_is_refused(mesh, log_events):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(cafile=str(mesh.ca_path))  # trusts the mesh, shows no cert
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, mesh)
            stream = trio.SSLStream(await raw_stream(server.address), context)
            # In TLS 1.3 the client finishes its half first; the refusal arrives right after.
            try:
                await stream.do_handshake()
                await stream.send_all(HELLO_FRAME)
            except trio.BrokenResourceError:
                pass
            record = await log_events.wait_for(event="peer_refused")
            assert record.reason == "no-certificate"
            assert "presented no certificate" in record.getMessage()
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some(65536)  # the server's alert, never a frame
            await trio.aclose_forcefully(stream)
            assert server.errors == []  # no session was ever started
            await assert_serves_a_proper_client(mesh, server)
            nursery.cancel_scope.cancel()
