"""A node under floods, on the in-memory network in virtual time: each bound holds against a
hostile member with a valid certificate, the node stays up, honest peers keep being served, the
refusal is counted, and the peer is logged once, not once per request."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_net_transport import HELLO

from p2pstore.core.admission import AdmissionSettings
from p2pstore.errors import PeerUnreachable, RemoteError
from p2pstore.identity import PeerIdentity, Role
from p2pstore.net.memory import PIPE_CAPACITY
from p2pstore.net.node import Node, NodeSettings
from p2pstore.net.session import Session, SessionSettings, retry_after
from p2pstore.testing.net_harness import NetHarness
from p2pstore.wire import (
    Envelope,
    FindNode,
    FindNodeReply,
    GetFragment,
    GetFragmentReply,
    Kind,
    Message,
    Ping,
    decode_envelope,
    encode_envelope,
)

SESSION = SessionSettings(hello_timeout=5, request_timeout=5)
PING = Ping(nonce=7, padding=b"")
FAR = bytes(20)


@pytest.fixture
def mem(tmp_path: Path) -> NetHarness:
    return NetHarness("memory", tmp_path)


@pytest.fixture
def clock(autojump_clock):
    return autojump_clock


def make_node(net: NetHarness, settings: NodeSettings | None = None, **kwargs) -> Node:
    credentials = net.credentials(**kwargs)
    return Node(
        credentials,
        net.transport(credentials),
        settings=settings or NodeSettings(session=SESSION),
    )


async def connected_pair(nursery: trio.Nursery, net: NetHarness, settings=None) -> tuple[Node, ...]:
    """A node under test and an honest friend node with a session to it."""
    node = make_node(net, settings)
    await nursery.start(node.run)
    friend = make_node(net)
    await nursery.start(friend.run)
    await friend.connect(node.address)
    return node, friend


async def raw_session(nursery, net: NetHarness, address: str, *, role=Role.NODE, name=None):
    """A session of a peer that uses its certificate the hostile way: by hand."""
    credentials = net.credentials(role=role)
    transport = net.network.transport(name or net.reserve_address(), credentials, net.trust())
    session = Session(await transport.connect(address), HELLO, _refuse_everything, SESSION)
    await nursery.start(session.run)
    return session


async def _refuse_everything(peer: PeerIdentity, message: Message) -> Message:
    raise RemoteError("this test peer answers nothing", code="unsupported")


def request_frame(request_id: int, message: Message = PING) -> bytes:
    return encode_envelope(Envelope(Kind.REQUEST, request_id, message))


async def test_a_peer_flooding_pings_without_reading_loses_its_session(mem, clock, log_events):
    """The issue's 300,000 PINGs: past the replies the link holds, the requests in flight and
    the busy replies queued, the node ends the session; it never buffers more."""
    async with trio.open_nursery() as nursery:
        node, friend = await connected_pair(nursery, mem)
        hostile = mem.credentials()
        link = await mem.network.transport("hostile", hostile, mem.trust()).connect(node.address)
        await link.send_frame(encode_envelope(Envelope(Kind.NOTICE, 0, HELLO)))
        sent = 0
        with trio.fail_after(60), pytest.raises(PeerUnreachable):
            while sent < 300_000:  # never reads a frame
                await link.send_frame(request_frame(sent + 1))
                sent += 1
        settings = node.settings.session
        # Work the node accepted before refusing more: replies filling the link, the requests
        # in flight, the busy replies queued, and what was already on its way.
        assert sent <= 2 * PIPE_CAPACITY + settings.max_inbound + settings.max_busy_replies + 2
        who = hostile.identity.node_id.hex()
        record = await log_events.wait_for(event="session_error", peer=who)
        assert "does not read its replies" in record.getMessage()
        assert node.refusals.total["not_reading"] == 1
        assert node.metrics.value("p2pstore_refusals_total", reason="not_reading") == 1
        busy = node.metrics.value("p2pstore_refusals_total", reason="session_busy")
        assert busy <= settings.max_busy_replies + 2  # queued, being sent, and the last straw
        # Logged once for the whole flood, not once per refusal.
        assert len(log_events.matching(event="peer_limited", peer=who)) == 1
        await friend.ping(node.identity.node_id, timeout=1)
        assert node.session_counts()["node"] == 1
        nursery.cancel_scope.cancel()


async def test_a_peer_that_reads_late_keeps_its_session_when_its_busy_replies_pile_up(mem, clock):
    """Requests that piled up while the node (or the peer) stalled: past the requests in flight
    and the busy replies queued, the node stops reading until the queue drains, and a peer
    that reads its replies within ``busy_drain_timeout`` keeps its session (it used to be
    ended at once as "not reading")."""
    session = SessionSettings(hello_timeout=5, request_timeout=30, max_inbound=2,
                              max_busy_replies=1, busy_drain_timeout=10)  # fmt: skip
    burst = 2 * PIPE_CAPACITY + 20
    async with trio.open_nursery() as nursery:
        node, _friend = await connected_pair(nursery, mem, NodeSettings(session=session))
        peer = mem.credentials()
        link = await mem.network.transport("late", peer, mem.trust()).connect(node.address)
        await link.send_frame(encode_envelope(Envelope(Kind.NOTICE, 0, HELLO)))

        async def send_burst() -> None:
            for request_id in range(1, burst + 1):
                await link.send_frame(request_frame(request_id))

        nursery.start_soon(send_burst)
        await trio.sleep(5)  # reads nothing for a while, then everything
        answered = set()
        with trio.fail_after(30):
            while len(answered) < burst:
                frame = await link.receive_frame()
                assert frame is not None, "the node ended the session"
                envelope = decode_envelope(frame)
                if envelope.kind is Kind.RESPONSE:
                    answered.add(envelope.request_id)
        assert node.refusals.total["not_reading"] == 0
        assert node.refusals.total["session_busy"] > 0
        assert node.session_counts()["node"] == 2
        nursery.cancel_scope.cancel()


async def test_a_peer_over_its_session_slots_is_told_busy_and_when_to_retry(mem, clock):
    async with trio.open_nursery() as nursery:
        node, _friend = await connected_pair(nursery, mem)
        release = trio.Event()

        async def slow(peer: PeerIdentity, message: Message) -> Message:
            await release.wait()
            return GetFragmentReply(data=b"x")

        node.handle(GetFragment, slow)
        greedy = await raw_session(nursery, mem, node.address)
        outcomes: list[object] = []
        all_refused = trio.Event()

        async def ask() -> None:
            try:
                outcomes.append(await greedy.request(GetFragment(fragment_id=bytes(32))))
            except RemoteError as refused:
                outcomes.append(refused)
                if len(outcomes) == 40 - 32:
                    all_refused.set()

        async with trio.open_nursery() as asking:
            for _ in range(40):
                asking.start_soon(ask)
            await all_refused.wait()
            release.set()
        refused = [o for o in outcomes if isinstance(o, RemoteError)]
        assert len(refused) == 8
        assert {retry_after(r) for r in refused} == {SESSION.busy_retry_after}
        assert node.refusals.total["session_busy"] == 8
        nursery.cancel_scope.cancel()


async def test_a_greedy_peer_gets_its_share_of_the_node_not_the_node(mem, clock, log_events):
    settings = NodeSettings(
        session=SESSION, admission=AdmissionSettings(max_requests=16, max_peer_requests=6)
    )
    async with trio.open_nursery() as nursery:
        node, friend = await connected_pair(nursery, mem, settings)
        release = trio.Event()
        friend_served = trio.Event()

        async def slow(peer: PeerIdentity, message: Message) -> Message:
            if peer.node_id == friend.identity.node_id:
                friend_served.set()
            await release.wait()
            return GetFragmentReply(data=b"x")

        node.handle(GetFragment, slow)
        greedy_credentials = mem.credentials(role=Role.CLIENT)
        greedy = []
        for _ in range(3):  # several sessions of one identity share one quota
            transport = mem.network.transport("greedy", greedy_credentials, mem.trust())
            session = Session(await transport.connect(node.address), HELLO, _refuse_everything)
            await nursery.start(session.run)
            greedy.append(session)
        refusals: list[RemoteError] = []
        all_refused = trio.Event()

        async def ask(session: Session) -> None:
            try:
                await session.request(GetFragment(fragment_id=bytes(32)), timeout=60)
            except RemoteError as refused:
                refusals.append(refused)
                if len(refusals) == 24:
                    all_refused.set()

        async with trio.open_nursery() as asking:
            for index in range(30):
                asking.start_soon(ask, greedy[index % 3])
            await all_refused.wait()
            peer = greedy_credentials.identity.node_id
            assert node.admission.held_by(peer) == 6
            # The friend is served at once, a slow request of its own included.
            began = trio.current_time()
            await friend.ping(node.identity.node_id, timeout=1)
            assert trio.current_time() - began < 0.05
            get = GetFragment(fragment_id=bytes(32))
            asking.start_soon(friend.request, node.identity.node_id, get)
            await friend_served.wait()
            release.set()
        assert {r.code for r in refusals} == {"busy"} and len(refusals) == 24
        assert all(retry_after(r) == pytest.approx(0.1) for r in refusals)
        assert node.metrics.value("p2pstore_refusals_total", reason="peer_busy") == 24
        assert len(log_events.matching(event="peer_limited", peer=peer.hex())) == 1
        assert node.admission.in_flight == 0
        nursery.cancel_scope.cancel()


async def test_lookups_are_rate_limited_and_this_nodes_requests_wait_and_retry(mem, clock):
    settings = NodeSettings(
        session=SESSION, admission=AdmissionSettings(lookups_per_second=10, lookup_burst=5)
    )
    async with trio.open_nursery() as nursery:
        node, friend = await connected_pair(nursery, mem, settings)

        async def find_node(peer: PeerIdentity, message: Message) -> Message:
            return FindNodeReply(contacts=())

        node.handle(FindNode, find_node)
        # A raw flood of 1,000 lookups: 5 served at once, then 10 a second.
        hostile = await raw_session(nursery, mem, node.address)
        served = refused = 0
        began = trio.current_time()
        for _ in range(1000):
            try:
                await hostile.request(FindNode(target=bytes(20)), timeout=5)
                served += 1
            except RemoteError as busy:
                assert busy.code == "busy" and 0 < (retry_after(busy) or 0) <= 0.1
                refused += 1
        assert served <= 5 + 10 * (trio.current_time() - began) + 1
        assert node.refusals.total["lookup_rate"] == refused == 1000 - served > 800
        # An honest node's lookups over the same limit wait for the hint and get through.
        async with trio.open_nursery() as lookups:
            for _ in range(12):
                lookups.start_soon(friend.request, node.identity.node_id, FindNode(target=FAR))
        assert (
            friend.metrics.value("p2pstore_requests_sent_total", type="FindNode", outcome="ok")
            == 12
        )
        nursery.cancel_scope.cancel()


async def test_sessions_per_client_identity_are_bounded(mem, clock, log_events):
    settings = NodeSettings(session=SESSION, max_sessions_per_client=3)
    async with trio.open_nursery() as nursery:
        node, friend = await connected_pair(nursery, mem, settings)
        client = mem.credentials(role=Role.CLIENT)
        sessions = []
        closed: list[Session] = []
        three_closed = trio.Event()

        async def run(session: Session) -> None:
            await session.run()
            closed.append(session)
            if len(closed) == 3:
                three_closed.set()

        for index in range(6):
            transport = mem.network.transport(f"office-{index}", client, mem.trust())
            session = Session(await transport.connect(node.address), HELLO, _refuse_everything)
            nursery.start_soon(run, session)
            sessions.append(session)
        await three_closed.wait()
        assert node.session_counts() == {"node": 1, "client": 3}
        assert all("too many sessions" in (s.close_reason or "") for s in closed)
        assert node.refusals.total["sessions_per_client"] == 3
        limited = log_events.matching(event="peer_limited", peer=client.identity.node_id.hex())
        assert len(limited) == 1
        # Another client identity, and the friend node, are still served.
        other = await raw_session(nursery, mem, node.address, role=Role.CLIENT)
        assert not other.closed
        await friend.ping(node.identity.node_id)
        nursery.cancel_scope.cancel()


async def test_sessions_per_source_address_are_bounded(mem, clock):
    settings = NodeSettings(session=SESSION, max_sessions_per_address=4)
    async with trio.open_nursery() as nursery:
        node, friend = await connected_pair(nursery, mem, settings)
        sessions: list[Session] = []
        failures: list[Exception] = []

        async def open_one() -> None:
            credentials = mem.credentials(role=Role.CLIENT)  # a new identity each time
            link = await mem.network.transport("nat-1", credentials, mem.trust()).connect(
                node.address
            )
            session = Session(link, HELLO, _refuse_everything, SESSION)
            try:
                await nursery.start(session.run)
                sessions.append(session)
            except PeerUnreachable as closed:
                failures.append(closed)

        for _ in range(7):
            await open_one()
        assert (len(sessions), len(failures)) == (4, 3)
        assert node.refusals.total["sessions_per_address"] == 3
        assert node.session_counts()["client"] == 4
        await raw_session(nursery, mem, node.address, role=Role.CLIENT, name="nat-2")
        assert node.session_counts()["client"] == 5
        await friend.ping(node.identity.node_id)
        nursery.cancel_scope.cancel()


async def test_a_silent_peer_is_dropped_and_an_idle_honest_session_is_kept(mem, clock, log_events):
    session = SessionSettings(hello_timeout=5, request_timeout=5, idle_timeout=60)
    settings = NodeSettings(session=session)
    async with trio.open_nursery() as nursery:
        node = make_node(mem, settings)
        await nursery.start(node.run)
        friend = make_node(mem, settings)
        await nursery.start(friend.run)
        await friend.connect(node.address)
        (view,) = node.peers()
        silent = mem.credentials()
        link = await mem.network.transport("silent", silent, mem.trust()).connect(node.address)
        await link.send_frame(encode_envelope(Envelope(Kind.NOTICE, 0, HELLO)))
        greeted = trio.current_time()
        who = silent.identity.node_id.hex()
        record = await log_events.wait_for(event="session_error", peer=who)
        assert 60 <= trio.current_time() - greeted < 61
        assert "sent nothing for 60s" in record.getMessage()
        assert node.refusals.total["idle_timeout"] == 1
        # Ten idle timeouts later the honest session, idle all along, is the same one.
        await trio.sleep(600)
        assert node.peers() == [view]
        pings = node.metrics.value("p2pstore_requests_handled_total", type="Ping", outcome="ok")
        assert 600 / 60 <= pings <= 2 * 660 / 30  # keepalives: about one per half timeout
        nursery.cancel_scope.cancel()
