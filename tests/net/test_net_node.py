"""Nodes on both transports: bootstrap, one session per pair, refusals, runtime revocation, stop."""

from __future__ import annotations

import trio
from test_net_transport import HELLO

from p2pstore.net.node import Node, NodeSettings
from p2pstore.net.session import SessionSettings
from p2pstore.wire import Envelope, Kind, StatusReply, StatusRequest, encode_envelope

FAST = NodeSettings(
    session=SessionSettings(hello_timeout=5, request_timeout=5),
    reconnect_initial=0.05,
    reconnect_max=0.5,
)


def make_node(net, *, bootstrap=(), datacenter="dc-1", region="FR-GES", credentials=None):
    credentials = credentials or net.credentials(datacenter, region)
    transport = net.transport(credentials)
    return Node(credentials, transport, bootstrap=tuple(bootstrap), settings=FAST)


async def wait_until(predicate, node: Node) -> None:
    with trio.fail_after(20):
        while not predicate():
            await node.wait_peers_changed()


def seen(node: Node) -> set[bytes]:
    return {view.identity.node_id for view in node.peers()}


async def test_nodes_join_through_bootstrap_and_report_status(net, clock):
    async with trio.open_nursery() as nursery:
        hub = make_node(net, datacenter="dc-1", region="FR-GES")
        await nursery.start(hub.run)
        spokes = [
            make_node(net, bootstrap=[hub.address], datacenter=f"dc-{i + 2}", region="FR-IDF")
            for i in range(3)
        ]
        for spoke in spokes:
            await nursery.start(spoke.run)
        spoke_ids = {s.identity.node_id for s in spokes}
        await wait_until(lambda: seen(hub) == spoke_ids, hub)
        for spoke in spokes:
            await wait_until(lambda s=spoke: seen(s) == {hub.identity.node_id}, spoke)
        reply = await spokes[0].request(hub.identity.node_id, StatusRequest())
        assert isinstance(reply, StatusReply)
        assert reply.node_id == hub.identity.node_id
        assert {(p.node_id, p.datacenter, p.region) for p in reply.peers} == {
            (s.identity.node_id, s.identity.datacenter, "FR-IDF") for s in spokes
        }
        assert {p.address for p in reply.peers} == {s.address for s in spokes}
        nursery.cancel_scope.cancel()


async def test_nodes_bootstrapping_to_each_other_keep_exactly_one_session(net, clock, caplog):
    address_a, address_b = net.reserve_address(), net.reserve_address()
    a_credentials, b_credentials = net.credentials(), net.credentials()
    a = Node(
        a_credentials,
        net.transport(a_credentials, address=address_a),
        bootstrap=(address_b,),
        settings=FAST,
    )
    b = Node(
        b_credentials,
        net.transport(b_credentials, address=address_b),
        bootstrap=(address_a,),
        settings=FAST,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await wait_until(lambda: seen(a) == {b.identity.node_id}, a)
        await wait_until(lambda: seen(b) == {a.identity.node_id}, b)
        # Give a redial loop, if there were one, many backoff periods to show itself.
        await trio.sleep(2)
        assert seen(a) == {b.identity.node_id} and seen(b) == {a.identity.node_id}
        (a_view,), (b_view,) = a.peers(), b.peers()
        assert a_view.outbound != b_view.outbound  # both kept the same connection
        connected = [r for r in caplog.records if getattr(r, "event", None) == "peer_connected"]
        assert len(connected) <= 4, [r.getMessage() for r in connected]
        nursery.cancel_scope.cancel()


async def test_simultaneous_connects_agree_on_one_connection(net, clock):
    async with trio.open_nursery() as nursery:
        a, b = make_node(net), make_node(net)
        await nursery.start(a.run)
        await nursery.start(b.run)
        async with trio.open_nursery() as dials:
            dials.start_soon(a.connect, b.address)
            dials.start_soon(b.connect, a.address)
        await wait_until(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, a)
        await trio.sleep(1)
        (a_view,), (b_view,) = a.peers(), b.peers()
        assert a_view.outbound != b_view.outbound
        nursery.cancel_scope.cancel()


async def test_a_node_survives_a_peer_sending_garbage(net, clock, log_events):
    async with trio.open_nursery() as nursery:
        node = make_node(net)
        await nursery.start(node.run)
        attacker = net.transport()
        link = await attacker.connect(node.address)
        await link.send_frame(encode_envelope(Envelope(Kind.NOTICE, 0, HELLO)))
        await link.send_frame(b"\xc1 definitely not msgpack")
        with trio.fail_after(10):
            record = await log_events.wait_for(event="session_error")
        assert record.error == "RemoteProtocolError"
        friend = make_node(net, bootstrap=[node.address])
        await nursery.start(friend.run)
        await wait_until(lambda: node.identity.node_id in seen(friend), friend)
        reply = await friend.request(node.identity.node_id, StatusRequest())
        assert isinstance(reply, StatusReply)
        await link.aclose()
        nursery.cancel_scope.cancel()


async def test_revoking_a_connected_peer_closes_its_session(net, clock):
    async with trio.open_nursery() as nursery:
        node = make_node(net)
        await nursery.start(node.run)
        bad = make_node(net, bootstrap=[node.address])
        good = make_node(net, bootstrap=[node.address])
        await nursery.start(bad.run)
        await nursery.start(good.run)
        await wait_until(lambda: len(seen(node)) == 2, node)
        net.ca.revoke(bad.identity.serial, now=net.now)
        trust = net.trust()
        node.transport.reload_trust(trust)
        node.apply_trust(trust)
        await wait_until(lambda: seen(node) == {good.identity.node_id}, node)
        # The revoked node keeps redialling and keeps being refused.
        await trio.sleep(1)
        assert seen(node) == {good.identity.node_id}
        nursery.cancel_scope.cancel()


async def test_stop_says_goodbye_to_every_peer(net, clock, caplog):
    async with trio.open_nursery() as nursery:
        leaving = make_node(net)
        await nursery.start(leaving.run)
        staying = make_node(net, bootstrap=[leaving.address])
        await nursery.start(staying.run)
        await wait_until(lambda: len(seen(leaving)) == 1, leaving)
        await leaving.stop()
        await wait_until(lambda: not seen(staying), staying)
        goodbyes = [
            r
            for r in caplog.records
            if getattr(r, "event", None) == "peer_disconnected"
            and "node shutting down" in r.getMessage()
        ]
        assert goodbyes
        nursery.cancel_scope.cancel()


async def test_an_advertised_address_is_logged_beside_the_bound_one(net, clock, caplog):
    """An operator reading ``listening`` sees where the socket is and what peers are told."""
    credentials = net.credentials()
    transport = net.transport(credentials)
    node = Node(credentials, transport, advertise="node1.example.org:7400", settings=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        (record,) = [r for r in caplog.records if getattr(r, "event", None) == "listening"]
        assert record.address == "node1.example.org:7400" == node.address
        assert record.bound == transport.listen_address != node.address
        bound = transport.listen_address
        assert record.getMessage().endswith(
            f"listening on {bound}, advertised to peers as node1.example.org:7400"
        )
        nursery.cancel_scope.cancel()


async def test_a_clients_goodbye_is_logged_as_a_clients(net, clock, log_events):
    """A node's log tells sessions of clients (put/get users) from sessions of peers."""
    from p2pstore.identity import Role

    async with trio.open_nursery() as nursery:
        serving = make_node(net)
        await nursery.start(serving.run)
        credentials = net.credentials(datacenter="office", role=Role.CLIENT)
        user = Node(credentials, net.transport(credentials), listen=False, settings=FAST)
        await nursery.start(user.run)
        await user.connect(serving.address)
        await user.stop()
        record = await log_events.wait_for(
            event="peer_disconnected", peer=credentials.identity.node_id.hex()
        )
        assert record.role == "client"
        assert record.getMessage().startswith("client ")
        nursery.cancel_scope.cancel()
