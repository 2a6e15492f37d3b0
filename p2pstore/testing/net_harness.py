"""The transports of a test mesh: a TLS network (real sockets, real time) or an in-memory one
(virtual time), with a CA that issues the credentials, so every capability is tested on both
(``tests/net/conftest.py`` parametrizes its ``net`` fixture over the two)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from p2pstore.cli.local_mesh import free_loopback_ports
from p2pstore.identity import MeshCA, NodeCredentials, Role, TrustAnchor
from p2pstore.net.memory import Latency, LinkProfile, MemoryNetwork, MemoryTransport
from p2pstore.net.tls import TlsSettings, TlsTransport


class NetHarness:
    """Makes CAs, credentials and transports of one kind ("tls" or "memory")."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.now = datetime.now(UTC)
        self.ca = MeshCA.create(tmp_path / "ca", mesh_name="test", now=self.now)
        self.network = MemoryNetwork(
            random.Random(7), LinkProfile(latency=Latency.constant(0.005)), connect_timeout=3.0
        )
        self._count = 0

    def trust(self, ca: MeshCA | None = None) -> TrustAnchor:
        directory = (ca or self.ca).directory
        assert directory is not None  # made on disk
        return TrustAnchor.load(directory / "ca.crt", directory / "crl.pem")

    def trust_directory(self) -> Path:
        """Where the CA keeps its certificate and revocation list."""
        assert self.ca.directory is not None  # made on disk
        return self.ca.directory

    def other_ca(self) -> MeshCA:
        return MeshCA.create(self.tmp_path / "other-ca", mesh_name="other", now=self.now)

    def credentials(
        self,
        datacenter: str = "dc-1",
        region: str = "FR-GES",
        *,
        role: Role = Role.NODE,
        ca: MeshCA | None = None,
        issued_at: datetime | None = None,
        valid_days: int = 30,
        tenant: str | None = None,
    ) -> NodeCredentials:
        self._count += 1
        directory = self.tmp_path / f"id-{self._count}"
        directory.mkdir()
        return (ca or self.ca).issue(
            directory,
            "node",
            datacenter=datacenter,
            region=region,
            role=role,
            now=issued_at or self.now,
            valid_days=valid_days,
            tenant=tenant,
        )

    def reserve_address(self) -> str:
        """An address a transport made later will listen on (known before it starts)."""
        if self.kind == "tls":
            return f"127.0.0.1:{free_loopback_ports(1)[0]}"
        self._count += 1
        return f"peer-{self._count}"

    def transport(
        self,
        credentials: NodeCredentials | None = None,
        trust: TrustAnchor | None = None,
        address: str | None = None,
    ) -> TlsTransport | MemoryTransport:
        credentials = credentials or self.credentials()
        trust = trust or self.trust()
        if self.kind == "tls":
            port = int(address.rpartition(":")[2]) if address else 0
            return TlsTransport(
                credentials,
                trust,
                str(self.trust_directory() / "ca.crt"),
                listen_port=port,
                settings=TlsSettings(connect_timeout=5, handshake_timeout=5),
            )
        return self.network.transport(address or self.reserve_address(), credentials, trust)

    def expired_time(self) -> datetime:
        return self.now - timedelta(days=60)
