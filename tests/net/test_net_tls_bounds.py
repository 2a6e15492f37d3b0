"""The bounds that live in the TLS transport: frame deadlines and the receive budget (the link
over memory streams, in virtual time), and handshakes per source address (real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from test_net_tls_only import (
    DEADLINE,
    HELLO_PAYLOAD,
    Mesh,
    Server,
    assert_serves_a_proper_client,
    greeted_link,
    read_until_closed,
)

from p2pstore.errors import PeerUnreachable, RemoteProtocolError
from p2pstore.net.address import parse_address
from p2pstore.net.budget import ReceiveBudget
from p2pstore.net.refusals import RefusalLog
from p2pstore.net.tls import RECEIVE_SIZE, TlsLink, TlsSettings, TlsTransport
from p2pstore.testing.net_harness import NetHarness
from p2pstore.wire import FRAME_HEADER, Goodbye, decode_envelope

MiB = 1024 * 1024


@pytest.fixture
def ids(tmp_path: Path) -> NetHarness:
    return NetHarness("memory", tmp_path)


def link_pair(peer, budget=None, timeout=10.0, refusals=None):
    """(what the peer writes to, the link reading it)."""
    theirs, ours = trio.testing.memory_stream_pair()
    link = TlsLink(
        ours, peer, "remote:1", outbound=False, max_frame=2 * MiB, budget=budget,
        partial_frame_timeout=timeout, refusals=refusals,
    )  # fmt: skip
    return theirs, link


async def test_a_frame_must_arrive_whole_within_the_partial_frame_timeout(ids, autojump_clock):
    refusals = RefusalLog()
    peer = ids.credentials().identity
    theirs, link = link_pair(peer, refusals=refusals)
    # Whole frames with long pauses between them are fine: the clock runs only mid-frame.
    for _ in range(3):
        await theirs.send_all(FRAME_HEADER.pack(3) + b"abc")
        assert await link.receive_frame() == b"abc"
        await trio.sleep(100)
    # A frame trickled a byte every 4 s makes progress, yet is cut 10 s after its first byte.
    began = trio.current_time()

    async def trickle() -> None:
        for byte in FRAME_HEADER.pack(1000) + b"x" * 10:
            await theirs.send_all(bytes([byte]))
            await trio.sleep(4)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        with pytest.raises(RemoteProtocolError, match="did not finish a frame within 10s"):
            await link.receive_frame()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - began == pytest.approx(10)
    assert refusals.total["partial_frame_timeout"] == 1


async def test_large_frames_draw_from_one_budget_with_a_share_per_peer(ids, autojump_clock):
    """Three greedy links of one peer and an honest one announce 1.5 MiB frames into a 3 MiB
    budget with 2 MiB per peer: the greedy peer holds one at a time, the honest frame gets
    through, the node never holds more than the budget, and a frame that finds no room within
    the deadline ends its session."""
    budget = ReceiveBudget(total=3 * MiB, per_peer=2 * MiB)
    refusals = RefusalLog()
    greedy, honest = ids.credentials().identity, ids.credentials().identity
    size = MiB + MiB // 2
    header = FRAME_HEADER.pack(size)
    greedy_links = [link_pair(greedy, budget, refusals=refusals) for _ in range(3)]
    outcomes: dict[int, str] = {}

    async def receive(index: int, link: TlsLink) -> None:
        try:
            await link.receive_frame()
            outcomes[index] = "frame"
        except RemoteProtocolError as exc:
            outcomes[index] = str(exc)

    async with trio.open_nursery() as nursery:
        for index, (theirs, link) in enumerate(greedy_links):
            await theirs.send_all(header + bytes(10) * 100_000)  # most of the body, then stall
            nursery.start_soon(receive, index, link)
        await trio.testing.wait_all_tasks_blocked()
        assert budget.held_by(greedy.node_id) == size and budget.waiting == 2
        waiting = [link for _theirs, link in greedy_links if not link._reserved]
        assert len(waiting) == 2
        for link in waiting:  # a waiting link reads no more of the body than its first read
            assert link._decoder.buffered <= RECEIVE_SIZE

        theirs, link = link_pair(honest, budget, refusals=refusals)
        await theirs.send_all(header + bytes(size))
        with trio.fail_after(0.001):
            assert len(await link.receive_frame()) == size
        assert budget.in_use == size  # the honest frame's room is free again
    timed_out = [o for o in outcomes.values() if "did not finish a frame within 10s" in o]
    no_room = [o for o in outcomes.values() if "receive buffers stayed full for 10s" in o]
    # The first greedy frame never finished; then the other two each got room in turn, or
    # none within their own 10 s: every greedy link ended, none held more than its share.
    assert len(timed_out) + len(no_room) == 3 and timed_out
    assert refusals.total["partial_frame_timeout"] == len(timed_out)
    assert refusals.total["receive_budget"] == len(no_room)
    for _theirs, link in greedy_links:
        await link.aclose()
    assert budget.in_use == 0


async def test_a_waiting_reservation_never_leaks_when_cancelled(ids, autojump_clock):
    budget = ReceiveBudget(total=2 * MiB, per_peer=2 * MiB)
    a, b = ids.credentials().identity.node_id, ids.credentials().identity.node_id
    await budget.reserve(a, 2 * MiB)
    with trio.move_on_after(1):
        await budget.reserve(b, MiB)
    assert budget.waiting == 0
    budget.release(a, 2 * MiB)
    assert budget.in_use == 0


def bounded_transport(mesh: Mesh, **settings: float) -> TlsTransport:
    return TlsTransport(
        mesh.credentials(),
        mesh.ca.trust_anchor(),
        str(mesh.ca_path),
        settings=TlsSettings(connect_timeout=5, **settings),  # type: ignore[arg-type]
    )


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    return Mesh(tmp_path)


async def test_one_address_cannot_hold_the_handshake_slots(mesh, log_events):
    """The issue's 200 plain TCP connections that never start TLS: past 4 per address they are
    closed at once, and a member's handshake from another address completes at once."""
    transport = bounded_transport(
        mesh, handshake_timeout=3, max_concurrent_handshakes=8, max_handshakes_per_address=4
    )
    server = Server(transport)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.listen, server.handle)
            host, port = parse_address(server.address)
            hogs = [
                await trio.open_tcp_stream(host, port, local_address="127.0.0.2")
                for _ in range(50)
            ]
            closed = 0

            async def closed_at_once(stream: trio.SocketStream) -> None:
                nonlocal closed
                with trio.move_on_after(1):
                    await read_until_closed(stream)
                    closed += 1

            async with trio.open_nursery() as watching:
                for stream in hogs:
                    watching.start_soon(closed_at_once, stream)
            assert closed == 46
            assert transport.refusals.total["handshakes_per_address"] == 46
            assert transport.levels()["handshakes_in_progress"] == 4
            (limited,) = log_events.matching(event="peer_limited", peer="127.0.0.2")
            assert limited.reason == "handshakes_per_address"
            with trio.fail_after(1):  # well before the 3 s the 4 held handshakes may take
                await assert_serves_a_proper_client(mesh, server)
            for stream in hogs:
                await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_stalled_frame_ends_its_tls_session_with_a_reason(mesh):
    transport = bounded_transport(mesh, partial_frame_timeout=1)
    server = Server(transport)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.listen, server.handle)
            link = await greeted_link(mesh, server)
            ended = server.ended
            await link._stream.send_all(FRAME_HEADER.pack(len(HELLO_PAYLOAD) + 500) + b"x" * 10)
            payload = await link.receive_frame()
            assert payload is not None
            goodbye = decode_envelope(payload).message
            assert isinstance(goodbye, Goodbye)
            assert "did not finish a frame within 1s" in goodbye.reason
            await ended.wait()
            [error] = server.errors
            assert isinstance(error, RemoteProtocolError)
            assert transport.refusals.total["partial_frame_timeout"] == 1
            await link.aclose()
            await assert_serves_a_proper_client(mesh, server)
            nursery.cancel_scope.cancel()


class _DeafPeer(trio.abc.Stream):
    """A peer that pipelined ``frames`` in one burst and then stopped reading for good: every
    send to it fails, as a socket the peer reset does."""

    def __init__(self, frames: bytes) -> None:
        self._unread = frames
        self.sends = self.closes = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        data, self._unread = self._unread, b""
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("reset by peer")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closes += 1
        await trio.lowlevel.checkpoint()


async def test_a_link_that_failed_to_send_reads_no_more_of_the_peers_requests(ids):
    """A flood's replies that cannot leave: after the first failed send the link hands out none
    of the thousands of requests still buffered, and later replies fail at once (not each
    closing the stream again)."""
    frames = b"".join(FRAME_HEADER.pack(5) + b"hello" for _ in range(5000))
    peer = _DeafPeer(frames)
    link = TlsLink(peer, ids.credentials().identity, "remote:1", outbound=False, max_frame=MiB)
    assert await link.receive_frame() == b"hello"
    with pytest.raises(PeerUnreachable, match="broke while sending: reset by peer"):
        await link.send_frame(b"reply")
    for _ in range(3):
        with pytest.raises(PeerUnreachable, match="broke while sending"):
            await link.send_frame(b"reply")
    with pytest.raises(PeerUnreachable, match="broke while sending"):
        await link.receive_frame()
    assert (peer.sends, peer.closes) == (1, 1)
