"""Repair on real node processes: what the stewards read and write per rebuilt fragment, and how
long the mesh takes from noticing a loss to full redundancy, beside the machine's own ceiling.

Why: a repair can never read less than zfec needs (k survivors per rebuilt chunk) nor rebuild
faster than one core decodes, re-encodes and hashes; its figures mean something only next to
those floors, measured on the same machine in the same run.

Setup of every run (a fresh mesh each time): the devnet's ``create_mesh`` (a throw-away mesh
CA; one datacenter per node, all in FR-GES), ``--nodes`` processes of ``p2pstore node run``
(mutual TLS on loopback, fragments fsynced to each node's own store, JSON logs, the admin
endpoint on loopback) whose node.toml declares ``[repair] check_interval`` and the rule
``[rules.standard] k = 4, n = 8, repair_threshold = 6, grace_period = --grace``; this process
is a client node that puts a ``--size`` object of random bytes under that rule and then makes
every chunk lose exactly n - k = 4 fragments:

- ``kill``: the object is put while only 8 nodes run, so every chunk lies on those 8; then the
  spares start (12 nodes: 12 datacenters), and once every node knows every other one, the 4
  holders farthest (XOR) from the object's key are SIGKILLed together -- the farthest so that the
  steward, the live node closest to the key, survives and the figure is the repair's, not a
  steward hand-over's.  The steward counts a silent holder's fragments lost once it has been
  silent for the grace period.
- ``delete``: 12 nodes from the start; per chunk, 4 holders other than the steward lose their
  fragment of it: its file is deleted under the running node, and this process then asks that
  node for the fragment (``GetFragment``), so the node finds the file gone and drops it from its
  index -- as it would when serving a read or scrubbing.  A file deleted without that read is
  not reported missing: ``StateFragments`` asks the store's index, not the disk.  The next check
  hears "missing" and repairs without waiting for any grace period.

Aligned losses: a steward round asks the holders one after another (paced at
``queries_per_second``), a holder's silence starts when *its* question fails, and a round judges
every holder at one instant.  So holders that die together are lost together only if the round
that first misses them misses them all -- by default the benchmark strikes just after a round
has asked all of them (it watches their ``StateFragments`` request counters; ``--no-align``
strikes at once) -- and if no later round judges between their grace expiries, which lie as far
apart as their questions did (0.15-0.6 s here).  Rounds come every check interval plus the
round's own duration (2.0-3.0 s apart here, with the machine's load), so a grace of a few
periods splits the loss whenever it falls that close after a multiple of the period: seen with
a grace of 5 s and rounds 2.4 s apart, not with 5 s and 2.0 s, nor with 6 s and 2.4-2.55 s.  A
grace shorter than one period minus that spread (the default, 1 s) makes every holder lost at
the second round after the loss, whatever the period.  A split loss is repaired in part -- a
repair rebuilds the lost shares, never a silent one -- and the chunk, left at n - 1 live
fragments and so at or above the threshold of 6, is never topped up: the table's ``<n`` column
counts such chunks.

Figures: bytes read and written by repair are the nodes' ``p2pstore_repair_bytes_total``
counters (summed over the live nodes' ``/metrics``); fragments rebuilt are the (chunk, share)
slots whose holder changed between the placement before the loss and after.  zfec's floor: a
chunk rebuild reads k survivors whatever the number of shares it rebuilds, so a repair that
rebuilds r shares of a chunk at once reads at least k/r fragments per rebuilt fragment (k for a
lone fragment), and writes one.  Times: "loss" is the SIGKILL, or the moment every holder has
found its fragments gone; "noticed" is the first poll of ``/metrics`` (every ``--poll`` s on
the nodes that may be the steward) that shows a repair started, i.e. the first steward round
that sees the loss and acts on it; "full" is the last ``placement_published`` event in the
nodes' JSON logs once ``Client.stat`` confirms every chunk back to n live fragments.  The repair
rate is the MiB of rebuilt fragments over noticed -> full; its ceiling is
``p2pstore.codec.repair.rebuild_fragments`` (SHA-256 of the k survivors, zfec decode, zfec
encode of the lost shares, SHA-256 of the rebuilt fragments) on an in-memory chunk, in one
thread, over the very same (survivors, lost shares) patterns as the run, measured once the
repair is over and the mesh idle; SHA-256 of 1 MiB blocks is printed beside it.

Run: ``python benchmarks/repair.py`` (both modes, 1 run each; about 1 min on 2 cores),
``--runs 3`` (medians of 3), ``--mode kill``, ``--size 16MiB``, ``--json``, ``--keep`` (keep
each mesh's directory: logs and stores).  POSIX only (node processes are stopped by signals).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import trio
from datapath import Interrupted, check_disk, parse_size, write_random_file
from prometheus_client.parser import text_string_to_metric_families
from rss_client import MeshClient

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.devnet import run_node_process
from p2pstore.cli.local_mesh import DevnetNode, create_mesh, free_loopback_ports
from p2pstore.codec import ObjectEncoder, ReadCap, rebuild_fragments
from p2pstore.codec.fragments import HEADER_BYTES
from p2pstore.core.placement_view import Placement
from p2pstore.core.records import manifest_key
from p2pstore.core.rules import CodingRule
from p2pstore.errors import P2PStoreError
from p2pstore.identity import NodeCredentials
from p2pstore.net.client import Client, ClientSettings
from p2pstore.net.status import ObjectStatus
from p2pstore.net.steward import StewardSettings

MiB = 1024 * 1024
REGION = "FR-GES"
RULE_NAME = "standard"
K, N, THRESHOLD = 4, 8, 6
MODES = ("kill", "delete")
READY_TIMEOUT = 120.0
HTTP_TIMEOUT = 5.0
ALIGN_POLL = 0.05
ALIGN_SETTLE = 0.3
"""Seconds between the last watched holder being asked and the loss: the round's remaining
questions go to other holders, and the next round starts a whole check interval later."""
FULL_POLL = 1.0
"""Seconds between polls of every node's counters (the likely stewards: every ``--poll``)."""
STAT_FALLBACK = 10.0
"""Seconds between Client.stat checks while the repair counters have not reached every chunk."""
CEILING_PASSES = 3
REPAIR_EVENTS = ("repair_failed", "fragment_store_failed", "unknown_rule")


# --- node processes -------------------------------------------------------------------------


@dataclass
class Member:
    """One node of the mesh: its devnet layout and its admin endpoint."""

    node: DevnetNode
    admin: str
    running: bool = False

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def log(self) -> Path:
        return self.node.directory / "node.log"


@dataclass
class Mesh:
    """The node processes of one run, started in ``nursery``."""

    directory: Path
    members: list[Member]
    nursery: trio.Nursery

    def running(self) -> list[Member]:
        return [m for m in self.members if m.running]

    async def start(self, members: Sequence[Member]) -> None:
        for member in members:
            member.node.process = await self.nursery.start(run_node_process, member.node)
            member.running = True

    def kill(self, members: Sequence[Member]) -> None:
        """SIGKILL: no goodbye, no saved state -- a datacenter gone at once."""
        for member in members:
            assert member.node.process is not None
            member.node.process.kill()
            member.running = False

    def check_alive(self) -> None:
        """RuntimeError naming the log of any node process that exited unasked."""
        for member in self.running():
            process = member.node.process
            if process is not None and process.returncode is not None:
                raise RuntimeError(
                    f"{member.name} exited with code {process.returncode}; see {member.log}"
                )

    def client(self) -> MeshClient:
        """This process as a client node of the mesh (the devnet's client certificate)."""
        folder = self.directory / "client"
        credentials = NodeCredentials.load(folder / "client.key", folder / "client.crt")
        return MeshClient(credentials, self.directory / "ca" / "ca.crt")


def prepare(directory: Path, nodes: int, rule: CodingRule, check_interval: float) -> list[Member]:
    """CA, identities and node.toml files (JSON logs, admin endpoint, the rule, the check
    interval) for ``nodes`` nodes in as many datacenters."""
    _authority, devnet_nodes, _client = create_mesh(directory, nodes, nodes, (REGION,))
    taken = {node.address for node in devnet_nodes}  # free again now: do not hand them out twice
    admin_ports = [p for p in free_loopback_ports(2 * nodes) if f"127.0.0.1:{p}" not in taken]
    members = []
    for node, port in zip(devnet_nodes, admin_ports[:nodes], strict=True):
        others = () if node is devnet_nodes[0] else (devnet_nodes[0].address,)
        member = Member(node, f"127.0.0.1:{port}")
        write_local_node_config(
            node.directory,
            listen=node.address,
            bootstrap_peers=others,
            log_format="json",
            metrics_listen=member.admin,
            rules={rule.name: rule},
            repair_check_interval=check_interval,
        )
        members.append(member)
    return members


# --- the admin endpoint ---------------------------------------------------------------------


async def http_get(address: str, path: str) -> bytes | None:
    """The body of ``GET path`` on a node's admin endpoint, or None if it does not answer 200
    (a node that is gone)."""
    host, port = address.rsplit(":", 1)
    request = f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
    received = bytearray()
    with trio.move_on_after(HTTP_TIMEOUT):
        try:
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(request)
                while data := await stream.receive_some(1 << 16):
                    received += data
        except (OSError, trio.BrokenResourceError):
            return None
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        return body if head.split(b" ", 2)[1:2] == [b"200"] else None
    return None


COUNTERS = {
    # (sample, label, label value) -> our name; samples of one name are summed
    ("p2pstore_repairs_total", "outcome", "started"): "started",
    ("p2pstore_repairs_total", "outcome", "finished"): "finished",
    ("p2pstore_repairs_total", "outcome", "failed"): "failed",
    ("p2pstore_repair_bytes_total", "direction", "read"): "read",
    ("p2pstore_repair_bytes_total", "direction", "written"): "written",
    ("p2pstore_requests_handled_total", "type", "StateFragments"): "asked",
}
Counters = dict[str, dict[str, float]]
"""Counters by node name, then by our name."""


async def node_counters(member: Member) -> dict[str, float] | None:
    """The counters of :data:`COUNTERS` from a node's /metrics, or None if it does not answer."""
    body = await http_get(member.admin, "/metrics")
    if body is None:
        return None
    counters = dict.fromkeys(COUNTERS.values(), 0.0)
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            for (name, label, value), ours in COUNTERS.items():
                if sample.name == name and sample.labels.get(label) == value:
                    counters[ours] += sample.value
    return counters


async def counters_by_node(members: Sequence[Member]) -> Counters:
    """The counters of every member that answers, by node name."""
    found: Counters = {}

    async def ask(member: Member) -> None:
        counters = await node_counters(member)
        if counters is not None:
            found[member.name] = counters

    async with trio.open_nursery() as nursery:
        for member in members:
            nursery.start_soon(ask, member)
    return found


def growth(now: Counters, baseline: Counters, name: str) -> float:
    """How much counter ``name`` grew since ``baseline``, summed over the nodes of ``now``."""
    return sum(c[name] - baseline.get(node, {}).get(name, 0.0) for node, c in now.items())


async def wait_connected(mesh: Mesh, members: Sequence[Member], contacts: int) -> None:
    """Until every member's /health says it joined and knows ``contacts`` peers."""
    with trio.fail_after(READY_TIMEOUT):
        for member in members:
            while True:
                mesh.check_alive()
                body = await http_get(member.admin, "/health")
                if body is not None:
                    health = json.loads(body)
                    if health["joined"] and health["contacts"] >= contacts:
                        break
                await trio.sleep(0.3)


@dataclass(frozen=True)
class Alignment:
    """How a loss was timed against the steward's rounds."""

    aligned: bool
    """The loss came just after a round had asked every holder about to lose fragments."""
    period: float | None = None
    """Seconds between the last two rounds' first questions to those holders."""
    spread: float | None = None
    """Seconds between the round's first and last question to those holders."""


async def round_asking(
    members: Sequence[Member], check_interval: float
) -> tuple[float, float] | None:
    """Wait for a steward round that asks every one of ``members`` about its fragments (each
    one's ``StateFragments`` counter grows, all within half a check interval); (when it asked
    the first, when the last), or None if a round began before we looked."""
    start = await counters_by_node(members)
    asked_at: dict[str, float] = {}
    while len(asked_at) < len(members):
        await trio.sleep(ALIGN_POLL)
        now = await counters_by_node(members)
        for name, counters in now.items():
            if name not in asked_at and counters["asked"] > start[name]["asked"]:
                asked_at[name] = time.monotonic()
        if asked_at and time.monotonic() - min(asked_at.values()) > check_interval / 2:
            return None
    return min(asked_at.values()), max(asked_at.values())


async def just_after_round(members: Sequence[Member], check_interval: float) -> Alignment:
    """Return just after a steward round has asked every one of ``members`` about its
    fragments, so that a loss now is seen whole by the next round; also measures the rounds'
    period on the way.  Not aligned if no such round came within ten check intervals."""
    rounds: list[tuple[float, float]] = []
    with trio.move_on_after(10 * check_interval + READY_TIMEOUT / 10):
        while len(rounds) < 2:
            asked = await round_asking(members, check_interval)
            if asked is None:
                rounds.clear()
            else:
                rounds.append(asked)
        await trio.sleep(ALIGN_SETTLE)
        (first, _), (second, last) = rounds
        return Alignment(True, second - first, last - second)
    return Alignment(False)


# --- the loss -------------------------------------------------------------------------------

Slot = tuple[int, int]
"""(chunk, share)."""


@dataclass(frozen=True)
class Loss:
    """What was lost, when, by killing whom or on whose disks, and the counters before."""

    slots: list[Slot]
    at: float
    baseline: Counters
    nodes: list[str]
    aligned: Alignment


def xor_distance(node_id: bytes, key: bytes) -> int:
    return int.from_bytes(node_id, "big") ^ int.from_bytes(key, "big")


def by_distance(members: Sequence[Member], object_id: bytes) -> list[Member]:
    """``members``, XOR-closest to the object's key first (the first live one: its steward)."""
    key = manifest_key(object_id)
    return sorted(members, key=lambda m: xor_distance(m.node.node_id, key))


def holder_names(placement: Placement, members: Sequence[Member]) -> list[list[str]]:
    """Per chunk and share, the name of the member holding it."""
    names = {m.node.node_id: m.name for m in members}
    return [[names[h.node_id] if h else "?" for h in row] for row in placement.chunks]


async def kill_holders(
    mesh: Mesh, object_id: bytes, before: ObjectStatus, options: Options
) -> Loss:
    """SIGKILL the n - k holders farthest from the object's key (each holds a fragment of
    every chunk: the object was put on n nodes only)."""
    rows = holder_names(before.placement, mesh.members)
    holders = {name for row in rows for name in row}
    order = by_distance(mesh.members, object_id)
    victims = [m for m in reversed(order) if m.name in holders][: N - K]
    names = [v.name for v in victims]
    slots = [(c, s) for c, row in enumerate(rows) for s, name in enumerate(row) if name in names]
    options.progress(f"kill: SIGKILL {', '.join(names)} (steward: {order[0].name})")
    aligned = await aligned_with_rounds(victims, options)
    baseline = await counters_by_node(mesh.running())
    at = time.time()
    mesh.kill(victims)
    return Loss(slots, at, baseline, names, aligned)


async def aligned_with_rounds(members: Sequence[Member], options: Options) -> Alignment:
    if not options.align:
        return Alignment(False)
    alignment = await just_after_round(members, options.check_interval)
    if alignment.period is not None and alignment.spread is not None:
        options.progress(
            f"  just after a steward round: rounds {alignment.period:.2f} s apart, asking "
            f"these holders over {alignment.spread:.2f} s"
        )
    return alignment


def choose_deletions(rows: list[list[str]], allowed: set[str]) -> list[Slot]:
    """Per chunk, n - k shares held by ``allowed`` nodes, spreading the deletions evenly."""
    load = dict.fromkeys(sorted(allowed), 0)
    slots = []
    for chunk, row in enumerate(rows):
        shares = sorted(
            (s for s, name in enumerate(row) if name in load), key=lambda s: (load[row[s]], s)
        )[: N - K]
        for share in shares:
            load[row[share]] += 1
            slots.append((chunk, share))
    return slots


def fragment_file(member: Member, fragment_id: bytes) -> Path:
    """Where a node's store keeps a fragment (the layout of p2pstore/store/directory.py)."""
    name = fragment_id.hex()
    return member.node.directory / "data" / "fragments" / name[:2] / name


async def delete_fragments(
    mesh: Mesh, client: Client, object_id: bytes, before: ObjectStatus, options: Options
) -> Loss:
    """Delete n - k fragments of every chunk from holders other than the steward, then read
    each from its holder so the holder finds the file gone."""
    rows = holder_names(before.placement, mesh.members)
    steward = by_distance(mesh.members, object_id)[0]
    slots = choose_deletions(rows, {m.name for m in mesh.members} - {steward.name})
    affected = sorted({rows[c][s] for c, s in slots})
    options.progress(
        f"delete: {len(slots)} fragments from {', '.join(affected)} (steward: {steward.name})"
    )
    members = [m for m in mesh.members if m.name in affected]
    aligned = await aligned_with_rounds(members, options)
    baseline = await counters_by_node(mesh.running())
    by_name = {m.name: m for m in mesh.members}
    ids = [before.manifest.chunks[c].fragment_ids[s] for c, s in slots]
    for (c, s), fragment_id in zip(slots, ids, strict=True):
        fragment_file(by_name[rows[c][s]], fragment_id).unlink()
    served: list[Slot] = []

    async def read_back(slot: Slot, fragment_id: bytes) -> None:
        holder = before.placement.chunks[slot[0]][slot[1]]
        assert holder is not None
        try:
            await client.fetch_from(holder, fragment_id)
        except P2PStoreError:
            return  # "not found": the holder dropped it from its index
        served.append(slot)

    async with trio.open_nursery() as nursery:
        for slot, fragment_id in zip(slots, ids, strict=True):
            nursery.start_soon(read_back, slot, fragment_id)
    if served:
        raise RuntimeError(f"holders still served deleted fragments {served}")
    return Loss(slots, time.time(), baseline, affected, aligned)


# --- the ceiling ----------------------------------------------------------------------------

Pattern = tuple[tuple[int, ...], tuple[int, ...]]
"""(survivor shares, lost shares) of one chunk."""


def rebuild_ceiling(chunk_size: int, patterns: list[Pattern]) -> float:
    """MiB/s of rebuilt fragments of ``rebuild_fragments`` over ``patterns`` on one in-memory
    chunk of ``chunk_size`` random bytes, one thread, median of CEILING_PASSES passes."""
    encoder = ObjectEncoder(os.urandom(32), chunk_size, k=K, n=N, chunk_size=chunk_size)
    fragments = encoder.encode_chunk(os.urandom(chunk_size)).fragments
    manifest = encoder.finish().manifest
    rates = []
    for _ in range(CEILING_PASSES):
        busy, produced = 0.0, 0
        for survivors, lost in patterns:
            given = {share: fragments[share] for share in survivors}
            start = time.perf_counter()
            rebuilt = rebuild_fragments(manifest, 0, given, lost)
            busy += time.perf_counter() - start
            produced += sum(len(fragment) for fragment in rebuilt.values())
        rates.append(produced / MiB / busy)
    return statistics.median(rates)


def sha256_ceiling(megabytes: int = 64) -> float:
    """MiB/s of SHA-256 over 1 MiB blocks, one thread."""
    block = os.urandom(MiB)
    start = time.perf_counter()
    for _ in range(megabytes):
        hashlib.sha256(block).digest()
    return megabytes / (time.perf_counter() - start)


# --- one run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    size: int
    nodes: int
    check_interval: float
    grace: float
    poll: float
    timeout: float
    align: bool
    keep: bool
    progress: Callable[[str], None]


@dataclass
class RunResult:
    """What one run measured."""

    mode: str
    chunks: int
    lost: int
    rebuilt: int
    """Fragments rebuilt: (chunk, share) slots whose holder changed."""
    chunks_rebuilt: int
    """Chunks with at least one fragment rebuilt."""
    chunks_repaired: float
    """Chunk repairs the stewards finished (the ``finished`` counter)."""
    bytes_read: float
    bytes_written: float
    fragment_bytes: int
    """Mean size of the fragments lost."""
    loss_to_noticed: float
    noticed_to_full: float
    """To the last placement published (full redundancy, unless ``below_n``)."""
    loss_to_confirmed: float
    below_n: int
    """Chunks left with fewer than n live fragments when the repair settled (0: whole)."""
    ceiling: float
    sha256: float
    stewards: list[str]
    placement_versions: int
    repair_failures: int
    nodes: list[str] = field(default_factory=list)
    aligned: Alignment = field(default_factory=lambda: Alignment(False))

    @property
    def read_per_rebuilt(self) -> float:
        """Fragments read per fragment rebuilt."""
        return self.bytes_read / self.rebuilt / self.fragment_bytes

    @property
    def written_per_rebuilt(self) -> float:
        return self.bytes_written / self.rebuilt / self.fragment_bytes

    @property
    def floor_per_rebuilt(self) -> float:
        """zfec's floor: k fragments read per chunk rebuilt, shared by its rebuilt shares."""
        return K * self.chunks_rebuilt / self.rebuilt

    @property
    def rate(self) -> float:
        """MiB/s of rebuilt fragments, from noticed to full redundancy."""
        return self.bytes_written / MiB / self.noticed_to_full


def log_events(members: Sequence[Member], since: float) -> list[dict[str, object]]:
    """The JSON log entries of ``members`` at or after ``since`` (Unix time), with ``node``
    and ``at`` (Unix time) added; lines that are not JSON (tracebacks) are skipped."""
    entries = []
    for member in members:
        if not member.log.exists():
            continue
        for line in member.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["time"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if at >= since:
                entries.append({**entry, "node": member.name, "at": at})
    return sorted(entries, key=lambda e: float(str(e["at"])))


def below_n(status: ObjectStatus) -> int:
    """Chunks with fewer than n fragments confirmed held."""
    return sum(1 for i in range(len(status.present)) if status.live(i) < status.manifest.n)


async def one_run(mode: str, options: Options, source: Path) -> RunResult:
    """A fresh mesh, a put, a loss, the repair, the ceiling; every node stopped at the end."""
    rule = CodingRule(
        RULE_NAME,
        k=K,
        n=N,
        repair_threshold=THRESHOLD,
        regions=frozenset({REGION}),
        grace_period=options.grace,
    )
    directory = Path(tempfile.mkdtemp(prefix=f"p2pstore-repair-{mode}-"))
    try:
        members = prepare(directory, options.nodes, rule, options.check_interval)
        async with trio.open_nursery() as nursery:
            result = await measure(mode, Mesh(directory, members, nursery), rule, options, source)
            nursery.cancel_scope.cancel()
    finally:
        if options.keep:
            options.progress(f"{mode}: the mesh's directory (logs, stores) is kept: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return result


async def measure(
    mode: str, mesh: Mesh, rule: CodingRule, options: Options, source: Path
) -> RunResult:
    """Start the nodes, put, lose n - k fragments of every chunk, wait until the stewards
    have repaired them, then measure the ceiling."""
    progress = options.progress
    members = mesh.members
    first = members[:N] if mode == "kill" else members
    await mesh.start(first)
    await wait_connected(mesh, first, len(first) - 1)
    progress(f"{mode}: {len(first)} node processes joined; putting {options.size / MiB:g} MiB")
    mesh_client = mesh.client()
    await mesh.nursery.start(mesh_client.run)
    await mesh_client.join(members[0].node.address, len(first))
    settings = ClientSettings()
    client = Client(mesh_client.dht, settings=settings)
    with source.open("rb") as data:
        cap = (await client.put(data, options.size, rule)).read_cap
    before = await client.stat(cap)
    if below_n(before):
        raise RuntimeError("the object is not whole right after the put")
    if mode == "kill":
        await mesh.start(members[N:])
        await wait_connected(mesh, members, len(members) - 1)
        loss = await kill_holders(mesh, cap.object_id, before, options)
    else:
        loss = await delete_fragments(mesh, client, cap.object_id, before, options)
    per_chunk = [sum(1 for c, _ in loss.slots if c == i) for i in range(len(before.present))]
    if set(per_chunk) != {N - K}:
        raise RuntimeError(f"expected {N - K} fragments lost per chunk, got {per_chunk}")
    noticed_at, confirmed_at, after = await watch_repair(mesh, client, cap, loss, options)
    final = await counters_by_node(mesh.running())
    changed = moved(before.placement, after.placement)
    events = log_events(members, loss.at)
    published = [e for e in events if e.get("event") == "placement_published"]
    full_at = max((float(str(e["at"])) for e in published), default=confirmed_at)
    failures = [e for e in events if e.get("event") == "repair_failed"]
    for entry in failures[:5]:
        progress(f"  {entry['node']}: {entry['message']}")
    progress(f"{mode}: repair over; measuring the rebuild ceiling")
    patterns = []
    for chunk in range(len(per_chunk)):
        gone = tuple(s for c, s in loss.slots if c == chunk)
        patterns.append((tuple(s for s in range(N) if s not in gone), gone))
    ceiling = await trio.to_thread.run_sync(
        rebuild_ceiling, min(settings.chunk_size, options.size), patterns
    )
    sha = await trio.to_thread.run_sync(sha256_ceiling)
    manifest = before.manifest
    lost_bytes = sum(HEADER_BYTES + manifest.chunks[c].block_size for c, _ in loss.slots)
    return RunResult(
        mode=mode,
        chunks=len(per_chunk),
        lost=len(loss.slots),
        rebuilt=sum(len(shares) for shares in changed.values()),
        chunks_rebuilt=len(changed),
        chunks_repaired=growth(final, loss.baseline, "finished"),
        bytes_read=growth(final, loss.baseline, "read"),
        bytes_written=growth(final, loss.baseline, "written"),
        fragment_bytes=lost_bytes // len(loss.slots),
        loss_to_noticed=noticed_at - loss.at,
        noticed_to_full=full_at - noticed_at,
        loss_to_confirmed=confirmed_at - loss.at,
        below_n=below_n(after),
        ceiling=ceiling,
        sha256=sha,
        stewards=sorted({str(e["node"]) for e in published}),
        placement_versions=len(published),
        repair_failures=len(failures),
        nodes=loss.nodes,
        aligned=loss.aligned,
    )


def moved(before: Placement, after: Placement) -> dict[int, list[int]]:
    """Per chunk, the shares whose holder changed: the fragments rebuilt elsewhere."""
    changed: dict[int, list[int]] = {}
    for chunk, (old, new) in enumerate(zip(before.chunks, after.chunks, strict=True)):
        shares = [s for s, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        if shares:
            changed[chunk] = shares
    return changed


async def watch_repair(
    mesh: Mesh, client: Client, cap: ReadCap, loss: Loss, options: Options
) -> tuple[float, float, ObjectStatus]:
    """Poll the repair counters until a repair starts (noticed), then until ``Client.stat``
    shows every chunk at n live fragments (confirmed) -- or, when the stewards stop with some
    chunks at or above the threshold but below n, until nothing has happened for the grace
    period and three rounds.  The nodes that may be the steward (no more than ``max_closer``
    live nodes closer to the key) are polled every ``options.poll`` s, all every FULL_POLL s.
    Returns (noticed, confirmed, the last status).  Raises RuntimeError after
    ``options.timeout`` seconds, with what the stewards logged."""
    eligible = by_distance(mesh.running(), cap.object_id)[: StewardSettings().max_closer + 1]
    noticed_at: float | None = None
    last_full = last_stat = last_change = time.monotonic()
    seen = (0.0, 0.0)
    quiet = options.grace + 3 * options.check_interval
    with trio.move_on_after(options.timeout):
        while True:
            await trio.sleep(options.poll)
            mesh.check_alive()
            full = time.monotonic() - last_full >= FULL_POLL
            if noticed_at is not None and not full:
                continue
            counters = await counters_by_node(mesh.running() if full else eligible)
            if noticed_at is None and growth(counters, loss.baseline, "started") > 0:
                noticed_at = time.time()
                options.progress(f"  repair noticed {noticed_at - loss.at:.1f} s after the loss")
            if not full or noticed_at is None:
                continue
            last_full = time.monotonic()
            now_seen = tuple(growth(counters, loss.baseline, c) for c in ("started", "finished"))
            if now_seen != seen:
                seen, last_change = (now_seen[0], now_seen[1]), last_full
            done = seen[1] >= len({c for c, _ in loss.slots})
            if done or last_full - last_stat > STAT_FALLBACK:
                last_stat = last_full
                status = await client.stat(cap)
                if not below_n(status):
                    return noticed_at, time.time(), status
                settled = all(status.live(i) >= THRESHOLD for i in range(len(status.present)))
                if settled and last_full - last_change > quiet:
                    options.progress(
                        f"  settled with {below_n(status)} chunk(s) below n = {N} (at or above "
                        f"the threshold {THRESHOLD}: healthy by the rule, not repaired further)"
                    )
                    return noticed_at, time.time(), status
    said = [
        f"{e['node']} {e['time']}: {e['message']}"
        for e in log_events(mesh.members, loss.at)
        if e.get("logger") == "p2pstore.steward" or e.get("event") in REPAIR_EVENTS
    ]
    raise RuntimeError(
        f"no full redundancy {options.timeout:g} s after the loss (repair "
        f"{'started' if noticed_at else 'never started'}); what the stewards logged:\n  "
        + "\n  ".join(said[-30:] or ["(nothing)"])
    )


# --- the report -----------------------------------------------------------------------------


def spread(values: list[float], fmt: str) -> str:
    """``median [min-max]``, or just the median when every run gave the same figure."""
    cells = [format(v, fmt) for v in (statistics.median(values), min(values), max(values))]
    return cells[0] if cells[1] == cells[2] else f"{cells[0]} [{cells[1]}-{cells[2]}]"


def summary(r: RunResult) -> str:
    """One run in one line (so a later failure does not lose it)."""
    return (
        f"{r.mode}: {r.rebuilt} of {r.lost} lost fragments rebuilt ({r.below_n} chunks left "
        f"below n); read {r.bytes_read / MiB:.1f} MiB, written {r.bytes_written / MiB:.1f} MiB; "
        f"loss->noticed {r.loss_to_noticed:.1f} s, noticed->full {r.noticed_to_full:.1f} s, "
        f"{r.rate:.1f} MiB/s against a ceiling of {r.ceiling:.0f} MiB/s"
    )


def print_report(results: list[RunResult], options: Options, runs: int) -> None:
    chunk = ClientSettings().chunk_size
    print(
        f"p2pstore repair: {options.size / MiB:g} MiB object of random bytes, rule {RULE_NAME} "
        f"{K}-of-{N} (repair below {THRESHOLD}, grace {options.grace:g} s), chunk "
        f"{chunk // MiB} MiB; {options.nodes} node processes in {options.nodes} datacenters, "
        f"mutual TLS on loopback; [repair] check_interval {options.check_interval:g} s; "
        f"{os.cpu_count()} cores"
    )
    print(
        f"every chunk loses n-k = {N - K} fragments; median of {runs} run(s) per mode "
        f"[min-max]; fragments of {results[0].fragment_bytes / MiB:.2f} MiB; /metrics polled "
        f"every {options.poll:g} s"
    )
    head = (
        f"{'mode':7}{'lost':>5}{'rebuilt':>8}{'read/rebuilt':>18}{'floor':>6}{'written':>18}"
        f"{'loss->noticed s':>17}{'noticed->full s':>17}{'repair MiB/s':>18}"
        f"{'ceiling MiB/s':>15}{'ratio':>7}{'<n':>4}"
    )
    print(head)
    print("-" * len(head))
    for mode in MODES:
        rows = [r for r in results if r.mode == mode]
        if not rows:
            continue
        print(
            f"{mode:7}{statistics.median(r.lost for r in rows):>5.0f}"
            f"{statistics.median(r.rebuilt for r in rows):>8.0f}"
            f"{spread([r.read_per_rebuilt for r in rows], '.2f'):>18}"
            f"{statistics.median(r.floor_per_rebuilt for r in rows):>6.2f}"
            f"{spread([r.written_per_rebuilt for r in rows], '.2f'):>18}"
            f"{spread([r.loss_to_noticed for r in rows], '.1f'):>17}"
            f"{spread([r.noticed_to_full for r in rows], '.1f'):>17}"
            f"{spread([r.rate for r in rows], '.1f'):>18}"
            f"{spread([r.ceiling for r in rows], '.0f'):>15}"
            f"{statistics.median(r.rate / r.ceiling for r in rows):>7.1%}"
            f"{max(r.below_n for r in rows):>4}"
        )
    print(
        "read/rebuilt, written: fragments per rebuilt fragment (p2pstore_repair_bytes_total "
        f"summed over the nodes); floor: zfec reads k = {K} fragments per chunk rebuilt, shared "
        f"by the shares rebuilt at once ({N - K} here; k when one is rebuilt alone)"
    )
    print(
        "repair MiB/s: rebuilt fragments over noticed->full; ceiling: rebuild_fragments "
        "(sha256 of k survivors + zfec decode + encode + sha256 of the rebuilt) on the same "
        "(survivors, lost) patterns in memory, one thread; <n: chunks left below n live"
    )
    sha = [r.sha256 for r in results]
    print(f"sha256 of 1 MiB blocks, one thread: {spread(sha, '.0f')} MiB/s")
    for r in results:
        print(
            f"  {r.mode}: {'killed' if r.mode == 'kill' else 'deleted on'} "
            f"{', '.join(r.nodes)}{'' if r.aligned.aligned else ' (NOT aligned with a round)'}; "
            f"steward(s) {', '.join(r.stewards) or '?'}: {r.placement_versions} placement "
            f"version(s), {r.chunks_repaired:.0f} chunk repairs finished, {r.repair_failures} "
            f"failed; loss -> confirmed by stat {r.loss_to_confirmed:.1f} s"
        )


# --- main -----------------------------------------------------------------------------------


async def benchmark(modes: list[str], runs: int, options: Options, as_json: bool) -> None:
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="p2pstore-repair-") as tmp:
        source = Path(tmp) / "object.bin"
        check_disk(Path(tmp), options.size * (1 + N // K) * 2)
        write_random_file(source, options.size)
        interrupted = Interrupted()
        async with trio.open_nursery() as nursery:
            await nursery.start(interrupted.watch, nursery.cancel_scope)
            for run in range(1, runs + 1):
                for mode in modes:  # alternate, so the machine's noise hits both alike
                    options.progress(f"run {run}/{runs}: {mode}")
                    results.append(await one_run(mode, options, source))
                    options.progress(f"  {summary(results[-1])}")
            nursery.cancel_scope.cancel()
        interrupted.check()
    if as_json:
        derived = ("read_per_rebuilt", "floor_per_rebuilt", "written_per_rebuilt", "rate")
        rows = [{**asdict(r), **{name: getattr(r, name) for name in derived}} for r in results]
        json.dump(rows, sys.stdout, indent=1)
        print()
    else:
        print_report(results, options, runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The module docstring (and benchmarks/README.md) says what each figure means.",
    )
    parser.add_argument(
        "--size", type=parse_size, default=64 * MiB, help="object size, e.g. 64MiB (default)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per mode (median; default 1)")
    parser.add_argument(
        "--mode",
        choices=(*MODES, "both"),
        default="both",
        help="kill: SIGKILL n-k holders (repair waits the grace period); delete: n-k fragments "
        "of every chunk vanish from running holders' disks (no grace wait); both (default)",
    )
    parser.add_argument("--nodes", type=int, default=12, help="node processes (>= 12)")
    parser.add_argument(
        "--check-interval", type=float, default=2.0, help="[repair] check_interval, s (2)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=1.0,
        help="the rule's grace_period, s (1; see 'Aligned losses' in the docstring)",
    )
    parser.add_argument(
        "--poll", type=float, default=0.1, help="seconds between polls of the likely stewards"
    )
    parser.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="strike at once instead of just after a steward round asked the holders",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up if not whole this long after a loss"
    )
    parser.add_argument("--json", action="store_true", help="print every run's figures as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's mesh directory (logs, stores)"
    )
    args = parser.parse_args()
    if args.nodes < N + (N - K):
        parser.error(f"--nodes must be at least {N + N - K}: n holders and n-k new datacenters")
    if args.runs < 1 or args.size < 1:
        parser.error("--runs and --size must be positive")

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    options = Options(
        size=args.size,
        nodes=args.nodes,
        check_interval=args.check_interval,
        grace=args.grace,
        poll=args.poll,
        timeout=args.timeout,
        align=args.align,
        keep=args.keep,
        progress=progress,
    )
    modes = list(MODES) if args.mode == "both" else [args.mode]
    # This process's client sees its sessions to killed nodes break: expected, not news.
    logging.getLogger("p2pstore").setLevel(logging.ERROR)
    trio.run(benchmark, modes, args.runs, options, args.json)


if __name__ == "__main__":
    main()
