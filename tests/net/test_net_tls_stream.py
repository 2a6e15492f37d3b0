"""TlsStream: large reads, trio.SSLStream's contract (clean close, ragged end, broken on garbage),
and interoperability with trio.SSLStream on the other end.  Real sockets, real time."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trio
from test_net_tls_only import DEADLINE, Mesh

from p2pstore.net.tls import make_ssl_contexts
from p2pstore.net.tls_stream import TlsStream

MiB = 1024 * 1024


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    mesh = Mesh(tmp_path)
    server, _ = make_ssl_contexts(mesh.credentials(), str(mesh.ca_path))
    _, client = make_ssl_contexts(mesh.credentials(), str(mesh.ca_path))
    return server, client


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        dialled = await trio.open_tcp_stream("127.0.0.1", port)
    await listeners[0].aclose()
    return dialled, accepted[0]


async def tls_pair(contexts) -> tuple[TlsStream, TlsStream]:
    server_context, client_context = contexts
    dialled, accepted = await tcp_pair()
    client = TlsStream(dialled, client_context, server_side=False)
    server = TlsStream(accepted, server_context, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> tuple[bytes, int]:
    """(the bytes, the largest piece one receive_some returned)."""
    pieces: list[bytes | bytearray] = []
    largest = got = 0
    while got < size:
        piece = await stream.receive_some(size - got)
        assert piece, "the stream ended early"
        pieces.append(piece)
        largest = max(largest, len(piece))
        got += len(piece)
    return b"".join(pieces), largest


async def test_one_receive_returns_many_records_and_both_directions_share_the_stream(contexts):
    data = os.urandom(4 * MiB)
    with trio.fail_after(DEADLINE):
        client, server = await tls_pair(contexts)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, data)
            nursery.start_soon(server.send_all, data[::-1])
            got, largest = await receive_exactly(server, len(data))
            back, _ = await receive_exactly(client, len(data))
        assert got == data and back == data[::-1]
        # trio.SSLStream gives one 16 KiB record per call; this stream every record read.
        assert largest > 64 * 1024
        assert server.peer_certificate() and client.peer_certificate()
        await client.aclose()
        assert await server.receive_some() == b""  # close_notify: a clean end
        assert await server.receive_some() == b""
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()


async def test_a_receive_never_returns_more_than_asked(contexts):
    with trio.fail_after(DEADLINE):
        client, server = await tls_pair(contexts)
        await client.send_all(b"x" * 100_000)
        await trio.sleep(0.05)  # let every record arrive: the bound must hold even then
        assert len(await server.receive_some(1000)) == 1000
        rest, _ = await receive_exactly(server, 99_000)
        assert rest == b"x" * 99_000
        await client.aclose()
        await server.aclose()


async def test_an_end_without_close_notify_breaks_the_stream(contexts):
    with trio.fail_after(DEADLINE):
        client, server = await tls_pair(contexts)
        await client.send_all(b"last words")
        await client.transport.aclose()  # TCP closes, TLS never said goodbye
        assert await server.receive_some() == b"last words"
        with pytest.raises(trio.BrokenResourceError) as raised:
            await server.receive_some()
        assert isinstance(raised.value.__cause__, ssl.SSLError)
        with pytest.raises(trio.BrokenResourceError):  # and it stays broken
            await server.receive_some()
        await server.aclose()


async def test_garbage_after_the_handshake_breaks_the_stream(contexts):
    with trio.fail_after(DEADLINE):
        client, server = await tls_pair(contexts)
        await client.transport.send_all(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # a forged record
        with pytest.raises(trio.BrokenResourceError) as raised:
            await server.receive_some()
        assert isinstance(raised.value.__cause__, ssl.SSLError)
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"anything")
        await server.aclose()
        await client.aclose()


async def test_it_speaks_with_trio_ssl_stream(contexts):
    server_context, client_context = contexts
    data = os.urandom(MiB)
    with trio.fail_after(DEADLINE):
        dialled, accepted = await tcp_pair()
        theirs = trio.SSLStream(dialled, client_context, server_side=False)
        ours = TlsStream(accepted, server_context, server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(theirs.do_handshake)
            nursery.start_soon(ours.do_handshake)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(theirs.send_all, data)
            got, _ = await receive_exactly(ours, len(data))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.send_all, got)
            back, _ = await receive_exactly(theirs, len(data))
        assert back == data
        await ours.aclose()
        assert await theirs.receive_some() == b""
        await theirs.aclose()


async def test_a_certificate_from_another_ca_fails_the_handshake(contexts, tmp_path):
    server_context, _ = contexts
    stranger = Mesh(tmp_path / "other")
    _, stranger_context = make_ssl_contexts(stranger.credentials(), str(stranger.ca_path))
    with trio.fail_after(DEADLINE):
        dialled, accepted = await tcp_pair()
        client = TlsStream(dialled, stranger_context, server_side=False)
        server = TlsStream(accepted, server_context, server_side=True)
        failures: list[BaseException] = []

        async def handshake(stream: TlsStream) -> None:
            try:
                await stream.do_handshake()
                await stream.receive_some()  # TLS 1.3: a client learns of its refusal here
            except trio.BrokenResourceError as exc:
                failures.append(exc)
                await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(handshake, client)
            nursery.start_soon(handshake, server)
        assert len(failures) == 2
        assert all(isinstance(f.__cause__, ssl.SSLError) for f in failures)
