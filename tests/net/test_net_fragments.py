"""Fragments served by nodes, on TLS with the disk store and in memory with the memory store."""

from __future__ import annotations

import hashlib

import pytest
import trio

from p2pstore.errors import IntegrityError, RemoteError
from p2pstore.identity import PeerIdentity
from p2pstore.net.fragments import FragmentService, fetch_fragment, store_fragment
from p2pstore.net.node import Node
from p2pstore.store import DiskFragmentStore, MemoryFragmentStore
from p2pstore.wire import GetFragment, GetFragmentReply, HasFragments, HasFragmentsReply, Message

QUOTA = 64 * 1024


def fragment(text: bytes) -> tuple[bytes, bytes]:
    return hashlib.sha256(text).digest(), text


def serving_node(net, tmp_path):
    credentials = net.credentials()
    node = Node(credentials, net.transport(credentials))
    if net.kind == "tls":
        store = DiskFragmentStore(tmp_path / "fragments", QUOTA)
        service = FragmentService(node, store)
    else:
        store = MemoryFragmentStore(QUOTA)
        service = FragmentService(node, store, in_threads=False)
    return node, service


async def client_node(net, nursery) -> Node:
    credentials = net.credentials()
    client = Node(credentials, net.transport(credentials), listen=False)
    await nursery.start(client.run)
    return client


async def test_a_fragment_stored_on_a_peer_comes_back_verified(net, clock, tmp_path):
    node, service = serving_node(net, tmp_path)
    fragment_id, data = fragment(b"ciphertext block" * 100)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        peer = node.identity.node_id
        await store_fragment(client, peer, node.address, fragment_id, data)
        assert service.store.has(fragment_id)
        assert await fetch_fragment(client, peer, node.address, fragment_id) == data
        other_id, _ = fragment(b"never stored")
        reply = await client.call(
            peer, node.address, HasFragments(fragment_ids=(fragment_id, other_id))
        )
        assert reply == HasFragmentsReply(present=(True, False))
        with pytest.raises(RemoteError) as missing:
            await fetch_fragment(client, peer, node.address, other_id)
        assert missing.value.code == "FragmentNotFound"
        nursery.cancel_scope.cancel()


async def test_a_peer_refuses_bytes_that_do_not_match_their_id_and_stores_nothing(
    net, clock, tmp_path
):
    node, service = serving_node(net, tmp_path)
    fragment_id, _ = fragment(b"the real bytes")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        with pytest.raises(RemoteError) as refused:
            await store_fragment(client, node.identity.node_id, node.address, fragment_id, b"fake")
        assert refused.value.code == "IntegrityError"
        assert not service.store.has(fragment_id)
        nursery.cancel_scope.cancel()


async def test_a_full_peer_refuses_clearly_and_keeps_what_it_has(net, clock, tmp_path):
    node, _service = serving_node(net, tmp_path)
    kept_id, kept = fragment(b"k" * (QUOTA - 100))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        peer = node.identity.node_id
        await store_fragment(client, peer, node.address, kept_id, kept)
        too_big_id, too_big = fragment(b"x" * 1000)
        with pytest.raises(RemoteError) as full:
            await store_fragment(client, peer, node.address, too_big_id, too_big)
        assert full.value.code == "QuotaExceeded"
        assert "quota" in str(full.value)
        assert await fetch_fragment(client, peer, node.address, kept_id) == kept
        nursery.cancel_scope.cancel()


async def test_a_corrupted_fragment_is_never_served(net, clock, tmp_path):
    node, service = serving_node(net, tmp_path)
    fragment_id, data = fragment(b"will rot on disk" * 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        peer = node.identity.node_id
        await store_fragment(client, peer, node.address, fragment_id, data)
        store = service.store
        if isinstance(store, MemoryFragmentStore):
            store.corrupt(fragment_id)
        else:
            path = store.data_dir / "fragments" / fragment_id.hex()[:2] / fragment_id.hex()
            raw = bytearray(path.read_bytes())
            raw[3] ^= 0x40
            path.write_bytes(bytes(raw))
        with pytest.raises(RemoteError) as corrupt:
            await fetch_fragment(client, peer, node.address, fragment_id)
        assert corrupt.value.code == "IntegrityError"
        assert not store.has(fragment_id)  # removed, so its steward can repair it
        nursery.cancel_scope.cancel()


async def test_a_peer_serving_other_bytes_is_caught(net, clock, tmp_path):
    credentials = net.credentials()
    liar = Node(credentials, net.transport(credentials))

    async def lie(peer: PeerIdentity, message: Message) -> Message:
        return GetFragmentReply(data=b"not what you asked for")

    liar.handle(GetFragment, lie)
    fragment_id, _ = fragment(b"the real bytes")
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        client = await client_node(net, nursery)
        with pytest.raises(IntegrityError, match="served bad bytes"):
            await fetch_fragment(client, liar.identity.node_id, liar.address, fragment_id)
        nursery.cancel_scope.cancel()
