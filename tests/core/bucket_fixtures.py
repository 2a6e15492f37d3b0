"""Shared test material for bucket indexes: a mesh CA, tenant identities, entry builders."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

from p2pstore.core.bucket_entries import (
    Op,
    VerifiedEntry,
    bucket_id,
    entry_digest,
    sign_entry,
    verify_entry,
)
from p2pstore.identity import MeshCA, NodeId, Role
from p2pstore.wire import BucketEntry

T0 = 1_772_366_400  # 2026-03-01 12:00 UTC
NOW_DT = datetime.fromtimestamp(T0, UTC)
ISSUED = NOW_DT - timedelta(days=30)
CA = MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED - timedelta(days=1))
TRUST = CA.trust_anchor()
ALICE = CA.issue_in_memory(
    datacenter="gateway", region="FR", role=Role.CLIENT, now=ISSUED, tenant="univ-strasbourg"
)
ALICE_LAPTOP = CA.issue_in_memory(
    datacenter="laptop", region="FR", role=Role.CLIENT, now=ISSUED, tenant="univ-strasbourg"
)
MALLORY = CA.issue_in_memory(
    datacenter="laptop", region="FR", role=Role.CLIENT, now=ISSUED, tenant="other-tenant"
)
NO_TENANT = CA.issue_in_memory(datacenter="laptop", region="FR", role=Role.CLIENT, now=ISSUED)
NODE = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=ISSUED)
BUCKET_TOKEN = hashlib.sha256(b"bucket photos").digest()
BUCKET = bucket_id("univ-strasbourg", BUCKET_TOKEN)


def token(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def signed(
    op: Op = Op.PUT,
    *,
    name: str = "a.txt",
    at: float = T0,
    signer=ALICE,
    payload: bytes = b"sealed",
    **fields,
) -> BucketEntry:
    if op in (Op.ERASE, Op.RETAIN, Op.RELEASE):
        payload = b""
    return sign_entry(
        signer,
        bucket_token=BUCKET_TOKEN,
        name=token(name),
        op=op,
        timestamp=int(at * 1000),
        payload=payload,
        **fields,
    )


def verified(entry: BucketEntry, now: float = T0) -> VerifiedEntry:
    return verify_entry(entry, now, trust=TRUST)


def unsigned(entry: BucketEntry) -> VerifiedEntry:
    """An entry as the merge sees it, without checking a signature (for merge properties)."""
    return VerifiedEntry(
        entry,
        entry_digest(entry),
        bucket_id(entry.tenant, entry.bucket_token),
        NodeId(hashlib.sha256(entry.signer_key).digest()[:20]),
        None,
    )


def resigned(entry: BucketEntry, **changes) -> BucketEntry:
    return dataclasses.replace(entry, **changes)
