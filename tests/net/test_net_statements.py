"""A holder states what it holds: ``StateFragments`` answered with receipts signed by its node
key, on TLS with the disk store and in memory with the memory store."""

from __future__ import annotations

import hashlib

import pytest
import trio
from test_net_fragments import QUOTA, client_node, fragment

from p2pstore.core.holders import Holdings
from p2pstore.core.placement import Candidate
from p2pstore.core.receipts import check_receipt, decode_receipt
from p2pstore.core.steward_round import Said
from p2pstore.errors import NodeLeaving, RemoteError
from p2pstore.net.fragments import FragmentService, store_fragment
from p2pstore.net.node import Node
from p2pstore.net.placements import Ask
from p2pstore.store import DiskFragmentStore, MemoryFragmentStore
from p2pstore.testing.storage_mesh import StorageMesh
from p2pstore.wire import PositionQuery, StateFragments, StateFragmentsReply

OBJECT = hashlib.sha256(b"an object").digest()


def holder(net, tmp_path, wall_clock):
    credentials = net.credentials()
    node = Node(credentials, net.transport(credentials))
    if net.kind == "tls":
        store = DiskFragmentStore(tmp_path / "fragments", QUOTA)
        return node, FragmentService(node, store, wall_clock=wall_clock)
    store = MemoryFragmentStore(QUOTA)
    return node, FragmentService(node, store, in_threads=False, wall_clock=wall_clock)


async def test_a_holder_signs_what_it_holds_and_what_it_does_not(net, clock, tmp_path):
    now = net.now.timestamp()
    node, service = holder(net, tmp_path, lambda: now + trio.current_time())
    kept_id, kept = fragment(b"kept" * 50)
    lost_id, _ = fragment(b"never stored")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        peer = node.identity.node_id
        await store_fragment(client, peer, node.address, kept_id, kept)
        query = PositionQuery(object_id=OBJECT, positions=(7, 2), fragment_ids=(kept_id, lost_id))
        reply = await client.call(peer, node.address, StateFragments(queries=(query,)))
        assert isinstance(reply, StateFragmentsReply)
        assert reply.certificate == node.credentials.certificate_der()
        (raw,) = reply.receipts
        receipt = decode_receipt(raw)
        ids = {7: kept_id, 2: lost_id}
        checked = check_receipt(receipt, node.credentials.certificate, OBJECT, ids.get)
        assert (checked.held, checked.missing) == ((7,), (2,))
        assert receipt.holder == peer and receipt.address == node.address
        assert abs(receipt.issued_ms / 1000 - (now + trio.current_time())) < 5

        for bad in (
            StateFragments(queries=(PositionQuery(OBJECT, (1, 1), (kept_id, lost_id)),)),
            StateFragments(queries=(PositionQuery(OBJECT, (1,), (kept_id, lost_id)),)),
            StateFragments(
                queries=tuple(
                    PositionQuery(OBJECT, tuple(range(i * 600, i * 600 + 600)), (kept_id,) * 600)
                    for i in range(2)
                )
            ),
        ):
            with pytest.raises(RemoteError) as refused:
                await client.call(peer, node.address, bad)
            assert refused.value.code == "RemoteProtocolError"

        service.leaving = True
        with pytest.raises(RemoteError) as leaving:
            await client.call(peer, node.address, StateFragments(queries=(query,)))
        assert leaving.value.code == NodeLeaving.__name__
        nursery.cancel_scope.cancel()


async def test_asking_a_holder_merges_its_checked_receipts(net, clock, tmp_path):
    """What a client, a steward and stat use: the answer is checked against the manifest's
    ids and merged into the object's holdings; a holder that is gone is silent."""
    mesh = StorageMesh(net, 3)
    kept_id, kept = fragment(b"kept" * 50)
    other_id, _ = fragment(b"other")
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        member = mesh.nodes[1]
        await store_fragment(client.node, member.node_id, member.node.address, kept_id, kept)
        candidate = Candidate(member.node_id, member.node.address, member.datacenter, "FR-GES")
        holdings = Holdings(OBJECT, [[kept_id, other_id]])
        answer = await client.ask(candidate, [Ask(holdings, (0, 1))])
        assert answer.said is Said.STATED
        assert answer.held() == {(OBJECT, 0)}
        view = holdings.view(mesh.wall_clock(), mesh.trust)
        assert view.chunks[0][0].node_id == member.node_id and view.chunks[0][1] is None
        mesh.kill(mesh.nodes[2])
        silent = mesh.nodes[2]
        gone = Candidate(silent.node_id, silent.node.address, silent.datacenter, "FR-GES")
        assert (await client.ask(gone, [Ask(holdings, (0,))])).said is Said.SILENT
        nursery.cancel_scope.cancel()
