"""Renewal without a restart, on a node process: ``ca renew`` (same key), the new certificate
installed in place of the old one, SIGHUP; new sessions see it, the expiry metric and ``node
status`` follow, and the process never stopped.  A certificate of another key is refused."""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from test_admin_node import json_config, node_status, sample, scrape
from test_cli_node import DEADLINE, STOP_DEADLINE, in_process_node, node_process

from p2pstore.cli.local_mesh import create_mesh, free_loopback_ports
from p2pstore.identity.certificates import load_certificate
from p2pstore.identity.signing_request import renew_certificate

pytestmark = pytest.mark.integration


async def serial_presented(client, address: str) -> int:
    """The serial of the certificate the node at ``address`` presents to a new session."""
    link = await client.transport.connect(address)
    try:
        return link.peer.serial
    finally:
        await link.aclose()


async def test_sighup_takes_a_renewed_certificate_without_a_restart(tmp_path):
    authority, (first, second), _observer = create_mesh(tmp_path, 2, 2, ("FR-GES", "FR-IDF"))
    crt = first.directory / "node.crt"
    short = renew_certificate(
        authority, load_certificate(crt), now=datetime.now(UTC), valid_days=10
    )  # a certificate near its end, as after a year of service
    crt.write_bytes(short.public_bytes(serialization.Encoding.PEM))
    admin = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    config = json_config(first, metrics_listen=admin)
    with trio.fail_after(DEADLINE):
        async with node_process(config) as daemon:
            pid = daemon.process.pid
            await daemon.wait_for_event("certificate_expiring", certificate="node")
            await daemon.wait_for_event("admin_listening")
            client = in_process_node(second, authority.directory)
            assert await serial_presented(client, first.address) == short.serial_number

            # On the CA machine: renew the same key; on the node: install it, reload.
            renewed_path = tmp_path / "node.renewed.crt"
            await trio.run_process(
                [sys.executable, "-m", "p2pstore", "ca", "renew", str(authority.directory),
                 str(crt), "--out", str(renewed_path)],
                capture_stdout=True,
            )  # fmt: skip
            os.replace(renewed_path, crt)
            daemon.process.send_signal(signal.SIGHUP)
            reloaded = await daemon.wait_for_event("certificate_reloaded")
            new_serial = load_certificate(crt).serial_number
            assert reloaded["serial"] == str(new_serial) != str(short.serial_number)
            assert await serial_presented(client, first.address) == new_serial

            left = sample(await scrape(admin), "p2pstore_certificate_expiry_seconds",
                          certificate="node")  # fmt: skip
            assert left > 360 * 86400
            shown = (await node_status(config)).stdout.decode()
            assert "WARNING: expires" not in shown, shown
            assert first.node_id.hex() in shown  # the same node

            # A certificate of another key in its place: refused, the renewed one kept.
            other = tmp_path / "other"
            stranger = authority.issue(other, "x", datacenter=first.datacenter,
                                       region=first.region, now=datetime.now(UTC))  # fmt: skip
            crt.write_bytes(stranger.certificate_pem())
            daemon.process.send_signal(signal.SIGHUP)
            failed = await daemon.wait_for_event("certificate_reload_failed")
            assert "does not match the certificate" in str(failed["message"])
            assert await serial_presented(client, first.address) == new_serial

            daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(STOP_DEADLINE):
                assert await daemon.process.wait() == 0
            assert daemon.process.pid == pid
    events = [line for line in daemon.lines if '"event": "starting"' in line]
    assert len(events) == 1  # one start: the renewal needed no restart
