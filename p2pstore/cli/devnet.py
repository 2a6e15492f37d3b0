"""``p2pstore devnet``: a throw-away mesh of real node processes on loopback.

It does what an operator would: creates a mesh CA, issues one identity per node spread over
datacenters and regions, writes each node's TOML (with its admin endpoint, ``/metrics``,
``/health`` and ``/status``, on a loopback port of its own, as an operator would turn it on),
starts ``p2pstore node run`` processes, then watches them over mutual TLS with a client
certificate of its own, asking each node whom it sees.  Ctrl-C (or ``--exit-when-ready``) stops
every node with SIGTERM and reports how they exited.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
import trio
from rich.console import Console
from rich.table import Table

from p2pstore.cli.client_config import CONFIG_ENV, write_client_config
from p2pstore.cli.config_render import write_local_node_config
from p2pstore.core.contact import Contact
from p2pstore.core.records import RecordKind
from p2pstore.core.rules import SHIPPED_RULES
from p2pstore.errors import P2PStoreError
from p2pstore.identity import (
    MeshCA,
    NodeCredentials,
    Role,
    TrustAnchor,
    short_id,
)
from p2pstore.net.dht import Dht, DhtSettings
from p2pstore.net.node import Node, NodeSettings
from p2pstore.net.session import SessionSettings
from p2pstore.net.tls import TlsSettings, TlsTransport
from p2pstore.wire import StatusReply, StatusRequest

POLL_INTERVAL = 0.5
STOP_GRACE = 10.0


@dataclass
class DevnetNode:
    """One node of the local mesh, as the devnet set it up and last saw it."""

    index: int
    name: str
    datacenter: str
    region: str
    address: str
    directory: Path
    node_id: bytes = b""
    admin_address: str = ""
    """Where the node's admin endpoint (/metrics, /health, /status) listens."""
    process: trio.Process | None = None
    exit_code: int | None = None
    sees: frozenset[bytes] = field(default_factory=frozenset)
    answered: bool = False


LOCAL_GRACE_PERIOD = 20.0
"""A local mesh's grace period: the shipped rules wait an hour before a silent node's fragments
count as lost, so that a rebooting datacenter causes no repair; on a laptop, repair should show
within a minute of killing a node."""
LOCAL_CHECK_INTERVAL = 5.0
"""Seconds between a local mesh's steward rounds."""
LOCAL_RULES = {
    name: dataclasses.replace(rule, grace_period=LOCAL_GRACE_PERIOD)
    for name, rule in SHIPPED_RULES.items()
}
"""The shipped rules with the local grace period, declared in every node.toml and client.toml."""


def plan_layout(nodes: int, datacenters: int, regions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(datacenter, region) of each node: nodes round-robin over datacenters, datacenters over
    regions, so every region and datacenter gets its share."""
    return [
        (f"dc-{(i % datacenters) + 1}", regions[(i % datacenters) % len(regions)])
        for i in range(nodes)
    ]


def free_loopback_ports(count: int) -> list[int]:
    """Ports the OS says are free now (a node that loses the race fails loudly at bind)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def create_mesh(
    directory: Path, nodes: int, datacenters: int, regions: tuple[str, ...]
) -> tuple[MeshCA, list[DevnetNode], NodeCredentials]:
    """CA, node identities and configs (each with a loopback admin endpoint), and a client
    identity with its ``client/client.toml`` (which the observer uses too), under
    ``directory``."""
    now = datetime.now(UTC)
    authority = MeshCA.create(directory / "ca", mesh_name="devnet", now=now)
    ports = free_loopback_ports(2 * nodes)
    peer_ports, admin_ports = ports[:nodes], ports[nodes:]
    members: list[DevnetNode] = []
    for index, ((datacenter, region), port, admin_port) in enumerate(
        zip(plan_layout(nodes, datacenters, regions), peer_ports, admin_ports, strict=True)
    ):
        name = f"node-{index + 1}"
        node_dir = directory / name
        node_dir.mkdir(parents=True)
        credentials = authority.issue(
            node_dir, "node", datacenter=datacenter, region=region, now=now
        )
        members.append(
            DevnetNode(
                index,
                name,
                datacenter,
                region,
                f"127.0.0.1:{port}",
                node_dir,
                node_id=credentials.identity.node_id,
                admin_address=f"127.0.0.1:{admin_port}",
            )
        )
    for member in members:
        # Every node joins the mesh through the first one; the DHT does the rest.
        others = () if member is members[0] else (members[0].address,)
        write_local_node_config(
            member.directory,
            listen=member.address,
            bootstrap_peers=others,
            metrics_listen=member.admin_address,
            rules=LOCAL_RULES,
            repair_check_interval=LOCAL_CHECK_INTERVAL,
        )
    client_dir = directory / "client"
    client_dir.mkdir()
    client = authority.issue(
        client_dir, "client", datacenter="devnet", region=regions[0], role=Role.CLIENT, now=now
    )
    write_client_config(
        client_dir,
        key="client.key",
        certificate="client.crt",
        ca_certificate="../ca/ca.crt",
        revocation_list="../ca/crl.pem",
        bootstrap_peers=tuple(m.address for m in members),
        rules=LOCAL_RULES,
    )
    return authority, members, client


async def _terminate(process: trio.Process) -> None:
    """How a node is stopped: SIGTERM, then SIGKILL if it is still there after the grace."""
    process.terminate()
    with trio.move_on_after(STOP_GRACE):
        await process.wait()
        return
    process.kill()


async def run_node_process(
    member: DevnetNode, *, task_status: trio.TaskStatus[trio.Process]
) -> None:
    """One node process, its output in its own node.log; cancelling this stops it."""
    command = [
        sys.executable,
        "-m",
        "p2pstore",
        "node",
        "run",
        "--config",
        str(member.directory / "node.toml"),
    ]
    with (member.directory / "node.log").open("ab") as log_file:
        await trio.run_process(
            command,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            deliver_cancel=_terminate,
            task_status=task_status,
        )


Scenario = Callable[["Observer", list[DevnetNode], Console], Awaitable[bool]]
"""What runs once the local mesh is ready (the demo); returns whether it succeeded."""


class Observer:
    """A client of the mesh (its own client certificate, no listening port): asks every node
    whom it sees, and checks through the DHT that each node's announcement can be found
    starting from every other node."""

    def __init__(self, credentials: NodeCredentials, trust: TrustAnchor, ca_path: Path) -> None:
        transport = TlsTransport(
            credentials,
            trust,
            str(ca_path),
            settings=TlsSettings(connect_timeout=2, handshake_timeout=2),
        )
        self.node = Node(
            credentials,
            transport,
            listen=False,
            settings=NodeSettings(session=SessionSettings(request_timeout=5)),
        )
        self.dht = Dht(
            self.node,
            lambda: trust,
            rng=random.Random(0),  # noqa: S311 - bucket-refresh targets, not secrets
            wall_clock=time.time,
            settings=DhtSettings(rpc_timeout=3.0),
        )
        self.changed = trio.Event()
        self.records_found = 0
        self.records_wanted = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.node.run)
            await nursery.start(self.dht.run)
            task_status.started()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def watch(self, member: DevnetNode) -> None:
        """Poll ``member`` forever; ``member.sees`` and ``member.answered`` follow its answers."""
        while True:
            try:
                reply = await self.node.call(member.node_id, member.address, StatusRequest())
            except P2PStoreError:
                reply = None
            if isinstance(reply, StatusReply):
                sees = frozenset(peer.node_id for peer in reply.peers)
                if sees != member.sees or not member.answered:
                    member.sees, member.answered = sees, True
                    self._notify()
            elif member.answered:
                member.answered = False
                self._notify()
            await trio.sleep(POLL_INTERVAL)

    async def check_records(self, members: list[DevnetNode]) -> bool:
        """From each node as the only entry point, look up every other node's announcement."""
        found = 0
        for entry in members:
            seed = Contact(entry.node_id, entry.address, entry.datacenter, entry.region)
            for other in members:
                if other is entry:
                    continue
                try:
                    records = await self.dht.find_records(
                        RecordKind.ANNOUNCEMENT, other.node_id, seeds=[seed]
                    )
                except P2PStoreError:
                    records = []
                found += any(record.key == other.node_id for record in records)
        self.records_found, self.records_wanted = found, len(members) * (len(members) - 1)
        return found == self.records_wanted


def admin_endpoints(members: list[DevnetNode]) -> str:
    """Where each node's metrics are, one line per node (the other pages are beside them)."""
    lines = ["metrics for Prometheus (and /health, /status beside them), loopback only:"]
    lines += [f"  {m.name:<8} http://{m.admin_address}/metrics" for m in members]
    return "\n".join(lines)


def mesh_ready(members: list[DevnetNode]) -> bool:
    """Every node answers and sees every other node."""
    everyone = {m.node_id for m in members}
    return all(m.answered and m.sees >= everyone - {m.node_id} for m in members)


def peer_table(members: list[DevnetNode]) -> Table:
    """Rows: nodes; columns: whom each sees (✓), authenticated by mutual TLS."""
    table = Table(title="who sees whom (authenticated by mutual TLS)", title_justify="left")
    for column in ("node", "node id", "datacenter", "region", "address", "state"):
        table.add_column(column)
    for member in members:
        table.add_column(member.name.removeprefix("node-"), justify="center")
    for member in members:
        state = (
            ("exited " + str(member.exit_code))
            if member.exit_code is not None
            else ("up" if member.answered else "starting")
        )
        marks = [
            "-" if other is member else ("✓" if other.node_id in member.sees else "·")
            for other in members
        ]
        table.add_row(
            member.name,
            short_id(member.node_id),
            member.datacenter,
            member.region,
            member.address,
            state,
            *marks,
        )
    return table


async def run_devnet(
    directory: Path,
    members: list[DevnetNode],
    make_observer: Callable[[], Observer],
    *,
    exit_when_ready: bool,
    ready_timeout: float,
    console: Console,
    scenario: Scenario | None = None,
) -> bool:
    """Start the nodes, show the table until ready, run ``scenario`` if given (the demo), then
    wait for Ctrl-C unless ``exit_when_ready``; stop them all.  Returns whether the mesh became
    ready (and the scenario, if any, succeeded)."""
    ready = False
    started = trio.current_time()
    observer = make_observer()  # its DHT reads trio's clock: made inside the run
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for member in members:
                member.process = await nursery.start(run_node_process, member)
            console.print(f"started {len(members)} node processes; files in {directory}")
            console.print(admin_endpoints(members))
            await nursery.start(observer.run)
            for member in members:
                nursery.start_soon(observer.watch, member)
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope, console)
            with trio.move_on_after(ready_timeout):
                ready = await _wait_until_ready(members, observer)
            for member in members:
                member.exit_code = member.process.returncode if member.process else None
            console.print(peer_table(members))
            if ready:
                console.print(
                    f"[bold green]mesh ready[/] in {trio.current_time() - started:.1f}s: "
                    f"{len(members)} nodes joined through {members[0].name}, each authenticated "
                    f"the other {len(members) - 1} over mutual TLS; from every node's entry "
                    f"point the DHT found every other node's signed announcement "
                    f"({observer.records_found}/{observer.records_wanted} lookups)"
                )
            else:
                console.print("[bold red]the mesh did not come up[/]; node logs:")
                for member in members:
                    console.print(f"  {member.directory / 'node.log'}")
            if ready and scenario is not None:
                ready = await scenario(observer, members, console)
            if ready and not exit_when_ready:
                config = directory / "client" / "client.toml"
                console.print(
                    "Ctrl-C stops every node. Try the mesh from another terminal:\n"
                    f"  export {CONFIG_ENV}={config}\n"
                    "  p2pstore put FILE            # prints the file's read cap\n"
                    "  p2pstore stat CAP            # where its fragments are\n"
                    "  p2pstore get CAP -o COPY     # read it back\n"
                    f"  p2pstore node status --config {members[0].directory / 'node.toml'}\n"
                    f"To join a node of your own, its mesh CA is {directory / 'ca'} and "
                    f"{members[0].directory / 'node.toml'} has the mesh's rules "
                    "(bootstrap/README.md, section 8)."
                )
                await _follow(members, observer, console)
            nursery.cancel_scope.cancel()
    for member in members:
        code = member.process.returncode if member.process else None
        console.print(f"{member.name} stopped (exit code {code})")
    return ready


async def _wait_until_ready(members: list[DevnetNode], observer: Observer) -> bool:
    """Every node answers and sees every other, and (nodes announce themselves once joined)
    every announcement is found from every node; False if a node process exited."""
    while True:
        while not mesh_ready(members):
            if _any_exited(members):
                return False
            await observer.changed.wait()
        if await observer.check_records(members) and mesh_ready(members):
            return True
        # Other processes' state: asking again is the only way to see it change.
        await trio.sleep(POLL_INTERVAL)


def _any_exited(members: list[DevnetNode]) -> bool:
    return any(m.process is not None and m.process.returncode is not None for m in members)


async def _stop_on_signal(
    signals: AsyncIterator[int], scope: trio.CancelScope, console: Console
) -> None:
    async for signum in signals:
        console.print(f"\n{signal.Signals(signum).name}: stopping every node")
        scope.cancel()
        return


async def _follow(members: list[DevnetNode], observer: Observer, console: Console) -> None:
    """Reprint the table whenever who-sees-whom changes."""
    last = [(m.answered, m.sees) for m in members]
    while True:
        await observer.changed.wait()
        now = [(m.answered, m.sees) for m in members]
        if now != last:
            last = now
            console.print(peer_table(members))


@click.command()
@click.option("--nodes", "-n", default=10, show_default=True, help="Node processes to start.")
@click.option(
    "--datacenters", type=int, help="Datacenters to spread them over [default: one per node]."
)
@click.option(
    "--regions",
    default="FR-GES,FR-IDF",
    show_default=True,
    help="Comma-separated region codes to spread the datacenters over.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the mesh's files here [default: a temporary directory, removed on exit "
    "unless the mesh failed to come up].",
)
@click.option(
    "--exit-when-ready",
    is_flag=True,
    help="Stop every node as soon as they all see each other (for scripts and CI).",
)
@click.option(
    "--timeout",
    "ready_timeout",
    default=60.0,
    show_default=True,
    help="Seconds to wait for every node to see every other.",
)
def devnet(
    nodes: int,
    datacenters: int | None,
    regions: str,
    directory: Path | None,
    exit_when_ready: bool,
    ready_timeout: float,
) -> None:
    """Start a local mesh of node processes on loopback and show who sees whom.

    It creates a throw-away mesh CA, issues each node an identity in its datacenter and
    region, starts `p2pstore node run` for each, and watches them over mutual TLS.
    Ctrl-C stops them all.
    """
    launch_local_mesh(
        nodes,
        datacenters,
        regions,
        directory,
        exit_when_ready=exit_when_ready,
        ready_timeout=ready_timeout,
    )


def launch_local_mesh(
    nodes: int,
    datacenters: int | None,
    regions: str,
    directory: Path | None,
    *,
    exit_when_ready: bool,
    ready_timeout: float,
    scenario: Scenario | None = None,
) -> None:
    """What ``devnet`` and ``demo`` share: check the options, lay out the mesh, run it, clean
    up; exits 1 if the mesh did not come up or the scenario failed."""
    if nodes < 2:
        raise click.BadParameter("a mesh needs at least 2 nodes", param_hint="--nodes")
    region_codes = tuple(r.strip() for r in regions.split(",") if r.strip())
    if not region_codes:
        raise click.BadParameter("give at least one region code", param_hint="--regions")
    datacenter_count = datacenters or nodes
    if datacenter_count < 1:
        raise click.BadParameter("must be at least 1", param_hint="--datacenters")
    temporary = directory is None
    root = Path(tempfile.mkdtemp(prefix="p2pstore-devnet-")) if directory is None else directory
    if not temporary:
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise click.BadParameter(f"{root} is not empty", param_hint="--dir")
    # Off a terminal (CI, pipes) rich assumes 80 columns and would cut the table.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    ready = False
    try:
        authority, members, observer_credentials = create_mesh(
            root, nodes, datacenter_count, region_codes
        )
        ready = trio.run(
            functools.partial(
                run_devnet,
                root,
                members,
                functools.partial(
                    Observer, observer_credentials, authority.trust_anchor(), root / "ca" / "ca.crt"
                ),
                exit_when_ready=exit_when_ready,
                ready_timeout=ready_timeout,
                console=console,
                scenario=scenario,
            )
        )
    finally:
        if temporary and ready:
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:  # the node logs listed above are what the user needs next
            console.print(f"kept {root} for inspection; remove it when done")
    if not ready:
        sys.exit(1)
