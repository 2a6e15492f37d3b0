"""The mesh policy as the CA operator writes it: a TOML file read by ``p2pstore ca policy``.

```toml
[policy]
protocol_versions = [2, 3]  # the wire versions sessions may settle on (empty: any)
check_interval = "10m"      # the longest pause between a steward's rounds

[rules.fed]                 # as in node.toml; laid over the shipped rules
k = 3
n = 6
repair_threshold = 4
regions = ["FR-GES", "FR-IDF"]
```
"""

from __future__ import annotations

from pathlib import Path

from p2pstore.cli.config import read_toml
from p2pstore.core.mesh_policy import MeshPolicy
from p2pstore.core.rules import parse_duration, rules_from_table
from p2pstore.errors import ConfigError
from p2pstore.wire.versions import RECORD_KIND_SINCE

CA_RECORDS_SINCE = min(RECORD_KIND_SINCE.values())
"""The first wire version that carries the CA's records (the policy itself among them)."""

_SECTIONS = {"policy", "rules"}
_POLICY_KEYS = {"protocol_versions", "check_interval"}


def read_policy_file(path: Path, sequence: int) -> MeshPolicy:
    """The policy ``path`` describes, numbered ``sequence``.  Raises :class:`ConfigError`
    naming the file and what is wrong in it."""
    document = read_toml(path)
    unknown = set(document) - _SECTIONS
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)}; expected [policy], [rules]")
    section = document.get("policy", {})
    if not isinstance(section, dict) or set(section) - _POLICY_KEYS:
        raise ConfigError(f"{path}: [policy] takes only {sorted(_POLICY_KEYS)}")
    versions = section.get("protocol_versions", [])
    if not isinstance(versions, list):
        raise ConfigError(f"{path}: [policy] protocol_versions: a list of integers")
    if versions and all(isinstance(v, int) and v < CA_RECORDS_SINCE for v in versions):
        raise ConfigError(
            f"{path}: [policy] protocol_versions {versions} allow no version from "
            f"{CA_RECORDS_SINCE} on, the first that carries the CA's records: this policy, and "
            "every revocation list after it, would stop spreading through the mesh"
        )
    try:
        interval = parse_duration(section.get("check_interval", 600))
        rules = rules_from_table(document.get("rules", {}), source=str(path))
        return MeshPolicy(sequence, rules, tuple(versions), interval)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
