"""The mesh policy: one CA-signed document of coding rules, repair pace and protocol versions.
It survives its encoding, garbage never passes for one, only the CA signs it, the newest wins,
local configuration may only tighten it, and a rule it does not know is refused by name."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.ca_records import policy_record
from p2pstore.core.mesh_policy import MeshPolicy, decode_policy, known_rule, tightened
from p2pstore.core.record_store import PutResult, RecordStore
from p2pstore.core.records import RecordKind, RejectReason, ca_record_key, verify_record
from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.errors import ConfigError, RecordRejected, RemoteProtocolError
from p2pstore.identity import MeshCA

T0 = 1_772_366_400
CA = MeshCA.create_in_memory(mesh_name="m", now=datetime.fromtimestamp(T0, UTC) - timedelta(1))
OTHER = MeshCA.create_in_memory(mesh_name="o", now=datetime.fromtimestamp(T0, UTC) - timedelta(1))
FED = CodingRule("fed", k=3, n=6, repair_threshold=4, regions=frozenset({"FR-GES", "FR-IDF"}))


def policy(sequence: int = 1, **rules: CodingRule) -> MeshPolicy:
    return MeshPolicy(sequence, {**SHIPPED_RULES, "fed": FED, **rules}, (2,), 300.0)


@given(
    sequence=st.integers(1, 2**63 - 1),
    k=st.integers(1, 10),
    extra=st.integers(0, 5),
    versions=st.lists(st.integers(1, 65535), max_size=8),
    interval=st.floats(1.0, 1e6),
)
def test_a_policy_survives_its_encoding(sequence, k, extra, versions, interval):
    rule = CodingRule("x", k=k, n=k + extra, repair_threshold=k)
    original = MeshPolicy(sequence, {**SHIPPED_RULES, "x": rule}, tuple(versions), interval)
    assert decode_policy(original.encode()) == original


@given(st.binary(max_size=3000))
def test_garbage_is_never_a_policy(junk):
    with pytest.raises(RemoteProtocolError):
        decode_policy(junk)


def test_only_the_ca_publishes_it_and_a_holder_keeps_the_newest():
    first, second = policy_record(CA, policy(1), T0), policy_record(CA, policy(2), T0)
    trust = CA.trust_anchor()
    info = verify_record(second, T0, trust=trust)
    assert info.kind is RecordKind.POLICY and second.key == ca_record_key(
        RecordKind.POLICY, CA.certificate
    )
    with pytest.raises(RecordRejected) as caught:
        verify_record(policy_record(OTHER, policy(9), T0), T0, trust=trust)
    assert caught.value.reason == RejectReason.UNCERTIFIED
    with pytest.raises(RecordRejected) as caught:  # a relay bumping the sequence breaks the seal
        verify_record(dataclasses.replace(first, sequence=5), T0, trust=trust)
    assert caught.value.reason == RejectReason.BAD_SIGNATURE
    store = RecordStore(10, 1 << 20)
    assert store.put(first, T0, trust=trust) is PutResult.STORED
    assert store.put(second, T0, trust=trust) is PutResult.REPLACED
    with pytest.raises(RecordRejected) as caught:
        store.put(first, T0, trust=trust)
    assert caught.value.reason == RejectReason.STALE


def test_local_rules_may_only_tighten_the_policy():
    stricter = dataclasses.replace(FED, repair_threshold=6, regions=frozenset({"FR-GES"}))
    looser = dataclasses.replace(FED, repair_threshold=3)
    recoded = CodingRule("fed", k=2, n=6, repair_threshold=6)
    invented = CodingRule("mine", k=1, n=1, repair_threshold=1)
    mesh = policy()
    assert tightened(mesh, {"fed": stricter})["fed"] == stricter
    assert tightened(mesh, {"fed": looser})["fed"] == FED
    assert tightened(mesh, {"fed": recoded})["fed"] == FED
    assert "mine" not in tightened(mesh, {"mine": invented})
    anywhere = dataclasses.replace(FED, regions=frozenset())
    assert tightened(mesh, {"fed": anywhere})["fed"] == FED  # dropping regions loosens


def test_a_rule_the_mesh_does_not_know_is_refused_by_name():
    assert known_rule(policy(), "fed") == FED
    with pytest.raises(ConfigError, match=r"'k5'.*known rules: archive, fed"):
        known_rule(policy(), "k5")


def test_a_policy_is_checked_when_built():
    with pytest.raises(ConfigError):
        MeshPolicy(0, dict(SHIPPED_RULES))
    with pytest.raises(ConfigError):
        MeshPolicy(1, {"other": FED})
    with pytest.raises(ConfigError):
        MeshPolicy(1, dict(SHIPPED_RULES), (0,))
