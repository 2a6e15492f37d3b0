"""SIGHUP reloads the revocation list on disk, but never takes a node back to an older list
than the one the mesh already gave it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from p2pstore.cli.node_trust import load_trust, reload_trust
from p2pstore.identity import MeshCA


class FakeNode:
    def __init__(self, trust):
        self.transport = SimpleNamespace(trust=trust, reload_trust=self._set)
        self.applied = []

    def _set(self, trust):
        self.transport.trust = trust

    def apply_trust(self, trust):
        self.applied.append(trust)


def test_sighup_keeps_a_newer_list_from_the_mesh_and_takes_a_newer_file(tmp_path, caplog):
    now = datetime.now(UTC)
    ca = MeshCA.create(tmp_path / "ca", mesh_name="m", now=now)
    config = SimpleNamespace(
        ca_certificate=tmp_path / "ca" / "ca.crt", revocation_list=tmp_path / "ca" / "crl.pem"
    )
    on_disk = load_trust(config)
    victim = ca.issue(tmp_path, "v", datacenter="dc-1", region="FR", now=now)
    newer = MeshCA.load(tmp_path / "ca")
    newer.revoke_in_memory(victim.identity.serial, now=now)  # the mesh's list, not on disk
    node = FakeNode(newer.trust_anchor())
    reload_trust(config, node)  # type: ignore[arg-type]
    assert node.applied == [] and node.transport.trust.crl_number == on_disk.crl_number + 1
    assert any(getattr(r, "event", None) == "trust_reload_older" for r in caplog.records)
    other = ca.issue(tmp_path, "w", datacenter="dc-2", region="FR", now=now)
    ca.revoke(other.identity.serial, now=now)
    ca.revoke(victim.identity.serial, now=now)  # the file is now two lists ahead
    reload_trust(config, node)  # type: ignore[arg-type]
    assert node.transport.trust.crl_number == on_disk.crl_number + 2
    assert victim.identity.serial in node.applied[-1].revoked_serials
