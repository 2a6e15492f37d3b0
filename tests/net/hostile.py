"""A malicious member's kit, built from the project's own classes, so every attack is a test.

Placement forgeries (issue 13, "one forged PLACEMENT record made an object permanently
unreadable"): each ``forge_placement_*`` function returns a placement record *value*;
:func:`signed_placement_record` signs one under any key and sequence, and
:func:`store_placement_everywhere` sends it with STORE to every node, as an attacker with a
session (any certificate) would.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Sequence

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pstore.codec import Manifest
from p2pstore.core.holders import PLACEMENT_FORMAT
from p2pstore.core.placement import Candidate
from p2pstore.core.receipts import Receipt, sign_receipt
from p2pstore.core.records import RULES, RecordKind, manifest_key, signed_bytes
from p2pstore.identity import NodeCredentials, public_key_bytes
from p2pstore.net.node import Node
from p2pstore.wire import SignedRecord, Store, StoreReply

PLACEMENT_SEQUENCE_ATTACK = 2**62
"""The sequence of the issue's forged record: higher than any honest publisher's."""


def throwaway_key(seed: bytes = b"attacker") -> Ed25519PrivateKey:
    """An Ed25519 key no mesh certificate binds."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())


def forge_placement_table(
    object_id: bytes, manifest: Manifest, holders: Sequence[Candidate]
) -> bytes:
    """The issue's record verbatim: format 1 (before receipts), every share pointed at
    ``holders`` in turn, nothing signed by them."""
    entries = [[h.node_id, h.address, h.datacenter, h.region] for h in holders]
    table = b"".join(
        struct.pack(">H", (chunk * manifest.n + share) % len(holders))
        for chunk in range(manifest.chunk_count)
        for share in range(manifest.n)
    )
    packed: bytes = msgpack.packb([1, object_id, manifest.n, entries, table], use_bin_type=True)
    return packed


def forge_placement_disowning(
    object_id: bytes,
    manifest: Manifest,
    victims: Iterable[NodeCredentials],
    *,
    key: Ed25519PrivateKey,
    now: float,
) -> bytes:
    """Receipts saying each victim no longer holds any fragment of the object, signed by
    ``key`` (not the victims') but naming the victims as holders, with the victims' genuine
    certificates beside them, issued an hour in the future so they would win any tie."""
    receipts: list[Receipt] = []
    certificates = []
    every = {
        chunk * manifest.n + share: manifest.chunks[chunk].fragment_ids[share]
        for chunk in range(manifest.chunk_count)
        for share in range(manifest.n)
    }
    for victim in victims:
        forged = sign_receipt(key, object_id, address="", held={}, missing=every, now=now + 3600)
        receipts.append(_as_holder(forged, victim.node_id))
        certificates.append(victim.certificate_der())
    return _container(object_id, manifest.n, certificates, receipts)


def forge_placement_claiming(
    object_id: bytes,
    manifest: Manifest,
    attacker: NodeCredentials,
    *,
    now: float,
) -> bytes:
    """A certified member's genuine receipts saying it holds every fragment of the object
    (which it does not): all it can sign is a claim about itself."""
    every = {
        chunk * manifest.n + share: manifest.chunks[chunk].fragment_ids[share]
        for chunk in range(manifest.chunk_count)
        for share in range(manifest.n)
    }
    receipts = [
        sign_receipt(
            attacker,
            object_id,
            address="evil.invalid:1",
            held=dict(list(every.items())[start : start + 1024]),
            now=now,
        )
        for start in range(0, len(every), 1024)
    ]
    return _container(object_id, manifest.n, [attacker.certificate_der()], receipts)


def _as_holder(receipt: Receipt, holder: bytes) -> Receipt:
    """``receipt`` relabelled as another node's (its signature no longer matches)."""
    fields = {name: getattr(receipt, name) for name in receipt.__slots__}
    return Receipt(**{**fields, "holder": holder})


def _container(
    object_id: bytes, n: int, certificates: list[bytes], receipts: list[Receipt]
) -> bytes:
    packed: bytes = msgpack.packb(
        [PLACEMENT_FORMAT, object_id, n, certificates, [r.encode() for r in receipts]],
        use_bin_type=True,
    )
    return packed


def signed_placement_record(
    signer: Ed25519PrivateKey | NodeCredentials,
    object_id: bytes,
    value: bytes,
    *,
    now: float,
    sequence: int = PLACEMENT_SEQUENCE_ATTACK,
) -> SignedRecord:
    """A placement record of ``value`` under ``object_id``'s key, signed by ``signer`` at any
    sequence (``sign_record`` would do, but an attacker does not ask permission)."""
    key = signer.private_key if isinstance(signer, NodeCredentials) else signer
    publisher = public_key_bytes(key.public_key())
    expires_at = math.floor(now) + RULES[RecordKind.PLACEMENT].max_ttl
    record_key = manifest_key(object_id)
    data = signed_bytes(
        RecordKind.PLACEMENT,
        record_key,
        value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=publisher,
    )
    return SignedRecord(
        kind=int(RecordKind.PLACEMENT),
        key=record_key,
        value=value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=publisher,
        signature=key.sign(data),
    )


async def store_placement_everywhere(
    node: Node, targets: Iterable[tuple[bytes, str]], record: SignedRecord
) -> int:
    """STORE ``record`` from ``node`` on every (node id, address); returns how many took it."""
    taken = 0
    for node_id, address in targets:
        reply = await node.call(node_id, address, Store(record=record), timeout=10.0)
        taken += isinstance(reply, StoreReply) and reply.stored
    return taken
