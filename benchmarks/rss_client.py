"""One put or one get in a process of its own, reporting that process's peak RSS.

Why a process of its own: ``ru_maxrss`` is a process's high-water mark, so the client measured
must not share its process with the nodes, the benchmark or the file generator.  This script
joins a mesh through one node with a client certificate (a client node: no listening port),
waits until its routing table holds every node, records its peak RSS so far (the baseline:
interpreter, imports, TLS sessions; see :func:`peak_rss_kib` for why not ``ru_maxrss``), runs
the one operation, and prints one JSON line:
``op``, ``bytes``, ``seconds``, ``baseline_rss_kib``, ``peak_rss_kib``, and ``cap`` (put) or the
``sha256`` of what was fetched (get; the plaintext is hashed as it arrives and written nowhere,
so the check needs no disk space).

Used by ``datapath.py --rss`` (the 2 GiB check) and ``tests/cli/test_memory_bound.py``::

  python benchmarks/rss_client.py --key K --cert C --ca CA.crt --bootstrap HOST:PORT --nodes N \\
      put FILE [--rule standard | --rule 3-of-10]
  python benchmarks/rss_client.py ... get CAP

Options ``--chunk-size`` (bytes) and ``--in-flight`` change :class:`ClientSettings`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import resource
import sys
import time
from pathlib import Path

import trio

from p2pstore.codec import ReadCap
from p2pstore.core.rules import DEFAULT_RULE_NAME, SHIPPED_RULES, CodingRule
from p2pstore.errors import PeerUnreachable
from p2pstore.identity import NodeCredentials, TrustAnchor
from p2pstore.net.client import Client, ClientSettings
from p2pstore.net.dht import Dht
from p2pstore.net.node import Node
from p2pstore.net.tls import TlsTransport

JOIN_TIMEOUT = 90.0
POLL_INTERVAL = 0.2


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB.

    Linux's ``VmHWM``, not ``ru_maxrss``: Linux carries a parent's RSS at fork over into the
    child's ``ru_maxrss`` across ``exec``, so a client started by a large process (a test
    process running the nodes) would report the parent's size.  ``VmHWM`` belongs to the
    process's own address space.  Elsewhere, ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def parse_rule(text: str) -> CodingRule:
    """A shipped rule by name (``standard``) or ``K-of-N`` (one fragment per datacenter)."""
    if text in SHIPPED_RULES:
        return SHIPPED_RULES[text]
    match = re.fullmatch(r"(\d+)-of-(\d+)", text)
    if match is None:
        known = ", ".join(sorted(SHIPPED_RULES))
        raise argparse.ArgumentTypeError(f"{text!r}: give a rule name ({known}) or K-of-N")
    k, n = int(match[1]), int(match[2])
    return CodingRule(f"bench-{k}-of-{n}", k=k, n=n, repair_threshold=k)


class MeshClient:
    """A client node and its DHT over mutual TLS; run it, then :meth:`join` the mesh."""

    def __init__(self, credentials: NodeCredentials, ca_certificate: Path) -> None:
        crl = ca_certificate.with_name("crl.pem")
        trust = TrustAnchor.load(ca_certificate, crl if crl.exists() else None)
        transport = TlsTransport(credentials, trust, str(ca_certificate))
        self.node = Node(credentials, transport, listen=False)
        self.dht = Dht(
            self.node,
            lambda: trust,
            rng=random.Random(0),  # bucket-refresh targets, not secrets
            wall_clock=time.time,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The node and the DHT; cancelling this stops both."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.node.run)
            await nursery.start(self.dht.run)
            task_status.started()

    async def join(self, bootstrap: str, nodes: int, timeout: float = JOIN_TIMEOUT) -> None:
        """Join through ``bootstrap`` (retrying while it starts), then look ourselves up until
        the routing table holds ``nodes`` peers.  Raises :class:`trio.TooSlowError` after
        ``timeout`` seconds."""
        deadline = trio.current_time() + timeout
        quiet = logging.getLogger("p2pstore")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "bootstrap peer did not answer" while it starts
        try:
            with trio.fail_at(deadline):
                while True:
                    try:
                        await self.dht.join([bootstrap])
                        break
                    except PeerUnreachable:
                        await trio.sleep(POLL_INTERVAL)  # the node process is still starting
        finally:
            quiet.setLevel(level)
        with trio.fail_at(deadline):
            # Other processes' state: asking again is the only way to see it change.
            while len(self.dht.table.contacts()) < nodes:
                await trio.sleep(POLL_INTERVAL)
                await self.dht.lookup(self.node.identity.node_id)

    def client(self, settings: ClientSettings) -> Client:
        return Client(self.dht, settings=settings)


async def put_file(client: Client, path: Path, rule: CodingRule) -> dict[str, object]:
    size = (await trio.Path(path).stat()).st_size
    with path.open("rb") as source:
        start = time.perf_counter()
        result = await client.put(source, size, rule)
        seconds = time.perf_counter() - start
    return {"bytes": size, "seconds": seconds, "cap": result.read_cap.to_string()}


async def get_hashed(client: Client, cap: ReadCap) -> dict[str, object]:
    digest = hashlib.sha256()
    received = 0

    async def write(data: bytes) -> None:
        nonlocal received
        received += len(data)
        await trio.to_thread.run_sync(digest.update, data)

    start = time.perf_counter()
    await client.get(cap, write)
    seconds = time.perf_counter() - start
    return {"bytes": received, "seconds": seconds, "sha256": digest.hexdigest()}


async def run(args: argparse.Namespace) -> dict[str, object]:
    credentials = NodeCredentials.load(args.key, args.cert)
    mesh = MeshClient(credentials, args.ca)
    settings = ClientSettings(chunk_size=args.chunk_size, chunks_in_flight=args.in_flight)
    async with trio.open_nursery() as nursery:
        await nursery.start(mesh.run)
        await mesh.join(args.bootstrap, args.nodes)
        client = mesh.client(settings)
        baseline = peak_rss_kib()
        if args.op == "put":
            report = await put_file(client, args.file, args.rule)
        else:
            report = await get_hashed(client, ReadCap.parse(args.cap))
        report.update(op=args.op, baseline_rss_kib=baseline, peak_rss_kib=peak_rss_kib())
        await mesh.node.stop()
        nursery.cancel_scope.cancel()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", type=Path, required=True, help="the client's key file")
    parser.add_argument("--cert", type=Path, required=True, help="the client's certificate")
    parser.add_argument("--ca", type=Path, required=True, help="the mesh's ca.crt")
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of one node")
    parser.add_argument("--nodes", type=int, required=True, help="nodes to wait for")
    defaults = ClientSettings()
    parser.add_argument("--chunk-size", type=int, default=defaults.chunk_size)
    parser.add_argument("--in-flight", type=int, default=defaults.chunks_in_flight)
    ops = parser.add_subparsers(dest="op", required=True)
    put = ops.add_parser("put", help="store FILE, print its read cap")
    put.add_argument("file", type=Path)
    put.add_argument("--rule", type=parse_rule, default=SHIPPED_RULES[DEFAULT_RULE_NAME])
    get = ops.add_parser("get", help="fetch CAP, print the sha256 of its bytes")
    get.add_argument("cap")
    args = parser.parse_args()
    report = trio.run(run, args)
    json.dump(report, sys.stdout)
    print(flush=True)


if __name__ == "__main__":
    main()
