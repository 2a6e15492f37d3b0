"""The mesh policy: the coding rules, repair pace and protocol versions the mesh CA sets for
every node and client, published as a record the CA signs (kind POLICY, see
:mod:`p2pstore.core.ca_records`).

Strategy: rules copied by hand into every ``node.toml`` and ``client.toml`` drift, and a client
whose copy differs stores objects no steward will repair.  One document signed by the CA, the
newest by ``sequence`` winning, removes the copies; a node's own configuration may only tighten
it (:func:`tightened`), never loosen it or invent a rule, and a ``put`` under a rule the policy
does not know is refused, naming the rule (:func:`known_rule`).  Pure: decoding is bounded and
every field is checked, so a document that passed the CA's signature still cannot crash anyone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgpack

from p2pstore.core.rules import SHIPPED_RULES, CodingRule, rule_table, rules_from_table
from p2pstore.errors import ConfigError, RemoteProtocolError

POLICY_FORMAT: Final = 1
MAX_POLICY_BYTES: Final = 64 * 1024
MAX_POLICY_RULES: Final = 64
MAX_PROTOCOL_VERSIONS: Final = 8


@dataclass(frozen=True, slots=True)
class MeshPolicy:
    """What the CA sets for the whole mesh.  ``sequence`` orders versions (newest wins);
    ``protocol_versions`` are the wire versions nodes may speak; ``check_interval`` is the
    longest pause between a steward's rounds (seconds).  Raises :class:`ConfigError`."""

    sequence: int
    rules: Mapping[str, CodingRule] = field(default_factory=lambda: dict(SHIPPED_RULES))
    protocol_versions: tuple[int, ...] = ()
    check_interval: float = 600.0

    def __post_init__(self) -> None:
        if type(self.sequence) is not int or not 0 < self.sequence < 2**63:
            raise ConfigError(f"a mesh policy's sequence is 1..2**63-1, got {self.sequence!r}")
        if not 0 < len(self.rules) <= MAX_POLICY_RULES:
            raise ConfigError(f"a mesh policy names 1 to {MAX_POLICY_RULES} coding rules")
        versions = self.protocol_versions
        if len(versions) > MAX_PROTOCOL_VERSIONS or any(
            type(v) is not int or not 0 < v < 2**16 for v in versions
        ):
            raise ConfigError(
                f"protocol_versions: at most {MAX_PROTOCOL_VERSIONS} versions from 1 to 65535"
            )
        if not (math.isfinite(self.check_interval) and self.check_interval > 0):
            raise ConfigError("check_interval must be a positive number of seconds")
        for name, rule in self.rules.items():
            if name != rule.name:
                raise ConfigError(f"rule {rule.name!r} is filed under another name, {name!r}")

    def encode(self) -> bytes:
        """The policy as the value of its DHT record (canonical msgpack)."""
        document = {
            "format": POLICY_FORMAT,
            "sequence": self.sequence,
            "rules": {name: rule_table(self.rules[name]) for name in sorted(self.rules)},
            "protocol_versions": list(self.protocol_versions),
            "check_interval": float(self.check_interval),
        }
        packed: bytes = msgpack.packb(document, use_bin_type=True)
        if len(packed) > MAX_POLICY_BYTES:
            raise ConfigError(
                f"the mesh policy takes {len(packed)} bytes, at most {MAX_POLICY_BYTES}"
            )
        return packed


def decode_policy(value: bytes) -> MeshPolicy:
    """Parse a policy record's value.  Raises :class:`RemoteProtocolError` saying what is wrong
    (too large, not msgpack, an unknown format or key, an invalid rule)."""
    if len(value) > MAX_POLICY_BYTES:
        raise RemoteProtocolError(f"a mesh policy has at most {MAX_POLICY_BYTES} bytes")
    try:
        document = msgpack.unpackb(value, raw=False, strict_map_key=True, max_map_len=256)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise RemoteProtocolError(f"a mesh policy is not valid msgpack: {error}") from None
    expected = {"format", "sequence", "rules", "protocol_versions", "check_interval"}
    if not isinstance(document, dict) or set(document) != expected:
        raise RemoteProtocolError(f"a mesh policy is a map of exactly {sorted(expected)}")
    if document["format"] != POLICY_FORMAT:
        raise RemoteProtocolError(f"mesh policy format {document['format']!r} is unknown")
    rules, versions = document["rules"], document["protocol_versions"]
    if not isinstance(rules, dict) or not isinstance(versions, list):
        raise RemoteProtocolError("a mesh policy's rules are a map, its versions a list")
    try:
        declared = rules_from_table(rules, source="mesh policy")
        return MeshPolicy(
            document["sequence"],
            declared,
            tuple(versions),
            document["check_interval"],
        )
    except (ConfigError, TypeError) as error:
        raise RemoteProtocolError(f"invalid mesh policy: {error}") from None


def tightened(policy: MeshPolicy, local: Mapping[str, CodingRule]) -> dict[str, CodingRule]:
    """The rules a node applies: the policy's, each replaced by the local rule of that name
    only where the local one is at least as strict (same k and n, so objects stay readable;
    a repair threshold at least as high, regions within the policy's, no more fragments per
    datacenter, a grace period no longer).  A local rule the policy does not know, or one that
    loosens it, is ignored: the mesh's word wins.  Pure."""
    effective = dict(policy.rules)
    for name, mine in local.items():
        theirs = policy.rules.get(name)
        if theirs is not None and _at_least_as_strict(mine, theirs):
            effective[name] = mine
    return effective


def _at_least_as_strict(mine: CodingRule, theirs: CodingRule) -> bool:
    regions_within = not theirs.regions or (bool(mine.regions) and mine.regions <= theirs.regions)
    return (
        (mine.k, mine.n) == (theirs.k, theirs.n)
        and mine.repair_threshold >= theirs.repair_threshold
        and regions_within
        and mine.max_per_datacenter <= theirs.max_per_datacenter
        and mine.grace_period <= theirs.grace_period
    )


def known_rule(policy: MeshPolicy, name: str) -> CodingRule:
    """The policy's rule ``name``.  Raises :class:`ConfigError` naming the rule and the ones
    the mesh knows: an object stored under a rule no steward knows is never repaired."""
    rule = policy.rules.get(name)
    if rule is None:
        known = ", ".join(sorted(policy.rules))
        raise ConfigError(
            f"the mesh policy (version {policy.sequence}) knows no coding rule {name!r}: no "
            f"steward would repair it; known rules: {known}"
        )
    return rule


def check_put_rule(policy: MeshPolicy, rule: CodingRule) -> None:
    """Refuse to store under ``rule`` (as the client's configuration declares it) unless the
    mesh policy knows a rule of that name coded the same way (k and n): stewards repair by the
    policy's rule.  Raises :class:`ConfigError` naming the rule."""
    mesh = known_rule(policy, rule.name)
    if (mesh.k, mesh.n) != (rule.k, rule.n):
        raise ConfigError(
            f"coding rule {rule.name!r} is {rule.k}-of-{rule.n} in this client's configuration "
            f"but {mesh.k}-of-{mesh.n} in the mesh policy (version {policy.sequence}): fix "
            f"[rules.{rule.name}] in the client's TOML file"
        )
