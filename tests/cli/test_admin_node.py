"""A running node process, watched from outside: its metrics move after a put and a get, its
health and status say what it holds, ``p2pstore node status`` reads them, and a node restarted
with its bootstrap peer down rejoins through the contacts it saved.  Real processes, sockets and
time; every wait reads the node's log or a real socket under a deadline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_cli_node import DEADLINE, STOP_DEADLINE, in_process_node, node_process

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import DevnetNode, create_mesh, free_loopback_ports
from p2pstore.codec.fragment_ids import fragment_id as fragment_id_of
from p2pstore.net.contact_book import ContactBook
from p2pstore.net.fragments import fetch_fragment, store_fragment

pytestmark = pytest.mark.integration


async def http_get(address: str, path: str) -> tuple[int, bytes]:
    """(status, body) of ``GET path`` on ``address``, read until the server closes."""
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        raw = b""
        while chunk := await stream.receive_some():
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await http_get(address, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def sample(metrics, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def node_status(config: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "p2pstore", "node", "status", "--config", str(config), *extra],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def json_config(member: DevnetNode, **kwargs) -> Path:
    return write_local_node_config(
        member.directory, listen=member.address, log_format="json", **kwargs
    )


async def test_metrics_health_and_status_of_a_running_node_move_with_a_put_and_a_get(tmp_path):
    authority, (first, second), _observer = create_mesh(tmp_path, 2, 2, ("FR-GES", "FR-IDF"))
    assert authority.directory is not None
    admin = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    config = json_config(first, metrics_listen=admin)
    data = b"an encrypted, erasure-coded fragment" * 500
    fragment_id = fragment_id_of(data)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            client = in_process_node(second, authority.directory)
            await nursery.start(client.run)
            async with node_process(config) as daemon:
                listening = await daemon.wait_for_event("admin_listening")
                assert listening["address"] == admin
                await daemon.wait_for_event("joined")  # the first node of a mesh joins alone

                status, body = await http_get(admin, "/health")
                health = json.loads(body)
                assert status == 200, health
                assert (health["joined"], health["store_writable"]) == (True, True)

                before = await scrape(admin)
                assert sample(before, "p2pstore_fragments_stored") == 0
                assert sample(before, "p2pstore_joined") == 1
                assert sample(before, "process_resident_memory_bytes") > 0

                await store_fragment(client, first.node_id, first.address, fragment_id, data)
                assert (
                    await fetch_fragment(client, first.node_id, first.address, fragment_id) == data
                )

                after = await scrape(admin)
                put = {"type": "PutFragment", "outcome": "ok"}
                get = {"type": "GetFragment", "outcome": "ok"}
                assert sample(after, "p2pstore_requests_handled_total", **put) == 1
                assert sample(after, "p2pstore_requests_handled_total", **get) == 1
                assert (
                    sample(after, "p2pstore_request_duration_seconds_count", type="PutFragment")
                    == 1
                )
                assert sample(after, "p2pstore_fragments_stored") == 1
                assert sample(after, "p2pstore_fragment_stored_bytes") == len(data)
                assert sample(after, "p2pstore_fragment_served_bytes_total") == len(data)
                received = "p2pstore_received_bytes_total"
                assert sample(after, received) - sample(before, received) > len(data)
                assert sample(after, "p2pstore_peers_connected", role="node") == 1

                status, body = await http_get(admin, "/status")
                document = json.loads(body)
                assert status == 200
                assert document["node_id"] == first.node_id.hex()
                assert document["store"]["fragments"] == 1
                assert [p["node_id"] for p in document["peers"]] == [second.node_id.hex()]

                shown = await node_status(config)
                assert shown.returncode == 0, shown.stderr
                text = shown.stdout.decode()
                assert first.node_id.hex() in text
                assert f"{first.datacenter}, {first.region}" in text
                assert "1 fragments" in text and "1 nodes connected" in text
                shown = await node_status(config, "--json")
                assert json.loads(shown.stdout)["store"]["bytes_used"] == len(data)

                assert (await http_get(admin, "/nowhere"))[0] == 404
                daemon.process.send_signal(signal.SIGTERM)
                with trio.fail_after(STOP_DEADLINE):
                    assert await daemon.process.wait() == 0
            nursery.cancel_scope.cancel()

    stopped = await node_status(config)
    assert stopped.returncode == 1
    assert f"no node answers on {admin}" in stopped.stderr.decode()


async def test_node_status_says_when_the_endpoint_is_off(tmp_path):
    _authority, (first,), _observer = create_mesh(tmp_path, 1, 1, ("FR-GES",))
    result = await node_status(json_config(first))
    assert result.returncode == 2
    assert "[metrics] listen is not set" in result.stderr.decode()


async def test_a_restarted_node_rejoins_through_saved_contacts_with_its_bootstrap_down(tmp_path):
    _authority, members, _observer = create_mesh(tmp_path, 3, 3, ("FR-GES", "FR-IDF"))
    hub, other, restarted = members
    configs = {m.name: json_config(m, bootstrap_peers=(hub.address,)) for m in members}
    with trio.fail_after(3 * DEADLINE):
        async with (
            node_process(configs[hub.name]) as hub_process,
            node_process(configs[other.name]) as other_process,
        ):
            await hub_process.wait_for_event("joined")
            await other_process.wait_for_event("joined")
            async with node_process(configs[restarted.name]) as first_run:
                await first_run.wait_for_event("joined")
                await first_run.wait_for_event("announced")
                first_run.process.send_signal(signal.SIGTERM)
                with trio.fail_after(STOP_DEADLINE):
                    assert await first_run.process.wait() == 0
            saved = {c.id for c in ContactBook(restarted.directory / "data").load()}
            assert saved == {hub.node_id, other.node_id}

            hub_process.process.send_signal(signal.SIGTERM)  # the bootstrap peer goes down
            with trio.fail_after(STOP_DEADLINE):
                assert await hub_process.process.wait() == 0

            async with node_process(configs[restarted.name]) as second_run:
                loaded = await second_run.wait_for_event("contacts_loaded")
                assert loaded["contacts"] == 2
                await second_run.wait_for_event("bootstrap_failed", remote=hub.address)
                joined = await second_run.wait_for_event("joined")
                assert joined["saved_contacts"] == 1  # the other node; the hub is down
                await second_run.wait_for_event("peer_connected", peer=other.node_id.hex())
                second_run.process.send_signal(signal.SIGTERM)
                with trio.fail_after(STOP_DEADLINE):
                    assert await second_run.process.wait() == 0
            other_process.process.send_signal(signal.SIGTERM)
            with trio.fail_after(STOP_DEADLINE):
                assert await other_process.process.wait() == 0


async def test_a_node_certified_from_its_own_request_warns_before_its_certificate_expires(
    tmp_path,
):
    """The key made on the node (``node init``), its request signed by the CA for 10 days: the
    node runs with it, logs ``certificate_expiring``, exports the seconds left as a metric and
    ``node status`` warns."""
    from cryptography.hazmat.primitives import serialization

    from p2pstore.identity.signing_request import read_request, write_new_identity

    authority, (first, _second), _observer = create_mesh(tmp_path, 2, 2, ("FR-GES", "FR-IDF"))
    for name in ("node.key", "node.crt"):
        (first.directory / name).unlink()
    _key, request_path, node_id = write_new_identity(
        first.directory, "node", datacenter="dc-9", region="FR-GES"
    )
    request = read_request(request_path.read_bytes(), "node.csr")
    certificate = authority.certify(
        request.public_key, "node", datacenter=request.datacenter, region=request.region,
        now=datetime.now(UTC), valid_days=10,
    )  # fmt: skip
    (first.directory / "node.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    admin = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    config = json_config(first, metrics_listen=admin)
    with trio.fail_after(DEADLINE):
        async with node_process(config) as daemon:
            warned = await daemon.wait_for_event("certificate_expiring", certificate="node")
            assert warned["level"] == "warning"
            assert 9.9 < float(warned["days_left"]) <= 10
            assert "p2pstore ca renew" in str(warned["message"])
            await daemon.wait_for_event("admin_listening")
            metrics = await scrape(admin)
            left = sample(metrics, "p2pstore_certificate_expiry_seconds", certificate="node")
            assert 9.9 * 86400 < left <= 10 * 86400
            ca_left = sample(metrics, "p2pstore_certificate_expiry_seconds", certificate="ca")
            assert ca_left > 3000 * 86400
            shown = await node_status(config)
            text = shown.stdout.decode()
            assert node_id.hex() in text
            assert "WARNING: expires in 9." in text or "WARNING: expires in 10.0" in text, text
            daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(STOP_DEADLINE):
                assert await daemon.process.wait() == 0
    # Only the CA's own certificate and the node's are renewed by operators; the CA's is far off.
    assert not [line for line in daemon.lines if '"certificate": "ca"' in line]
