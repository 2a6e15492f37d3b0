"""What only the in-memory network does: latency, loss, partitions, bandwidth, in virtual time."""

from __future__ import annotations

import random

import pytest
import trio
from test_net_transport import open_session, start_server

from p2pstore.errors import PeerUnreachable, RequestTimeout
from p2pstore.net.memory import Latency, LinkProfile, MemoryNetwork
from p2pstore.wire import Ping, Pong


@pytest.fixture
def net(tmp_path):
    from p2pstore.testing.net_harness import NetHarness

    return NetHarness("memory", tmp_path)


@pytest.fixture
def clock(autojump_clock):
    return autojump_clock


def _pair(net, profile: LinkProfile):
    net.network = MemoryNetwork(random.Random(3), profile, connect_timeout=3.0)
    return net.transport(), net.transport()


async def test_round_trip_takes_twice_the_one_way_latency(net, clock):
    server_transport, client = _pair(net, LinkProfile(latency=Latency.constant(0.040)))
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        session = await open_session(nursery, client, server_transport.listen_address)
        start = trio.current_time()
        await session.request(Ping(nonce=1, padding=b""))
        assert trio.current_time() - start == pytest.approx(0.080)
        nursery.cancel_scope.cancel()


async def test_latency_follows_its_distribution(net, clock):
    server_transport, client = _pair(net, LinkProfile(latency=Latency.uniform(0.010, 0.050)))
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        session = await open_session(nursery, client, server_transport.listen_address)
        rtts = []
        for nonce in range(200):
            start = trio.current_time()
            await session.request(Ping(nonce=nonce, padding=b""))
            rtts.append(trio.current_time() - start)
        assert min(rtts) >= 0.020 and max(rtts) <= 0.100
        assert sum(rtts) / len(rtts) == pytest.approx(0.060, rel=0.1)
        nursery.cancel_scope.cancel()


async def test_frames_are_delivered_in_order_despite_random_latency(net, clock):
    server_transport, client = _pair(net, LinkProfile(latency=Latency.lognormal(0.02, 1.0)))
    received = []
    all_received = trio.Event()

    async def collect(link):
        while (frame := await link.receive_frame()) is not None:
            received.append(frame)
        all_received.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(server_transport.listen, collect)
        link = await client.connect(server_transport.listen_address)
        for i in range(100):
            await link.send_frame(i.to_bytes(2, "big"))
        await link.aclose()
        with trio.fail_after(60):
            await all_received.wait()
        assert received == [i.to_bytes(2, "big") for i in range(100)]
        nursery.cancel_scope.cancel()


async def test_loss_drops_that_share_of_requests(net, clock):
    server_transport, client = _pair(net, LinkProfile(latency=Latency.constant(0.001), loss=0.3))
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        # Hellos can be lost too: retry until one round trip proves both sides greeted.
        while True:
            try:
                session = await open_session(nursery, client, server_transport.listen_address)
                await session.request(Ping(nonce=0, padding=b""), timeout=0.1)
                break
            except PeerUnreachable:
                continue
        answered = 0
        for nonce in range(400):
            try:
                await session.request(Ping(nonce=nonce, padding=b""), timeout=0.1)
                answered += 1
            except RequestTimeout:
                pass
        # Each round trip survives with probability 0.7 * 0.7 = 0.49.
        assert 0.40 < answered / 400 < 0.58
        nursery.cancel_scope.cancel()


async def test_partition_cuts_and_heal_restores(net, clock):
    server_transport, client = _pair(net, LinkProfile(latency=Latency.constant(0.005)))
    network = net.network
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        session = await open_session(nursery, client, server_transport.listen_address)
        network.cut([client.listen_address], [server_transport.listen_address])
        with pytest.raises(RequestTimeout):
            await session.request(Ping(nonce=1, padding=b""), timeout=1)
        start = trio.current_time()
        with pytest.raises(PeerUnreachable):
            await client.connect(server_transport.listen_address)
        assert trio.current_time() - start == pytest.approx(network.connect_timeout)
        network.heal()
        assert await session.request(Ping(nonce=2, padding=b"")) == Pong(nonce=2, received=0)
        nursery.cancel_scope.cancel()


async def test_a_partition_only_cuts_between_its_sides(net, clock):
    network = MemoryNetwork(random.Random(1), LinkProfile(latency=Latency.constant(0.005)))
    net.network = network
    a, b, c = net.transport(), net.transport(), net.transport()
    async with trio.open_nursery() as nursery:
        await start_server(nursery, b)
        network.cut([a.listen_address], [b.listen_address])
        session = await open_session(nursery, c, b.listen_address)
        assert await session.request(Ping(nonce=1, padding=b"")) == Pong(nonce=1, received=0)
        with pytest.raises(PeerUnreachable):
            await a.connect(b.listen_address)
        nursery.cancel_scope.cancel()


async def test_bandwidth_paces_large_frames(net, clock):
    server_transport, client = _pair(
        net, LinkProfile(latency=Latency.constant(0.010), bandwidth=1024 * 1024)
    )
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        session = await open_session(nursery, client, server_transport.listen_address)
        start = trio.current_time()
        reply = await session.request(Ping(nonce=1, padding=bytes(4 * 1024 * 1024)))
        elapsed = trio.current_time() - start
        assert reply == Pong(nonce=1, received=4 * 1024 * 1024)
        # 4 MiB at 1 MiB/s, plus two latencies and a tiny reply.
        assert elapsed == pytest.approx(4.02, rel=0.01)
        nursery.cancel_scope.cancel()


async def test_a_vanished_peer_goes_silent(net, clock):
    server_transport, client = _pair(net, LinkProfile(latency=Latency.constant(0.005)))
    async with trio.open_nursery() as nursery:
        await start_server(nursery, server_transport)
        session = await open_session(nursery, client, server_transport.listen_address)
        net.network.vanish(server_transport.listen_address)
        with pytest.raises(RequestTimeout):
            await session.request(Ping(nonce=1, padding=b""), timeout=2)
        net.network.reappear(server_transport.listen_address)
        assert await session.request(Ping(nonce=2, padding=b"")) == Pong(nonce=2, received=0)
        nursery.cancel_scope.cancel()


def test_latency_parameters_are_checked():
    with pytest.raises(ValueError):
        Latency.uniform(0.5, 0.1)
    with pytest.raises(ValueError):
        LinkProfile(loss=1.5)
    with pytest.raises(ValueError):
        LinkProfile(bandwidth=0)
