"""The flood harness's attacker and prober still speak to a real node (``benchmarks/floods.py``).

Benchmarks are not run in CI, so this smoke test keeps their peers from rotting as the node
changes: each attack of ``benchmarks/flood_peers.py``, at a small count for two seconds,
against one node on real sockets (mutual TLS, this process), must get its flood under way and
report what it did; the prober, beside them, must get answers.  What a flood costs the node is
the harness's business, not this test's.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from p2pstore.identity import MeshCA, Role, TrustAnchor
from p2pstore.net.dht import Dht
from p2pstore.net.node import Node
from p2pstore.net.tls import TlsTransport

pytestmark = pytest.mark.integration

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "flood_peers.py"
SMALL_COUNTS = {"ping": 2_000, "handshake": 5, "partial": 2, "findnode": 2_000}
DURATION = 2.0
DEADLINE = 30.0


def lines(output: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]


async def test_every_attack_gets_under_way_and_the_prober_is_answered(tmp_path):
    now = datetime.now(UTC)
    authority = MeshCA.create(tmp_path / "ca", mesh_name="floods", now=now)
    ca = tmp_path / "ca" / "ca.crt"
    trust = TrustAnchor.load(ca, tmp_path / "ca" / "crl.pem")
    credentials = authority.issue(tmp_path, "node", datacenter="dc-1", region="FR-GES", now=now)
    node = Node(credentials, TlsTransport(credentials, trust, str(ca)))
    dht = Dht(node, lambda: trust, rng=random.Random(1), wall_clock=time.time)
    peers = {}
    for name in ("attacker", "prober"):
        issued = authority.issue(
            tmp_path, name, datacenter=name, region="FR-GES", role=Role.CLIENT, now=now
        )
        peers[name] = ["--key", str(issued.key_path), "--cert", str(issued.certificate_path)]
    outputs: dict[str, bytes] = {}

    async def run(name: str, *argv: str) -> None:
        done = await trio.run_process(
            [sys.executable, str(PEERS), *argv],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        outputs[name] = done.stdout

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await nursery.start(dht.run)
            common = ["--target", node.address, "--ca", str(ca), "--duration", str(DURATION)]
            async with trio.open_nursery() as processes:
                for flood, count in SMALL_COUNTS.items():
                    argv = ["attack", flood, *common, *peers["attacker"], "--count", str(count)]
                    argv += ["--source", "127.0.0.2"]  # as floods.py dials: from a host apart
                    processes.start_soon(run, flood, *argv)
                node_id = credentials.identity.node_id.hex()
                argv = ["probe", *common, *peers["prober"], "--node-id", node_id]
                processes.start_soon(run, "prober", *argv)
            nursery.cancel_scope.cancel()

    for flood in SMALL_COUNTS:
        events = lines(outputs[flood])
        assert [e["event"] for e in events] == ["flooding", "done"], (flood, events)
        assert events[1]["opened"] >= 1, (flood, events)
    reports = {flood: lines(outputs[flood])[1] for flood in SMALL_COUNTS}
    assert reports["ping"]["requests_sent"] == SMALL_COUNTS["ping"]
    assert reports["handshake"]["opened"] >= SMALL_COUNTS["handshake"]
    assert reports["partial"]["frames_held"] >= SMALL_COUNTS["partial"]
    assert reports["findnode"]["replies"] > 0
    probes = lines(outputs["prober"])
    answered = {p["kind"] for p in probes if p["ms"] is not None}
    assert answered == {"ping", "find_node", "connect"}, probes[-5:]
