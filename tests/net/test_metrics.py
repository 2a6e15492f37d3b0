"""Node metrics: fragment traffic, sessions and the DHT move them, each node on its own registry."""

from __future__ import annotations

import prometheus_client
import pytest
import trio

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.errors import RemoteError
from p2pstore.identity import PeerIdentity, Role
from p2pstore.net.fragments import FragmentService, fetch_fragment, store_fragment
from p2pstore.net.metrics import NodeMetrics, bounded_code
from p2pstore.net.node import Node
from p2pstore.net.scrubber import Scrubber, ScrubSettings
from p2pstore.store import DiskFragmentStore, MemoryFragmentStore, ScrubReport
from p2pstore.testing.dht_mesh import DhtMesh
from p2pstore.wire import ErrorReply, HasFragments, Message

QUOTA = 64 * 1024


def fragment(text: bytes) -> tuple[bytes, bytes]:
    return fragment_id(text), text


def serving_node(net, tmp_path) -> tuple[Node, FragmentService]:
    credentials = net.credentials()
    node = Node(credentials, net.transport(credentials))
    if net.kind == "tls":
        return node, FragmentService(node, DiskFragmentStore(tmp_path / "fragments", QUOTA))
    return node, FragmentService(node, MemoryFragmentStore(QUOTA), in_threads=False)


async def client_node(net, nursery) -> Node:
    credentials = net.credentials(role=Role.CLIENT)
    client = Node(credentials, net.transport(credentials), listen=False)
    await nursery.start(client.run)
    return client


def handled(node: Node, kind: str, outcome: str = "ok") -> float:
    return node.metrics.value("p2pstore_requests_handled_total", type=kind, outcome=outcome)


def sent(node: Node, kind: str, outcome: str = "ok") -> float:
    return node.metrics.value("p2pstore_requests_sent_total", type=kind, outcome=outcome)


async def test_fragment_puts_and_gets_move_the_counters(net, clock, tmp_path):
    node, service = serving_node(net, tmp_path)
    fragment_id, data = fragment(b"ciphertext block" * 200)
    metrics = node.metrics
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        peer = node.identity.node_id
        assert metrics.value("p2pstore_fragments_stored") == 0
        assert metrics.value("p2pstore_store_quota_bytes") == QUOTA

        await store_fragment(client, peer, node.address, fragment_id, data)
        assert handled(node, "PutFragment") == 1
        assert sent(client, "PutFragment") == 1
        assert metrics.value("p2pstore_request_duration_seconds_count", type="PutFragment") == 1
        assert metrics.value("p2pstore_fragment_written_bytes_total") == len(data)
        assert metrics.value("p2pstore_fragments_stored") == 1
        assert metrics.value("p2pstore_fragment_stored_bytes") == len(data)
        assert metrics.value("p2pstore_store_quota_used_ratio") == pytest.approx(len(data) / QUOTA)
        assert metrics.value("p2pstore_store_writable") == 1
        assert metrics.value("p2pstore_peers_connected", role="client") == 1
        assert metrics.value("p2pstore_peers_connected", role="node") == 0
        assert metrics.value("p2pstore_received_bytes_total") > len(data)

        assert await fetch_fragment(client, peer, node.address, fragment_id) == data
        assert handled(node, "GetFragment") == 1
        assert metrics.value("p2pstore_fragment_served_bytes_total") == len(data)
        assert metrics.value("p2pstore_sent_bytes_total") > len(data)
        # Every frame one side sent, the other received (counted at the same layer).
        assert metrics.value("p2pstore_received_bytes_total") == client.metrics.value(
            "p2pstore_sent_bytes_total"
        )
        assert metrics.value("p2pstore_sent_bytes_total") == client.metrics.value(
            "p2pstore_received_bytes_total"
        )

        missing_id, _ = fragment(b"never stored")
        with pytest.raises(RemoteError):
            await fetch_fragment(client, peer, node.address, missing_id)
        assert handled(node, "GetFragment", "FragmentNotFound") == 1
        assert sent(client, "GetFragment", "FragmentNotFound") == 1
        assert handled(node, "GetFragment") == 1  # the failure is not counted as a success
        nursery.cancel_scope.cancel()
    assert service.store.has(fragment_id)


async def test_corrupt_fragments_found_by_reads_are_counted(net, clock, tmp_path):
    node, service = serving_node(net, tmp_path)
    fragment_id, data = fragment(b"will rot" * 50)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await client_node(net, nursery)
        peer = node.identity.node_id
        await store_fragment(client, peer, node.address, fragment_id, data)
        assert node.metrics.value("p2pstore_corrupt_fragments_found_total") == 0
        store = service.store
        if isinstance(store, MemoryFragmentStore):
            store.corrupt(fragment_id)
        else:
            path = store.data_dir / "fragments" / fragment_id.hex()[:2] / fragment_id.hex()
            path.write_bytes(b"rotten" + path.read_bytes()[6:])
        with pytest.raises(RemoteError):
            await fetch_fragment(client, peer, node.address, fragment_id)
        assert node.metrics.value("p2pstore_corrupt_fragments_found_total") == 1
        assert handled(node, "GetFragment", "IntegrityError") == 1
        assert node.metrics.value("p2pstore_fragments_stored") == 0
        nursery.cancel_scope.cancel()


async def test_a_peer_cannot_invent_label_values(net, clock):
    """Error codes come from the peer: one it made up is counted as ``other``, so a hostile
    peer cannot grow the number of time series without bound."""
    credentials = net.credentials()
    liar = Node(credentials, net.transport(credentials))

    async def refuse(peer: PeerIdentity, message: Message) -> Message:
        return ErrorReply(code="made-up-" + message.__class__.__name__, message="no")

    liar.handle(HasFragments, refuse)
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        client = await client_node(net, nursery)
        with pytest.raises(RemoteError):
            await client.call(
                liar.identity.node_id, liar.address, HasFragments(fragment_ids=(b"\x01" * 32,))
            )
        assert sent(client, "HasFragments", "other") == 1
        nursery.cancel_scope.cancel()


def test_error_codes_are_kept_only_when_p2pstore_could_have_sent_them():
    assert bounded_code("FragmentNotFound") == "FragmentNotFound"
    assert bounded_code("QuotaExceeded") == "QuotaExceeded"
    assert bounded_code("busy") == "busy"
    assert bounded_code("x" * 500) == "other"
    assert bounded_code("") == "other"


def test_each_node_counts_on_its_own_registry():
    first, second = NodeMetrics(), NodeMetrics()
    first.record_request("Ping", "ok", 0.001)
    assert first.value("p2pstore_requests_handled_total", type="Ping", outcome="ok") == 1
    assert second.value("p2pstore_requests_handled_total", type="Ping", outcome="ok") == 0
    default = prometheus_client.REGISTRY.get_sample_value(
        "p2pstore_requests_handled_total", {"type": "Ping", "outcome": "ok"}
    )
    assert default is None
    assert b"p2pstore_requests_handled_total" in first.exposition()


def test_scrub_batches_move_progress_and_passes():
    metrics = NodeMetrics()
    halfway = b"\x80" + b"\x00" * 31
    metrics.observe_scrub(ScrubReport(3, 300, (), halfway))
    assert metrics.value("p2pstore_scrub_progress") == pytest.approx(0.5)
    assert metrics.value("p2pstore_scrub_passes_total") == 0
    metrics.observe_scrub(ScrubReport(2, 200, (), None))
    assert metrics.value("p2pstore_scrub_progress") == 1.0
    assert metrics.value("p2pstore_scrub_passes_total") == 1
    assert metrics.value("p2pstore_scrub_checked_fragments_total") == 5
    assert metrics.value("p2pstore_scrub_checked_bytes_total") == 500


async def test_the_dht_reports_its_table_records_and_join(autojump_clock):
    mesh = DhtMesh(8, seed=3)
    first = mesh.members[0]
    assert first.node.metrics.value("p2pstore_joined") == 0
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            for member in mesh.members:
                metrics = member.node.metrics
                assert metrics.value("p2pstore_joined") == 1
                assert metrics.value("p2pstore_peers_known") == len(member.dht.table) >= 1
            assert sum(m.node.metrics.value("p2pstore_records_held") for m in mesh.members) == 0
            stored_on = await first.dht.announce(free_bytes=10**9)
            assert stored_on >= 1
            held = [m.node.metrics.value("p2pstore_records_held") for m in mesh.members]
            assert sum(held) == stored_on
            assert sum(m.node.metrics.value("p2pstore_record_held_bytes") for m in mesh.members) > 0
            assert sent(first.node, "Store") == stored_on
            nursery.cancel_scope.cancel()


async def test_the_scrubber_finds_rot_nobody_asked_for_and_counts_its_passes(
    autojump_clock, log_events
):
    store = MemoryFragmentStore(10**6)
    ids = []
    for index in range(6):
        fragment_id, data = fragment(b"block %d " % index * 1000)
        store.put(fragment_id, data)
        ids.append(fragment_id)
    rotten = sorted(ids)[4]
    store.corrupt(rotten)
    metrics = NodeMetrics()
    metrics.watch_store(store.usage)
    settings = ScrubSettings(batch_bytes=2 * 8000, interval=30.0)
    scrubber = Scrubber(store, metrics, settings, in_threads=False)
    began = trio.current_time()
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(scrubber.run)
            found = await log_events.wait_for(event="fragment_corrupt")
            assert found.fragment == rotten.hex()
            await log_events.wait_for(event="scrub_pass_done")
            nursery.cancel_scope.cancel()
    # 6 fragments of about 8 KB, 2 per batch: three batches, one every 30 s.
    assert trio.current_time() - began == pytest.approx(90.0)
    assert metrics.value("p2pstore_scrub_passes_total") == 1
    assert metrics.value("p2pstore_scrub_checked_fragments_total") == 6
    assert metrics.value("p2pstore_corrupt_fragments_found_total") == 1
    assert metrics.value("p2pstore_fragments_stored") == 5
    assert not store.has(rotten)


def test_repair_series_are_exported_at_zero_before_the_first_repair():
    """An alert on rate(p2pstore_repairs_total{outcome="failed"}) needs the series to exist."""
    metrics = NodeMetrics()
    sample = metrics.registry.get_sample_value  # None when the series does not exist
    for outcome in ("started", "finished", "failed"):
        assert sample("p2pstore_repairs_total", {"outcome": outcome}) == 0.0
    for direction in ("read", "written"):
        assert sample("p2pstore_repair_bytes_total", {"direction": direction}) == 0.0
    metrics.record_repair("failed")
    assert metrics.value("p2pstore_repairs_total", outcome="failed") == 1
