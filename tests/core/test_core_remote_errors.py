"""Remote error codes: one table from the code a peer sends to the typed error it names."""

from __future__ import annotations

import pytest

from p2pstore.core.audit import MISSING_CODES
from p2pstore.errors import (
    REMOTE_ERRORS,
    FragmentNotFound,
    IntegrityError,
    NodeLeaving,
    P2PStoreError,
    QuotaExceeded,
    RemoteError,
    StoreError,
    error_code,
)


@pytest.mark.parametrize("kind", sorted(set(REMOTE_ERRORS.values()), key=lambda k: k.__name__))
def test_every_code_a_node_sends_reads_back_as_its_type(kind: type[P2PStoreError]) -> None:
    error = kind.__new__(kind)  # constructors differ; the code depends on the class alone
    remote = RemoteError("refused", code=error_code(error))
    assert remote.kind is kind
    assert remote.means(kind) and remote.means(P2PStoreError)


def test_a_subclass_means_its_parents_and_not_its_siblings() -> None:
    remote = RemoteError("full", code="QuotaExceeded")
    assert remote.means(QuotaExceeded) and remote.means(StoreError)
    assert not remote.means(FragmentNotFound) and not remote.means(NodeLeaving)


def test_an_unknown_or_hostile_code_means_nothing() -> None:
    for code in ("", "NoSuchThing", "object", "__class__", "x" * 1000):
        remote = RemoteError("?", code=code)
        assert remote.kind is None and not remote.means(P2PStoreError)


def test_an_audit_counts_missing_exactly_the_codes_of_a_missing_or_corrupt_fragment() -> None:
    assert {"FragmentNotFound", "IntegrityError"} == MISSING_CODES
    assert all(
        issubclass(REMOTE_ERRORS[c], (FragmentNotFound, IntegrityError)) for c in MISSING_CODES
    )
