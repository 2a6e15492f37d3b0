"""The transport contract, on TLS (real sockets) and on the in-memory network (virtual time)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import trio

from p2pstore.errors import (
    PeerRefused,
    PeerUnreachable,
    RemoteError,
    RemoteProtocolError,
    RequestTimeout,
)
from p2pstore.identity import PeerIdentity, Role
from p2pstore.net.session import Session, SessionSettings
from p2pstore.wire import PROTOCOL_VERSION, Hello, Message, Ping, Pong

HELLO = Hello(protocol_version=PROTOCOL_VERSION, listen_address="", software="test")


async def echo(peer: PeerIdentity, message: Message) -> Message:
    assert isinstance(message, Ping)
    if message.nonce < 0:
        await trio.sleep_forever()  # a peer that never answers
    return Pong(nonce=message.nonce, received=len(message.padding))


class Server:
    """A transport listening with one session per inbound link; records what happened."""

    def __init__(self, transport, handler=echo, settings: SessionSettings | None = None) -> None:
        self.transport = transport
        self.handler = handler
        self.settings = settings
        self.sessions: list[Session] = []
        self.errors: list[Exception] = []
        self.ended = trio.Event()

    async def handle(self, link) -> None:
        session = Session(link, HELLO, self.handler, self.settings)
        self.sessions.append(session)
        try:
            await session.run()
        except (RemoteProtocolError, PeerUnreachable) as exc:
            self.errors.append(exc)
        finally:
            self.ended.set()
            self.ended = trio.Event()


async def start_server(nursery: trio.Nursery, transport, **kwargs) -> Server:
    server = Server(transport, **kwargs)
    await nursery.start(transport.listen, server.handle)
    return server


async def open_session(nursery, client, address, expected_id=None, handler=echo) -> Session:
    link = await client.connect(address, expected_id)
    session = Session(link, HELLO, handler)
    await nursery.start(session.run)
    return session


async def test_identities_come_from_certificates(net, clock):
    server_credentials = net.credentials("dc-strasbourg", "FR-GES")
    client_credentials = net.credentials("dc-paris", "FR-IDF")
    server_transport = net.transport(server_credentials)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, server_transport)
        client = net.transport(client_credentials)
        session = await open_session(
            nursery,
            client,
            server_transport.listen_address,
            expected_id=server_credentials.identity.node_id,
        )
        assert session.peer.node_id == server_credentials.identity.node_id
        assert (session.peer.datacenter, session.peer.region) == ("dc-strasbourg", "FR-GES")
        reply = await session.request(Ping(nonce=5, padding=b"xyz"))
        assert reply == Pong(nonce=5, received=3)
        seen_by_server = server.sessions[0].peer
        assert seen_by_server.node_id == client_credentials.identity.node_id
        assert (seen_by_server.datacenter, seen_by_server.region) == ("dc-paris", "FR-IDF")
        nursery.cancel_scope.cancel()


async def test_dialing_an_expected_id_refuses_another_node(net, clock):
    server_transport = net.transport()
    impostor_id = net.credentials().identity.node_id
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        client = net.transport()
        with pytest.raises(PeerRefused) as refused:
            await client.connect(server_transport.listen_address, impostor_id)
        assert refused.value.reason == "wrong-node-id"
        nursery.cancel_scope.cancel()


async def test_a_client_certificate_cannot_act_as_a_node(net, clock):
    server_transport = net.transport(net.credentials(role=Role.CLIENT))
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        with pytest.raises(PeerRefused) as refused:
            await net.transport().connect(server_transport.listen_address)
        assert refused.value.reason == "not-a-node"
        nursery.cancel_scope.cancel()


async def test_many_concurrent_requests_share_one_connection(net, clock):
    server_transport = net.transport()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, server_transport)
        session = await open_session(nursery, net.transport(), server_transport.listen_address)
        answers: dict[int, Message] = {}

        async def ask(nonce: int) -> None:
            answers[nonce] = await session.request(Ping(nonce=nonce, padding=bytes(nonce % 7)))

        async with trio.open_nursery() as requests:
            for nonce in range(1, 31):
                requests.start_soon(ask, nonce)
        assert answers == {n: Pong(nonce=n, received=n % 7) for n in range(1, 31)}
        assert len(server.sessions) == 1
        nursery.cancel_scope.cancel()


async def test_a_request_without_answer_times_out_and_others_still_work(net, clock):
    server_transport = net.transport()
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        session = await open_session(nursery, net.transport(), server_transport.listen_address)
        with pytest.raises(RequestTimeout):
            await session.request(Ping(nonce=-1, padding=b""), timeout=0.5)
        assert await session.request(Ping(nonce=2, padding=b"")) == Pong(nonce=2, received=0)
        nursery.cancel_scope.cancel()


async def test_a_send_cancelled_mid_frame_leaves_the_link_usable(net, clock):
    """A caller's deadline must not cut a frame in half: the link is shared by every request.
    The receiver stops reading until the sender's frame is stuck in full kernel buffers."""
    server_transport = net.transport()
    big = bytes(16 * 1024 * 1024)
    received: list[bytes] = []
    all_read = trio.Event()

    async def slow_reader(link) -> None:
        await trio.sleep(1.0)  # the scenario: a receiver that reads late, after the deadline
        while len(received) < 2:
            frame = await link.receive_frame()
            assert frame is not None
            received.append(frame)
        all_read.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(server_transport.listen, slow_reader)
        link = await net.transport().connect(server_transport.listen_address)
        with trio.move_on_after(0.5):
            await link.send_frame(big)  # blocks in full buffers until the reader wakes up
        await link.send_frame(b"after")
        with trio.fail_after(30):
            await all_read.wait()
        assert [len(f) for f in received] == [len(big), 5] and received[1] == b"after"
        await link.aclose()
        nursery.cancel_scope.cancel()


async def test_too_many_inbound_requests_get_busy_not_queued(net, clock):
    server_transport = net.transport()
    in_progress = 0
    both_in_progress = trio.Event()

    async def hang(peer: PeerIdentity, message: Message) -> Message:
        nonlocal in_progress
        in_progress += 1
        if in_progress == 2:
            both_in_progress.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with trio.open_nursery() as nursery:
        await start_server(
            nursery, server_transport, handler=hang, settings=SessionSettings(max_inbound=2)
        )
        session = await open_session(nursery, net.transport(), server_transport.listen_address)
        async with trio.open_nursery() as hanging:
            for _ in range(2):
                hanging.start_soon(lambda: session.request(Ping(nonce=-1, padding=b""), timeout=60))
            with trio.fail_after(10):
                await both_in_progress.wait()
            with pytest.raises(RemoteError) as busy:
                await session.request(Ping(nonce=3, padding=b""), timeout=5)
            assert busy.value.code == "busy"
            hanging.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_graceful_close_tells_the_peer_and_fails_its_pending_requests(net, clock):
    server_transport = net.transport()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, server_transport)
        session = await open_session(nursery, net.transport(), server_transport.listen_address)
        await session.request(Ping(nonce=1, padding=b""))
        ended = server.ended
        await session.close("test is done")
        await ended.wait()
        assert server.errors == []
        assert server.sessions[0].close_reason == "peer said goodbye: test is done"
        with pytest.raises(PeerUnreachable):
            await session.request(Ping(nonce=2, padding=b""))
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "garbage",
    [b"\xc1", b"\x93\x00\x01\xcd\x03\xe7", b"\x95\x00\x01\x01\xa3abc\x00", b"\x91" * 5000],
    ids=["invalid-msgpack", "unknown-type", "wrong-field-type", "nesting-bomb"],
)
async def test_garbage_frames_end_that_session_only(net, clock, garbage):
    server_transport = net.transport()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, server_transport)
        link = await net.transport().connect(server_transport.listen_address)
        from p2pstore.wire import Envelope, Kind, encode_envelope

        await link.send_frame(encode_envelope(Envelope(Kind.NOTICE, 0, HELLO)))
        ended = server.ended
        await link.send_frame(garbage)
        await ended.wait()
        assert len(server.errors) == 1
        assert isinstance(server.errors[0], RemoteProtocolError)
        # The server keeps serving everyone else.
        session = await open_session(nursery, net.transport(), server_transport.listen_address)
        assert await session.request(Ping(nonce=9, padding=b"")) == Pong(nonce=9, received=0)
        await link.aclose()
        nursery.cancel_scope.cancel()


async def test_a_peer_speaking_another_protocol_version_is_refused(net, clock):
    server_transport = net.transport()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, server_transport)
        link = await net.transport().connect(server_transport.listen_address)
        future = Hello(protocol_version=PROTOCOL_VERSION + 1, listen_address="", software="x")
        session = Session(link, future, echo)
        ended = server.ended
        # Neither offers a version the other speaks: each refuses the other, naming both.
        both = f"version {PROTOCOL_VERSION} .*speaks version {PROTOCOL_VERSION + 1}"
        with pytest.raises(RemoteProtocolError, match=both):
            await session.greet()
        await ended.wait()
        assert f"version {PROTOCOL_VERSION + 1}" in str(server.errors[0])
        assert isinstance(server.errors[0], RemoteProtocolError)
        reason = session.close_reason
        assert reason is not None and f"version {PROTOCOL_VERSION + 1}" in reason
        nursery.cancel_scope.cancel()


async def _assert_refused_and_still_serving(
    net, nursery, server_transport, client, reason, log_events
):
    with pytest.raises((PeerRefused, PeerUnreachable)):
        link = await client.connect(server_transport.listen_address)
        # TLS 1.3 lets the client finish its handshake before the server checks its
        # certificate: the refusal shows on the first exchange.
        await Session(link, HELLO, echo).greet()
    with trio.fail_after(10):
        record = await log_events.wait_for(event="peer_refused", reason=reason)
    assert len(log_events.matching(event="peer_refused")) == 1
    assert record.levelno == logging.WARNING
    assert "refused peer" in record.getMessage()
    session = await open_session(nursery, net.transport(), server_transport.listen_address)
    assert await session.request(Ping(nonce=1, padding=b"")) == Pong(nonce=1, received=0)


async def test_certificate_from_another_ca_is_refused(net, clock, log_events):
    server_transport = net.transport()
    other = net.other_ca()
    stranger = net.transport(net.credentials(ca=other), trust=net.trust(other))
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        await _assert_refused_and_still_serving(
            net, nursery, server_transport, stranger, "wrong-ca", log_events
        )
        nursery.cancel_scope.cancel()


async def test_expired_certificate_is_refused(net, clock, log_events):
    server_transport = net.transport()
    expired = net.transport(net.credentials(issued_at=net.now - timedelta(days=60), valid_days=30))
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        await _assert_refused_and_still_serving(
            net, nursery, server_transport, expired, "expired", log_events
        )
        nursery.cancel_scope.cancel()


async def test_revoked_certificate_is_refused(net, clock, log_events):
    revoked_credentials = net.credentials()
    net.ca.revoke(revoked_credentials.identity.serial, now=net.now)
    server_transport = net.transport(trust=net.trust())
    revoked = net.transport(revoked_credentials)
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        await _assert_refused_and_still_serving(
            net, nursery, server_transport, revoked, "revoked", log_events
        )
        nursery.cancel_scope.cancel()


async def test_a_client_refuses_a_revoked_server(net, clock):
    server_credentials = net.credentials()
    server_transport = net.transport(server_credentials)
    net.ca.revoke(server_credentials.identity.serial, now=net.now)
    client = net.transport(trust=net.trust())
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        with pytest.raises(PeerRefused) as refused:
            await client.connect(server_transport.listen_address)
        assert refused.value.reason == "revoked"
        nursery.cancel_scope.cancel()


async def test_nobody_listening_is_unreachable(net, clock):
    transport = net.transport()
    address = "127.0.0.1:9" if net.kind == "tls" else "nobody-here"
    with pytest.raises(PeerUnreachable):
        await transport.connect(address)


@pytest.mark.parametrize("address", ["x", "host:notaport", "127.0.0.1:99999", ""])
async def test_an_address_a_peer_made_up_is_unreachable_not_a_crash(net, clock, address):
    """Contact addresses arrive in other peers' replies: a malformed one fails that dial only."""
    transport = net.transport()
    with pytest.raises(PeerUnreachable):
        await transport.connect(address, None)
