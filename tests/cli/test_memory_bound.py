"""The client's memory does not grow with the object's size ("Bounded everything" in DESIGN.md).

A client in a process of its own -- ``benchmarks/rss_client.py``, the one ``datapath.py --rss``
runs for the 2 GiB check -- puts and gets a 16 MiB and a 128 MiB object through eight storage
nodes on real sockets (mutual TLS, disk stores; the nodes run in this process).  Its peak RSS
(``VmHWM`` of its own address space: ``ru_maxrss`` would inherit this large test process's
size) past the baseline it had once joined must not follow the object's size, and must stay
within a small factor of what the design budgets: ``chunks_in_flight`` chunks of
``chunk_size * n / k`` fragment bytes each.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from p2pstore.core.rules import DEFAULT_RULE_NAME, SHIPPED_RULES
from p2pstore.identity import MeshCA, Role, TrustAnchor
from p2pstore.net.client import ClientSettings
from p2pstore.net.dht import Dht
from p2pstore.net.fragments import FragmentService
from p2pstore.net.node import Node
from p2pstore.net.tls import TlsTransport
from p2pstore.store import DiskFragmentStore

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
CLIENT = Path(__file__).resolve().parents[2] / "benchmarks" / "rss_client.py"
RULE = SHIPPED_RULES[DEFAULT_RULE_NAME]
SETTINGS = ClientSettings()
DESIGN_BUDGET = SETTINGS.chunks_in_flight * SETTINGS.chunk_size * RULE.n // RULE.k
"""What the design says a put or get holds: chunks in flight x their fragment bytes (24 MiB)."""
GROWTH_LIMIT = 5 * DESIGN_BUDGET
"""Room for the copies a transfer makes (the encoded frame beside each fragment, the chunk
being encoded and the one waiting for a worker, received frames beside their decoded
fragments): measured 75-90 MiB for a put and 40-85 MiB for a get at the defaults."""
SMALL, LARGE = 16 * MiB, 128 * MiB
SIZE_DEPENDENCE_LIMIT = (LARGE - SMALL) // 2
"""Memory that followed the object would grow by LARGE - SMALL; allow half of that.  What is
measured: put 63-74 MiB at both sizes; get 42-46 MiB at 16 MiB and 79 MiB at 128 MiB with one
worker thread per core (2 here).  What grows is the allocator's per-thread arenas, not a leak: with
trio's default of up to 40 worker threads a 128 MiB get grew by 100-125 MiB, and with
MALLOC_ARENA_MAX=2 by 76 MiB (``ClientSettings.worker_threads``)."""
DEADLINE = 150.0


class Mesh:
    """``count`` storage nodes over mutual TLS with disk stores, one datacenter each, joined
    through the first; and the files a client process needs to join them."""

    def __init__(self, directory: Path, count: int) -> None:
        now = datetime.now(UTC)
        authority = MeshCA.create(directory / "ca", mesh_name="memory-bound", now=now)
        self.ca_certificate = directory / "ca" / "ca.crt"
        trust = TrustAnchor.load(self.ca_certificate, directory / "ca" / "crl.pem")
        self.nodes: list[tuple[Node, Dht]] = []
        for index in range(count):
            home = directory / f"node-{index}"
            credentials = authority.issue(
                home, "node", datacenter=f"dc-{index}", region="FR-GES", now=now
            )
            node = Node(credentials, TlsTransport(credentials, trust, str(self.ca_certificate)))
            FragmentService(node, DiskFragmentStore(home / "data", 1 << 34))
            dht = Dht(node, lambda: trust, rng=random.Random(index), wall_clock=time.time)
            self.nodes.append((node, dht))
        client = authority.issue(
            directory / "client", "client", datacenter="office", region="FR-GES",
            role=Role.CLIENT, now=now,
        )  # fmt: skip
        self.client_files = (client.key_path, client.certificate_path)

    async def start(self, nursery: trio.Nursery) -> None:
        for node, dht in self.nodes:
            await nursery.start(node.run)
            await nursery.start(dht.run)
        first = self.nodes[0][0].address
        async with trio.open_nursery() as joins:
            for _node, dht in self.nodes[1:]:
                joins.start_soon(dht.join, [first])
        await self.nodes[0][1].join([])

    async def client(self, *command: str) -> dict[str, object]:
        """Run one client process against the mesh; its JSON report."""
        key, certificate = self.client_files
        argv = [
            sys.executable, str(CLIENT),
            "--key", str(key), "--cert", str(certificate), "--ca", str(self.ca_certificate),
            "--bootstrap", self.nodes[0][0].address, "--nodes", str(len(self.nodes)),
            *command,
        ]  # fmt: skip
        done = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        report: dict[str, object] = json.loads(done.stdout)
        return report


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
    return path


def growth(report: dict[str, object]) -> int:
    return int(str(report["peak_rss_kib"])) * 1024 - int(str(report["baseline_rss_kib"])) * 1024


async def test_client_memory_does_not_follow_the_object_size(tmp_path):
    mesh = Mesh(tmp_path, RULE.n)
    growths: dict[tuple[str, int], int] = {}
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            for size in (SMALL, LARGE):
                source = await trio.to_thread.run_sync(
                    random_file, tmp_path / f"object-{size}.bin", size
                )
                put = await mesh.client("put", str(source), "--rule", RULE.name)
                got = await mesh.client("get", str(put["cap"]))
                assert got["bytes"] == size
                digest = await trio.to_thread.run_sync(file_sha256, source)
                assert got["sha256"] == digest
                growths["put", size] = growth(put)
                growths["get", size] = growth(got)
            nursery.cancel_scope.cancel()
    report = {key: f"{value / MiB:.1f} MiB" for key, value in growths.items()}
    print("peak RSS growth of the client process:", report)  # shown with pytest -s
    for op in ("put", "get"):
        small, large = growths[op, SMALL], growths[op, LARGE]
        assert large < GROWTH_LIMIT, report
        assert large - small < SIZE_DEPENDENCE_LIMIT, report


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()
