"""A malicious-peer kit for tests: what a hostile member (or a key with no certificate at all)
sends, built from the project's own classes, so every attack of issue 13 is a regression test.

Publisher attacks (records and fragments floods, throw-away keys) are the functions below named
``forge_*``, ``junk_*`` and ``flood_*``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.core.records import RecordKind, sign_record, signed_bytes
from p2pstore.errors import PeerUnreachable, RemoteError
from p2pstore.identity import NodeCredentials
from p2pstore.net.fragments import store_fragment
from p2pstore.net.node import Node
from p2pstore.wire import SignedRecord, Store, StoreReply

JUNK_CERTIFICATE = b"\x30\x03\x02\x01\x01"
"""DER-looking bytes that certify nothing."""


def forge_record(
    private_key: Ed25519PrivateKey,
    kind: RecordKind,
    key: bytes,
    value: bytes,
    *,
    expires_at: int,
    sequence: int = 1,
    certificate: bytes = JUNK_CERTIFICATE,
) -> SignedRecord:
    """A record correctly signed by ``private_key`` (a throw-away key, typically) that carries
    ``certificate`` (junk, someone else's, another mesh's): what the attacker of issue 13 sent
    with a placement at sequence 2**62."""
    public = private_key.public_key().public_bytes_raw()
    data = signed_bytes(
        kind,
        key,
        value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=public,
        certificate=certificate,
    )
    return SignedRecord(
        kind=int(kind),
        key=key,
        value=value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=public,
        certificate=certificate,
        signature=private_key.sign(data),
    )


def junk_manifests(
    credentials: NodeCredentials, count: int, size: int, *, expires_at: int, seed: int = 0
) -> list[SignedRecord]:
    """``count`` "manifests" of ``size`` random bytes signed by a member: any bytes hash to their
    own key, so each passes the manifest rule (the record flood of issue 13)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        value = rng.randbytes(size)
        key = hashlib.sha256(value).digest()[:20]
        out.append(
            sign_record(
                credentials, RecordKind.MANIFEST, key, value, sequence=1, expires_at=expires_at
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class FloodOutcome:
    """How a holder answered each STORE or PutFragment of a flood."""

    accepted: int
    refusals: tuple[str, ...]
    """The refusal texts (a StoreReply's reason, or a RemoteError's code: message)."""


async def flood_records(
    node: Node, peer_id: bytes, address: str, records: list[SignedRecord]
) -> FloodOutcome:
    """STORE every record on one holder directly (as a hostile member does, bypassing any
    lookup), one after the other."""
    accepted = 0
    refusals = []
    for record in records:
        reply = await node.call(peer_id, address, Store(record=record), timeout=30)
        assert isinstance(reply, StoreReply)
        if reply.stored:
            accepted += 1
        else:
            refusals.append(reply.reason)
    return FloodOutcome(accepted, tuple(refusals))


def junk_fragments(count: int, size: int, *, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """``count`` (id, bytes) fragments of random bytes: valid ids, belonging to no object."""
    rng = random.Random(seed)
    return [(fragment_id(data), data) for data in (rng.randbytes(size) for _ in range(count))]


async def flood_fragments(
    node: Node, peer_id: bytes, address: str, fragments: list[tuple[bytes, bytes]]
) -> FloodOutcome:
    """PutFragment every junk fragment on one holder directly (the fragment flood of issue 13)."""
    accepted = 0
    refusals = []
    for fid, data in fragments:
        try:
            await store_fragment(node, peer_id, address, fid, data, timeout=30)
        except RemoteError as refused:
            refusals.append(f"{refused.code}: {refused}")
        except PeerUnreachable as lost:
            refusals.append(f"unreachable: {lost}")
        else:
            accepted += 1
    return FloodOutcome(accepted, tuple(refusals))
