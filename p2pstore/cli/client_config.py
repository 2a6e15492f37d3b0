"""The client's TOML configuration (``client.toml``), and connecting a client to the mesh.

A client is a mesh member with a client certificate from the mesh CA: it dials nodes over
mutual TLS but never listens.  Its file names its identity, whom to join through, the default
coding rule and chunk size, and the file holding its convergence secret (the per-user secret
that makes storing the same file twice store it once; without it every put uses a random key).
It declares the mesh's coding rules in ``[rules.NAME]`` tables, as the nodes do: ``put --rule``
and ``stat`` know a rule only if it is shipped or declared here.
Relative paths are relative to the file, like the node's.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from p2pstore.cli.config import (
    ConfigReader,
    bootstrap_peers,
    read_toml,
    seeds_of,
)
from p2pstore.cli.config_render import render_rules, toml_string
from p2pstore.cli.config_sections import parse_size
from p2pstore.cli.seeds import Seed
from p2pstore.codec import DEFAULT_CHUNK_SIZE
from p2pstore.codec.chunking import check_chunk_size
from p2pstore.core.mesh_policy import check_put_rule
from p2pstore.core.rules import DEFAULT_RULE_NAME, SHIPPED_RULES, CodingRule, find_rule
from p2pstore.errors import ConfigError, LocalProtocolError
from p2pstore.identity import NodeCredentials, TrustAnchor
from p2pstore.net.client import Client, ClientSettings
from p2pstore.net.dht import Dht, DhtSettings
from p2pstore.net.mesh_trust import MeshTrust
from p2pstore.net.node import Node, NodeSettings
from p2pstore.net.session import SessionSettings
from p2pstore.net.tls import TlsSettings, TlsTransport

CONFIG_ENV = "P2PSTORE_CLIENT_CONFIG"
"""Environment variable naming the client's TOML file when ``--config`` is not given."""

SECRET_BYTES = 32

RULES_EXAMPLE = (
    "# [rules.gov]",
    "# k = 4",
    "# n = 8",
    "# repair_threshold = 6",
    '# regions = ["FR-GES"]',
    "# max_per_datacenter = 1",
    '# grace_period = "1h"',
)
"""A commented ``[rules.NAME]`` example for generated files."""

_SCHEMA: dict[str, dict[str, bool]] = {
    "identity": {
        "key": True,
        "certificate": True,
        "ca_certificate": True,
        "revocation_list": False,
    },
    "bootstrap": {"peers": False, "seed_file": False},
    "client": {
        "rule": False,
        "chunk_size": False,
        "convergence_secret": False,
        "tenant_key": False,
    },
}


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything ``p2pstore put/get/stat`` need, resolved and checked."""

    path: Path
    key: Path
    certificate: Path
    ca_certificate: Path
    revocation_list: Path | None
    join_through: tuple[Seed, ...]
    rule: CodingRule
    """The default rule of ``put``."""
    rules: Mapping[str, CodingRule]
    """Every rule this client knows by name: the shipped ones overlaid with ``[rules.NAME]``."""
    chunk_size: int
    convergence_secret: Path | None
    tenant_key: Path | None = None
    """The tenant's bucket key file (64 hex digits): buckets and names need it."""

    def read_tenant_key(self) -> bytes:
        """The tenant key.  Raises :class:`ConfigError` if none is configured or the file is
        unreadable or not 64 hex digits."""
        if self.tenant_key is None:
            raise ConfigError(
                f"{self.path}: [client] tenant_key is not set: buckets need the tenant's key "
                f"file (64 hex digits, shared by the tenant's machines, never by the mesh)"
            )
        try:
            text = self.tenant_key.read_text(encoding="ascii").strip()
            key = bytes.fromhex(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{self.path}: [client] tenant_key: cannot read 64 hex digits from "
                f"{self.tenant_key}: {exc}"
            ) from exc
        if len(key) != SECRET_BYTES:
            raise ConfigError(
                f"{self.path}: [client] tenant_key: {self.tenant_key} holds {len(key)} bytes, "
                f"a tenant key is {SECRET_BYTES} (64 hex digits)"
            )
        return key

    def read_secret(self) -> bytes | None:
        """The convergence secret, or None when the config names none.

        Raises :class:`ConfigError` if the file is unreadable or too short."""
        if self.convergence_secret is None:
            return None
        try:
            secret = self.convergence_secret.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                f"{self.path}: [client] convergence_secret: cannot read "
                f"{self.convergence_secret}: {exc.strerror or exc}"
            ) from exc
        if len(secret) < 16:
            raise ConfigError(
                f"{self.path}: [client] convergence_secret: {self.convergence_secret} holds "
                f"{len(secret)} bytes; a secret needs at least 16 (make one with: "
                "python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        return secret


def load_client_config(path: Path) -> ClientConfig:
    """Read and check a client's TOML file; :class:`ConfigError` names the file and the key."""
    reader = ConfigReader(path, read_toml(path), _SCHEMA)
    peers = bootstrap_peers(reader)
    seeds = tuple(Seed(address) for address in peers) + seeds_of(reader)
    if not seeds:
        raise reader.error("[bootstrap]", "name at least one peer (peers or seed_file) to join")
    rules = reader.rules()
    rule_name = reader.string("client", "rule") or DEFAULT_RULE_NAME
    try:
        rule = find_rule(rule_name, rules)
    except ConfigError as exc:
        raise reader.error(
            "[client] rule", f"{exc}; or declare it in a [rules.{rule_name}] table"
        ) from exc
    chunk_text = reader.string("client", "chunk_size")
    chunk_size = DEFAULT_CHUNK_SIZE
    if chunk_text is not None:
        try:
            chunk_size = parse_size(chunk_text)
            check_chunk_size(chunk_size)
        except (ConfigError, LocalProtocolError) as exc:
            raise reader.error("[client] chunk_size", str(exc)) from exc
    key = reader.existing_file("identity", "key")
    certificate = reader.existing_file("identity", "certificate")
    ca_certificate = reader.existing_file("identity", "ca_certificate")
    assert key and certificate and ca_certificate  # required keys
    return ClientConfig(
        path=path,
        key=key,
        certificate=certificate,
        ca_certificate=ca_certificate,
        revocation_list=reader.existing_file("identity", "revocation_list"),
        join_through=seeds,
        rule=rule,
        rules=rules,
        chunk_size=chunk_size,
        convergence_secret=reader.path_value("client", "convergence_secret"),
        tenant_key=reader.path_value("client", "tenant_key"),
    )


def write_client_config(
    directory: Path,
    *,
    key: str,
    certificate: str,
    ca_certificate: str,
    revocation_list: str | None,
    bootstrap_peers: tuple[str, ...],
    rule: str = DEFAULT_RULE_NAME,
    rules: Mapping[str, CodingRule] | None = None,
    tenant: bool = False,
) -> Path:
    """Write ``directory/client.toml`` and a fresh ``client.secret`` (mode 0600) beside it;
    ``rules`` are the mesh's declared coding rules, written as ``[rules.NAME]`` tables.  With
    ``tenant``, a fresh ``tenant.key`` too (the client's certificate must name a tenant)."""
    for name in ("client.secret", *(("tenant.key",) if tenant else ())):
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
    q = toml_string
    lines = [
        "# A p2pstore client: `p2pstore put/get/stat --config` this file, or set",
        f"# {CONFIG_ENV} to its path.",
        "[identity]",
        f"key = {q(key)}",
        f"certificate = {q(certificate)}",
        f"ca_certificate = {q(ca_certificate)}",
        *([f"revocation_list = {q(revocation_list)}"] if revocation_list else []),
        "",
        "[bootstrap]",
        "peers = [" + ", ".join(q(p) for p in bootstrap_peers) + "]",
        "",
        "[client]",
        f"# Coding rule of new objects: a shipped one ({', '.join(SHIPPED_RULES)}) or one",
        "# declared in a [rules.NAME] table below.",
        f"rule = {q(rule)}",
        '# chunk_size = "4 MiB"',
        "# Same file + same secret = same object, stored once; remove for random keys.",
        'convergence_secret = "client.secret"',
        "# The tenant's bucket key (buckets, names): the same file on every machine of the",
        "# tenant, never given to the mesh.",
        'tenant_key = "tenant.key"' if tenant else '# tenant_key = "tenant.key"',
        "",
        "# The mesh's coding rules, declared exactly as in every node's node.toml:",
        *RULES_EXAMPLE,
        "",
        *render_rules(rules or {}),
    ]
    path = directory / "client.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@asynccontextmanager
async def connected_client(
    config: ClientConfig,
    *,
    settings: ClientSettings | None = None,
    storing_under: CodingRule | None = None,
) -> AsyncIterator[Client]:
    """A :class:`Client` joined to the mesh through the config's bootstrap peers, with the
    mesh CA's newest revocation list and policy; the node and DHT run in a nursery that closes
    when the block ends.

    Raises :class:`IdentityError` for unreadable credentials, :class:`PeerUnreachable` if no
    bootstrap peer answers, and :class:`ConfigError` if the mesh policy does not know the rule
    ``storing_under`` (a ``put`` would store what no steward repairs).
    """
    credentials = NodeCredentials.load(config.key, config.certificate)
    trust = TrustAnchor.load(config.ca_certificate, config.revocation_list)
    transport = TlsTransport(
        credentials,
        trust,
        str(config.ca_certificate),
        settings=TlsSettings(connect_timeout=5, handshake_timeout=5),
    )
    node = Node(
        credentials,
        transport,
        listen=False,
        settings=NodeSettings(session=SessionSettings(request_timeout=30)),
    )
    dht = Dht(
        node,
        lambda: transport.trust,  # the mesh's newest revocation list, once fetched
        rng=random.Random(secrets.randbits(64)),  # noqa: S311 - bucket-refresh targets only
        wall_clock=time.time,
        settings=DhtSettings(rpc_timeout=5.0),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await nursery.start(dht.run)
        pinned = {seed.address: seed.node_id for seed in config.join_through if seed.node_id}
        await dht.join([seed.address for seed in config.join_through], pinned)
        mesh_trust = MeshTrust(dht)
        await mesh_trust.refresh()  # before any receipt is counted
        if storing_under is not None and mesh_trust.policy is not None:
            check_put_rule(mesh_trust.policy, storing_under)
        await nursery.start(mesh_trust.run)
        yield Client(dht, settings=settings or ClientSettings(chunk_size=config.chunk_size))
        nursery.cancel_scope.cancel()
