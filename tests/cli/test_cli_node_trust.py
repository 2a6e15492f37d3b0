"""SIGHUP reloads the revocation list on disk, but never takes a node back to an older list
than the one the mesh already gave it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from p2pstore.cli.node_trust import load_trust, reload_trust
from p2pstore.errors import ConfigError
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


def test_a_policy_sets_the_stewards_rules_and_local_ones_only_tighten(tmp_path, caplog):
    from p2pstore.cli.node_trust import apply_policy
    from p2pstore.cli.policy_file import read_policy_file
    from p2pstore.core.rules import CodingRule

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        '[policy]\ncheck_interval = "5m"\n\n[rules.fed]\nk = 3\nn = 6\nrepair_threshold = 4\n',
        encoding="utf-8",
    )
    policy = read_policy_file(policy_file, 7)
    stricter = CodingRule("fed", k=3, n=6, repair_threshold=5)
    looser = CodingRule("standard", k=4, n=8, repair_threshold=5)
    config = SimpleNamespace(rules={"fed": stricter, "standard": looser})
    steward = SimpleNamespace(rules={})
    apply_policy(config, steward, policy)  # type: ignore[arg-type]
    assert steward.rules["fed"] == stricter
    assert steward.rules["standard"] == policy.rules["standard"]
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "local_rules_overridden"]
    assert line.rules == ["standard"]
    policy_file.write_text("[policy]\nprotocol_versions = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="protocol_versions"):
        read_policy_file(policy_file, 8)
    policy_file.write_text("[policy]\nprotocol_versions = [2]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="would stop spreading"):
        read_policy_file(policy_file, 9)
    policy_file.write_text("[policy]\nprotocol_versions = [3]\n", encoding="utf-8")
    assert read_policy_file(policy_file, 10).protocol_versions == (3,)
