"""Strangers cannot hold the handshake slots members need: the door in virtual time (reclaimed
handshakes end, refusals are counted and logged once per address), then real TLS with stalled
handshakes from several loopback addresses while a member keeps connecting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
import trio.testing
from test_net_tls_only import DEADLINE, Mesh, Server, assert_serves_a_proper_client

from p2pstore.core.handshakes import HandshakeLimits
from p2pstore.net.address import parse_address
from p2pstore.net.handshakes import MAX_REFUSED_OPEN, HandshakeDoor, RefusedConnections
from p2pstore.net.refusals import RefusalLog
from p2pstore.net.tls import TlsSettings, TlsTransport


async def test_a_reclaimed_handshake_ends_even_before_it_started(autojump_clock, log_events):
    refusals = RefusalLog()
    door = HandshakeDoor(HandshakeLimits(slots=4, member_slots=2, per_address=8), refusals)
    outcomes: list[str | None] = []

    async def stall() -> str:
        await trio.sleep(math.inf)
        return "never"

    async def run(ticket: int, source: str) -> None:
        outcomes.append(await door.handshake(ticket, source, stall))

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            ticket = door.admit("10.0.0.1")
            assert ticket is not None
            nursery.start_soon(run, ticket, "10.0.0.1")
        await trio.testing.wait_all_tasks_blocked()
        # Two more strangers: each takes the oldest stranger's slot, the second before the
        # first one's task even ran.
        late = [door.admit("10.0.0.2"), door.admit("10.0.0.2")]
        assert door.gate.strangers == 2
        for ticket in late:
            assert ticket is not None
            nursery.start_soon(run, ticket, "10.0.0.2")
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == [None, None]
        assert refusals.total["handshake_reclaimed"] == 2
        door.seen_member("192.0.2.1")
        for _ in range(3):  # a member takes the two free slots, then the oldest stranger's
            ticket = door.admit("192.0.2.1")
            assert ticket is not None
            nursery.start_soon(run, ticket, "192.0.2.1")
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == [None, None, None]
        assert door.gate.strangers == 1 and door.gate.in_progress == 4
        assert door.admit("10.0.0.3") is None  # members hold the rest
        assert refusals.total["handshake_slots"] == 1
        nursery.cancel_scope.cancel()
    assert door.gate.in_progress == 0
    (limited,) = log_events.matching(event="peer_limited", peer="10.0.0.1")
    assert limited.reason == "handshake_reclaimed"  # once for the address, not per refusal


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    return Mesh(tmp_path)


async def test_refused_connections_close_once_the_backlog_is_empty_or_at_the_bound():
    """The accept loop leaves refused connections open while more wait to be accepted (so a
    member's is reached without waiting for the strangers' closes), never more than the bound,
    and closes them all as soon as none waits."""
    waiting = True
    refused = RefusedConnections(lambda: waiting)
    theirs = []
    for _ in range(MAX_REFUSED_OPEN - 1):
        ours, their_end = trio.testing.memory_stream_pair()
        refused.streams.append(ours)
        theirs.append(their_end)
        await refused.close_unless_more_wait()
    assert len(refused.streams) == MAX_REFUSED_OPEN - 1  # the backlog still had connections
    ours, their_end = trio.testing.memory_stream_pair()
    refused.streams.append(ours)
    theirs.append(their_end)
    await refused.close_unless_more_wait()  # at the bound: all closed, backlog or not
    assert refused.streams == []
    for their_end in theirs:
        with pytest.raises(trio.BrokenResourceError):
            await their_end.send_all(b"x")
    ours, their_end = trio.testing.memory_stream_pair()
    refused.streams.append(ours)
    waiting = False
    await refused.close_unless_more_wait()  # nothing else waits: closed at once
    assert refused.streams == []
    assert await their_end.receive_some() == b""


async def test_stalled_handshakes_from_many_addresses_leave_members_a_slot(mesh, log_events):
    """Eight loopback addresses each keep four connections that never start TLS, reopening
    them as they are closed; a member (its address seen with a valid certificate before) gets
    its handshake at once every time, and no address is logged more than once."""
    transport = TlsTransport(
        mesh.credentials(),
        mesh.ca.trust_anchor(),
        str(mesh.ca_path),
        settings=TlsSettings(
            connect_timeout=5,
            handshake_timeout=5,
            max_concurrent_handshakes=8,
            member_handshakes=4,
            max_handshakes_per_address=4,
            handshake_rate_per_address=1000,
            handshake_burst_per_address=1000,
        ),
    )
    server = Server(transport)
    attackers = [f"127.0.0.{i}" for i in range(2, 10)]
    opened = 0
    with trio.fail_after(DEADLINE * 3):
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.listen, server.handle)
            await assert_serves_a_proper_client(mesh, server)  # 127.0.0.1 is a member's
            host, port = parse_address(server.address)
            flooding = trio.Event()

            async def hold_one(source: str) -> None:
                nonlocal opened
                while True:  # one stalled connection, reopened whenever closed
                    try:
                        stream = await trio.open_tcp_stream(host, port, local_address=source)
                    except OSError:
                        await trio.sleep(0.01)
                        continue
                    opened += 1
                    if opened >= 200:
                        flooding.set()
                    async with stream:
                        try:
                            while await stream.receive_some(1024):
                                pass
                        except trio.BrokenResourceError:
                            pass

            async with trio.open_nursery() as attack:
                for source in attackers:
                    for _ in range(4):
                        attack.start_soon(hold_one, source)
                await flooding.wait()
                for _ in range(5):
                    with trio.fail_after(1):  # far below the 5 s a stalled handshake may hold
                        await assert_serves_a_proper_client(mesh, server)
                    assert transport.handshakes.gate.strangers <= 4
                attack.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    total = transport.refusals.total
    assert total["handshake_reclaimed"] + total["handshakes_per_address"] >= 150
    for source in attackers:
        assert len(log_events.matching(event="peer_limited", peer=source)) <= 1
    assert not log_events.matching(event="peer_limited", peer="127.0.0.1")
