"""The admin endpoint: its pages, and that no client (garbage, oversized, silent, not reading)
can hurt the node.  Served over trio's in-memory streams under virtual time, plus one real
loopback socket."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.core.audit import WatchedFragment
from p2pstore.core.placement import Candidate
from p2pstore.errors import QuotaExceeded, StoreError
from p2pstore.identity import MeshCA
from p2pstore.net.admin import AdminServer, AdminSettings, node_pages
from p2pstore.net.audits import AuditTarget
from p2pstore.net.dht import Dht
from p2pstore.net.fragments import FragmentService
from p2pstore.net.http import MAX_HEAD_BYTES, Response, parse_request, text_response
from p2pstore.net.memory import MemoryNetwork
from p2pstore.net.metrics import AUDIT_HOLDER_SERIES, NodeMetrics
from p2pstore.net.node import Node
from p2pstore.net.steward import Steward
from p2pstore.store import MemoryFragmentStore
from p2pstore.wire import PROTOCOL_VERSION, AuditProofReply

SETTINGS = AdminSettings(read_timeout=5.0, write_timeout=10.0, max_connections=4)


def pages() -> dict[str, object]:
    def broken() -> Response:
        raise ValueError("a bug in a page")

    def closing() -> Response:
        raise StoreError("the fragment store is closed")

    return {
        "/hello": lambda: text_response(200, "hello"),
        "/broken": broken,
        "/closing": closing,
    }


async def exchange(server: AdminServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on an in-memory connection; the parsed response once the server closes."""
    client, served = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, served)
        await client.send_all(request)
        raw = b""
        while chunk := await client.receive_some():
            raw += chunk
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    return int(status), headers, body


def server(page_table=None) -> AdminServer:
    return AdminServer(page_table or pages(), "127.0.0.1", 0, SETTINGS)


async def test_a_page_is_served_with_its_length_and_the_connection_closes(autojump_clock):
    status, headers, body = await exchange(server(), b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"hello\n")
    assert headers["content-length"] == "6"
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("text/plain")


async def test_head_gets_the_headers_without_the_body(autojump_clock):
    status, headers, body = await exchange(server(), b"HEAD /hello HTTP/1.0\r\n\r\n")
    assert (status, headers["content-length"], body) == (200, "6", b"")


async def test_a_query_string_is_ignored(autojump_clock):
    status, _headers, body = await exchange(server(), b"GET /hello?x=1 HTTP/1.1\r\n\r\n")
    assert (status, body) == (200, b"hello\n")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
        (b"POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /hello HTTP/1.1\r\n\r\n", 405),
        (b"GET /hello HTTP/2.0\r\n\r\n", 400),
        (b"GET hello HTTP/1.1\r\n\r\n", 400),
        (b"get /hello HTTP/1.1\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
        (b"GET /he\x00llo HTTP/1.1\r\n\r\n", 400),
    ],
)
async def test_bad_requests_get_an_error_status(autojump_clock, request_bytes, status):
    got, _headers, body = await exchange(server(), request_bytes)
    assert got == status
    assert body.endswith(b"\n")


async def test_405_says_which_methods_are_allowed(autojump_clock):
    status, headers, _body = await exchange(server(), b"PUT /hello HTTP/1.1\r\n\r\n")
    assert (status, headers["allow"]) == (405, "GET, HEAD")


async def test_404_names_the_pages_there_are(autojump_clock):
    _status, _headers, body = await exchange(server(), b"GET /metricz HTTP/1.1\r\n\r\n")
    assert b"/hello" in body


async def test_an_oversized_request_is_refused_without_reading_it_all(autojump_clock):
    endless = b"GET /hello HTTP/1.1\r\n" + b"X-Padding: " + b"a" * (4 * MAX_HEAD_BYTES)
    client, served = trio.testing.memory_stream_pair()
    counted = CountingStream(served)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server().serve_connection, counted)
        await client.send_all(endless)
        raw = b""
        while chunk := await client.receive_some():
            raw += chunk
    assert parse_response(raw)[0] == 431
    assert counted.received <= MAX_HEAD_BYTES + 1  # it stopped reading at its limit


class CountingStream(trio.abc.Stream):
    """Counts the bytes the server reads."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.received = 0

    async def receive_some(self, max_bytes=None):
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def send_all(self, data):
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self):
        await self.inner.aclose()


async def test_a_head_just_under_the_limit_is_read(autojump_clock):
    padding = MAX_HEAD_BYTES - len(b"GET /hello HTTP/1.1\r\nX: \r\n\r\n")
    request = b"GET /hello HTTP/1.1\r\nX: " + b"a" * padding + b"\r\n\r\n"
    assert len(request) == MAX_HEAD_BYTES
    assert (await exchange(server(), request))[0] == 200
    assert (await exchange(server(), request[:-4] + b"a\r\n\r\n"))[0] == 431


async def test_a_slow_client_is_answered_408_after_the_read_timeout(autojump_clock):
    client, served = trio.testing.memory_stream_pair()
    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server().serve_connection, served)
        await client.send_all(b"GET /hello HT")  # ... and nothing more
        raw = b""
        while chunk := await client.receive_some():
            raw += chunk
    assert parse_response(raw)[0] == 408
    assert SETTINGS.read_timeout <= trio.current_time() - began < SETTINGS.read_timeout + 1


async def test_a_client_that_never_reads_is_dropped_after_the_write_timeout(autojump_clock):
    client, served = trio.testing.lockstep_stream_pair()  # sends block until the peer reads
    began = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server().serve_connection, served)
            await client.send_all(b"GET /hello HTTP/1.1\r\n\r\n")
            # The client now reads nothing; the server gives up on it by itself.
    elapsed = trio.current_time() - began
    assert SETTINGS.write_timeout <= elapsed < SETTINGS.write_timeout + 1


async def test_a_client_that_leaves_early_costs_nothing(autojump_clock):
    client, served = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server().serve_connection, served)
        await client.send_all(b"GET /hel")
        await client.aclose()
    client, served = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server().serve_connection, served)
        await client.aclose()


async def test_a_failing_page_is_answered_not_raised(autojump_clock, caplog):
    status, _headers, body = await exchange(server(), b"GET /closing HTTP/1.1\r\n\r\n")
    assert status == 503
    assert b"the fragment store is closed" in body
    status, _headers, body = await exchange(server(), b"GET /broken HTTP/1.1\r\n\r\n")
    assert status == 500
    assert b"a bug" not in body  # the details go to the log, not to the client
    bugs = [r for r in caplog.records if getattr(r, "event", None) == "internal_error"]
    assert len(bugs) == 1 and "ValueError" in (bugs[0].exc_text or "")
    caplog.records.clear()  # expected here: the autouse check must not fail the test


def test_the_parser_keeps_the_path_and_lowercases_header_names():
    request = parse_request(b"GET /status?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nbody")
    assert (request.method, request.path) == ("GET", "/status")
    assert request.headers == (("host", "a"), ("accept", "*/*"))


# -- the node's pages -------------------------------------------------------------------------


class Fixture:
    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.ca = MeshCA.create_in_memory(mesh_name="test", now=now)
        self.network = MemoryNetwork(random.Random(1))
        self.now = now

    def node(self, name: str, datacenter: str = "dc-1") -> Node:
        credentials = self.ca.issue_in_memory(datacenter=datacenter, region="FR-GES", now=self.now)
        trust = self.ca.trust_anchor()
        return Node(credentials, self.network.transport(name, credentials, trust))

    def dht(self, node: Node) -> Dht:
        trust = self.ca.trust_anchor()
        return Dht(node, lambda: trust, rng=random.Random(2), wall_clock=lambda: 1.8e9)


async def test_status_health_and_metrics_of_a_node(autojump_clock):
    world = Fixture()
    node, other = world.node("a"), world.node("b", datacenter="dc-2")
    dht = world.dht(node)
    store = MemoryFragmentStore(10_000)
    FragmentService(node, store, in_threads=False)
    world.dht(other)
    admin = AdminServer(node_pages(node, dht, store), "127.0.0.1", 0, SETTINGS)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await nursery.start(other.run)

        status, _headers, body = await exchange(admin, b"GET /health HTTP/1.1\r\n\r\n")
        health = json.loads(body)
        assert status == 503
        assert (health["joined"], health["store_writable"]) == (False, True)
        assert "not joined" in health["reason"]

        await dht.join([other.address])
        status, headers, body = await exchange(admin, b"GET /health HTTP/1.1\r\n\r\n")
        assert status == 200 and headers["content-type"] == "application/json"
        health = json.loads(body)
        assert health["joined"] is True and health["reason"] is None
        assert health["peers_connected"] == 1

        status, _headers, body = await exchange(admin, b"GET /status HTTP/1.1\r\n\r\n")
        document = json.loads(body)
        assert status == 200
        assert document["node_id"] == node.identity.node_id.hex()
        assert (document["datacenter"], document["region"]) == ("dc-1", "FR-GES")
        assert document["address"] == "a"
        assert document["joined"] is True
        assert [
            (p["node_id"], p["datacenter"], p["role"], p["wire_version"])
            for p in document["peers"]
        ] == [(other.identity.node_id.hex(), "dc-2", "node", PROTOCOL_VERSION)]
        assert document["routing_table"]["contacts"] == len(dht.table) == 1
        assert document["store"]["fragments"] == 0
        assert document["store"]["quota_bytes"] == 10_000
        assert document["records"] == {"held": 0, "bytes_held": 0, "published": 0}

        status, headers, body = await exchange(admin, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["p2pstore_joined"].samples[0].value == 1
        assert families["p2pstore_peers_known"].samples[0].value == 1
        assert "p2pstore_requests_handled" in families

        nursery.cancel_scope.cancel()


async def test_status_and_metrics_name_the_holders_that_failed_the_stewards_audits(
    autojump_clock,
):
    world = Fixture()
    node = world.node("a")
    dht = world.dht(node)
    steward = Steward(dht, rng=random.Random(5))
    admin = AdminServer(node_pages(node, dht, None, steward.auditor.status), "127.0.0.1", 0)
    liar, honest = b"L" * 20, b"H" * 20
    object_id = b"o" * 32
    targets = [
        AuditTarget(Candidate(h, "x", dc, "FR-GES"), WatchedFragment(h, fid, 100), object_id, p)
        for p, (h, dc, fid) in enumerate([(liar, "dc-9", b"f" * 32), (honest, "dc-2", b"g" * 32)])
    ]
    auditor = steward.auditor
    auditor.watch(targets, 0.0)
    for holder in (liar, honest):
        auditor.planner.hasten(holder, 0.0)
    for challenge in auditor.planner.due(0.0):
        if challenge.holder == liar:
            reply = AuditProofReply(challenge.nonce, b"junk", (), 4)
            evidence = auditor.planner.answered(challenge, reply, None, 1.0)
        else:
            evidence = auditor.planner.answered(challenge, None, ("busy", "later"), 1.0)
        auditor.record(evidence, 1.0, follow_up=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        _status, _headers, body = await exchange(admin, b"GET /status HTTP/1.1\r\n\r\n")
        audits = json.loads(body)["audits"]
        assert [(h["node_id"], h["datacenter"], h["failed"]) for h in audits["holders"]] == [
            (honest.hex(), "dc-2", 1),
            (liar.hex(), "dc-9", 1),
        ]
        failures = audits["recent_failures"]
        assert [(f["holder"], f["verdict"]) for f in failures] == [
            (honest.hex(), "refused"),
            (liar.hex(), "wrong-proof"),
        ]
        assert failures[1]["objects"] == [f"{object_id.hex()}:0"]
        assert failures[1]["answer_sha256"] and failures[1]["datacenter"] == "dc-9"
        _status, _headers, body = await exchange(admin, b"GET /metrics HTTP/1.1\r\n\r\n")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
        }
        outcome = "p2pstore_audits_total"
        assert samples[(outcome, (("outcome", "wrong-proof"),))] == 1
        assert samples[(outcome, (("outcome", "refused"),))] == 1
        assert samples[(outcome, (("outcome", "passed"),))] == 0
        per_holder = "p2pstore_holder_audit_failures_total"
        assert samples[(per_holder, (("datacenter", "dc-9"), ("holder", liar.hex())))] == 1
        nursery.cancel_scope.cancel()
    assert set(steward.evidence.fragments) == {(liar, object_id, 0), (honest, object_id, 1)}


def test_holder_audit_failures_export_at_most_the_worst_holders():
    metrics = NodeMetrics()
    metrics.watch_audits(lambda: [(f"{i:040x}", "dc", i) for i in range(1, 100)])
    families = {
        f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())
    }
    samples = families["p2pstore_holder_audit_failures"].samples
    totals = [s for s in samples if s.name.endswith("_total")]
    assert len(totals) == AUDIT_HOLDER_SERIES
    assert min(s.value for s in totals) == 100 - AUDIT_HOLDER_SERIES


def _fragment(data: bytes) -> tuple[bytes, bytes]:
    return fragment_id(data), data


async def test_health_says_why_when_the_store_refuses_writes(autojump_clock):
    world = Fixture()
    node = world.node("a")
    dht = world.dht(node)
    store = MemoryFragmentStore(10_000)
    admin = AdminServer(node_pages(node, dht, store), "127.0.0.1", 0, SETTINGS)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await dht.join([])  # the first node of a mesh is joined on its own
        assert (await exchange(admin, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200
        store.fail_writes("read-only file system")
        with pytest.raises(StoreError):
            store.put(*_fragment(b"refused"))
        status, _headers, body = await exchange(admin, b"GET /health HTTP/1.1\r\n\r\n")
        health = json.loads(body)
        assert status == 503
        assert health["store_writable"] is False
        assert "read-only file system" in health["reason"]
        assert "read-only file system" in health["write_refusal"]
        nursery.cancel_scope.cancel()


async def test_health_says_when_the_quota_is_full_and_recovers_when_space_is_freed(
    autojump_clock,
):
    world = Fixture()
    node = world.node("a")
    dht = world.dht(node)
    store = MemoryFragmentStore(1000)
    admin = AdminServer(node_pages(node, dht, store), "127.0.0.1", 0, SETTINGS)
    kept_id, kept = _fragment(b"k" * 900)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await dht.join([])
        store.put(kept_id, kept)
        assert (await exchange(admin, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200
        with pytest.raises(QuotaExceeded):
            store.put(*_fragment(b"r" * 200))
        status, _headers, body = await exchange(admin, b"GET /health HTTP/1.1\r\n\r\n")
        health = json.loads(body)
        assert status == 503
        assert (health["joined"], health["store_writable"]) == (True, False)
        assert health["write_refusal"].startswith("quota full: 900 of 1000 bytes used")
        assert "reads are still served" in health["reason"]
        status, _headers, body = await exchange(admin, b"GET /status HTTP/1.1\r\n\r\n")
        shown = json.loads(body)["store"]
        assert (shown["writable"], shown["quota_full"]) == (True, True)  # the disk is fine
        assert shown["write_refusal"] == health["write_refusal"]
        store.delete(kept_id)
        status, _headers, body = await exchange(admin, b"GET /health HTTP/1.1\r\n\r\n")
        assert status == 200 and json.loads(body)["write_refusal"] is None
        nursery.cancel_scope.cancel()


async def test_the_server_answers_on_a_real_loopback_socket():
    admin = AdminServer(pages(), "127.0.0.1", 0, AdminSettings(read_timeout=5, write_timeout=5))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(admin.run)
            host, _, port = admin.listen_address.rpartition(":")
            assert int(port) > 0
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            raw = b""
            while chunk := await stream.receive_some():
                raw += chunk
            await stream.aclose()
            assert parse_response(raw)[:1] == (200,)
            nursery.cancel_scope.cancel()
