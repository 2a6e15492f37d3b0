"""The files of a local mesh (``devnet``, ``demo``): lay one out as an operator would (a mesh CA,
one identity and node.toml per node, a client), or read back one laid out before to restart it."""

from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import trio

from p2pstore.cli.client_config import write_client_config
from p2pstore.cli.config import load_node_config
from p2pstore.cli.config_render import write_local_node_config
from p2pstore.core.rules import SHIPPED_RULES
from p2pstore.errors import ConfigError
from p2pstore.identity import MeshCA, NodeCredentials, Role

DEVNET_TENANT = "devnet"
"""The tenant the local mesh's client acts for, so buckets work out of the box."""


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
        client_dir,
        "client",
        datacenter="devnet",
        region=regions[0],
        role=Role.CLIENT,
        now=now,
        tenant=DEVNET_TENANT,
    )
    write_client_config(
        client_dir,
        key="client.key",
        certificate="client.crt",
        ca_certificate="../ca/ca.crt",
        revocation_list="../ca/crl.pem",
        bootstrap_peers=tuple(m.address for m in members),
        rules=LOCAL_RULES,
        tenant=True,
    )
    return authority, members, client


def is_local_mesh(directory: Path) -> bool:
    """Whether ``directory`` holds a mesh ``create_mesh`` laid out (its CA and client at least)."""
    return (directory / "ca" / "ca.crt").is_file() and (
        directory / "client" / "client.toml"
    ).is_file()


def load_mesh(directory: Path) -> tuple[list[DevnetNode], NodeCredentials]:
    """The nodes and client identity of a mesh laid out by ``create_mesh`` in ``directory``, as
    their files say (same identities, addresses and data): what restarting it needs.  Raises
    :class:`ConfigError` naming the file that is missing or wrong."""
    numbered = []
    for node_dir in directory.iterdir():
        match = re.fullmatch(r"node-(\d+)", node_dir.name)
        if match and node_dir.is_dir():
            numbered.append((int(match.group(1)), node_dir))
    if len(numbered) < 2:
        raise ConfigError(f"{directory} holds a mesh CA but fewer than 2 node-N directories")
    members = []
    for index, (_number, node_dir) in enumerate(sorted(numbered)):
        config = load_node_config(node_dir / "node.toml")
        identity = NodeCredentials.load(config.key, config.certificate).identity
        members.append(
            DevnetNode(
                index,
                node_dir.name,
                identity.datacenter,
                identity.region,
                config.listen,
                node_dir,
                node_id=identity.node_id,
                admin_address=config.metrics_listen or "",
            )
        )
    client_dir = directory / "client"
    client = NodeCredentials.load(client_dir / "client.key", client_dir / "client.crt")
    return members, client
