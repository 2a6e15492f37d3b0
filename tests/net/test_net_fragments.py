"""Fragments served by nodes, on TLS with the disk store and in memory with the memory store."""

from __future__ import annotations

import errno
import os
import threading

import pytest
import trio

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.errors import IntegrityError, RemoteError
from p2pstore.identity import PeerIdentity
from p2pstore.net.fragments import FragmentService, fetch_fragment, store_fragment
from p2pstore.net.node import Node
from p2pstore.store import DiskFragmentStore, MemoryFragmentStore
from p2pstore.store.directory import DataDirectory
from p2pstore.wire import GetFragment, GetFragmentReply, HasFragments, HasFragmentsReply, Message

QUOTA = 64 * 1024


def fragment(text: bytes) -> tuple[bytes, bytes]:
    return fragment_id(text), text


def serving_node(net, tmp_path, identity_quota=QUOTA):
    """A node serving fragments; by default one identity may fill its whole store (the tests
    of the per-identity share set ``identity_quota``)."""
    credentials = net.credentials()
    node = Node(credentials, net.transport(credentials))
    if net.kind == "tls":
        store = DiskFragmentStore(tmp_path / "fragments", QUOTA, identity_quota=identity_quota)
        service = FragmentService(node, store)
    else:
        store = MemoryFragmentStore(QUOTA, identity_quota=identity_quota)
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


async def test_a_peer_whose_disk_refuses_writes_serves_reads_and_says_why(
    net, clock, tmp_path, monkeypatch
):
    """Memory store: a read-only disk (simulated); disk store: ENOSPC where the fragment file is
    written.  Reads and HasFragments go on, puts get a typed refusal naming the cause."""
    node, service = serving_node(net, tmp_path)
    kept_id, kept = fragment(b"kept before the disk filled up" * 20)
    new_id, new = fragment(b"arrives after" * 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        peer = node.identity.node_id
        await store_fragment(client, peer, node.address, kept_id, kept)
        store = service.store
        if isinstance(store, MemoryFragmentStore):
            cause = "Read-only file system"
            store.fail_writes(cause)
        else:
            cause = os.strerror(errno.ENOSPC)

            def disk_full(self, fragment_id, data):
                raise OSError(errno.ENOSPC, cause, str(store.data_dir / "tmp" / "x.part"))

            monkeypatch.setattr(DataDirectory, "write_atomic", disk_full)
        for _ in range(2):  # refusing is not a crash: the node answers the next one the same
            with pytest.raises(RemoteError) as refused:
                await store_fragment(client, peer, node.address, new_id, new)
            assert refused.value.code == "StoreNotWritable"
            assert "store is not writable" in str(refused.value)
            assert cause in str(refused.value) and new_id.hex()[:16] in str(refused.value)
        assert await fetch_fragment(client, peer, node.address, kept_id) == kept
        reply = await client.call(peer, node.address, HasFragments(fragment_ids=(kept_id, new_id)))
        assert reply == HasFragmentsReply(present=(True, False))
        usage = store.usage()
        assert not usage.writable and cause in (usage.write_refusal or "")
        nursery.cancel_scope.cancel()


class GatedStore(MemoryFragmentStore):
    """A store whose puts wait for the test to open the gate (in the store's worker thread)."""

    def __init__(self, quota: int) -> None:
        super().__init__(quota)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def put(self, fragment_id: bytes, data: bytes, uploader: bytes | None = None) -> None:
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise AssertionError("the test never opened the gate")
        super().put(fragment_id, data, uploader)


async def test_drain_finishes_and_answers_accepted_writes_and_refuses_new_ones(net, tmp_path):
    """What SIGTERM does before the goodbyes.  Real time on both networks: the write in flight
    runs in a worker thread, which virtual time would not wait for."""
    credentials = net.credentials()
    node = Node(credentials, net.transport(credentials))
    store = GatedStore(QUOTA)
    service = FragmentService(node, store)
    first_id, first = fragment(b"accepted before the stop" * 10)
    late_id, late = fragment(b"arrives while stopping" * 10)
    stored = trio.Event()
    drained = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            client = await client_node(net, nursery)
            peer = node.identity.node_id

            async def put_first() -> None:
                await store_fragment(client, peer, node.address, first_id, first)
                stored.set()

            async def drain() -> None:
                await service.drain()
                drained.set()

            nursery.start_soon(put_first)
            assert await trio.to_thread.run_sync(store.entered.wait, 30)  # the write is in a thread
            assert service.writes_in_flight == 1
            nursery.start_soon(drain)
            with pytest.raises(RemoteError) as refused:  # while stopping: no new writes...
                await store_fragment(client, peer, node.address, late_id, late)
            assert refused.value.code == "NodeStopping"
            assert "another node" in str(refused.value)
            # ...but reads go on, and the drain waits for the write it accepted.
            reply = await client.call(peer, node.address, HasFragments(fragment_ids=(first_id,)))
            assert reply == HasFragmentsReply(present=(False,))
            assert not drained.is_set() and not stored.is_set()
            store.gate.set()
            await drained.wait()
            assert service.writes_in_flight == 0
            await stored.wait()  # the client got its answer: the fragment is durable
            assert store.get(first_id) == first and not store.has(late_id)
            assert await fetch_fragment(client, peer, node.address, first_id) == first
            nursery.cancel_scope.cancel()
