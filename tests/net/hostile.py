"""A malicious-peer kit: mesh members with valid certificates that lie, driven by p2pstore's own
classes (a real :class:`Node` on the test's transport, the real wire messages), so every attack
is a regression test on both transports.

``LyingHolder`` takes fragments and keeps only those in ``keep`` (none by default), says it has
every fragment it is asked about (``HasFragments``, and receipts signed with its node key for
every position a ``StateFragments`` asks), and answers audits as ``audit`` says:

* ``"garbage"``: a leaf of random bytes and a path of random hashes, of plausible sizes;
* ``"other-leaf"``: for a fragment it kept, a true proof of another leaf than the one asked
  (a replayed or precomputed answer); garbage for the others;
* ``"not-found"``: the honest refusal of a holder that lost the fragment;
* ``"silent"``: never answers (the challenger's deadline must catch it).

Fragments it kept are proved honestly whatever the mode, except ``"other-leaf"``, so a holder
that kept a share of what it took is modelled too.

Publisher attacks (a key without a certificate, record and fragment floods by a member) are the
functions named ``forge_*``, ``junk_*`` and ``flood_*`` below.

Placement forgeries (issue 13, "one forged PLACEMENT record made an object permanently
unreadable"): each ``forge_placement_*`` function returns a placement record *value*;
:func:`signed_placement_record` signs one under any key and sequence, and
:func:`store_placement_everywhere` sends it with STORE to every node, as an attacker with a
session (any certificate) would.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgpack
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pstore.codec import Manifest
from p2pstore.codec.fragment_ids import LEAF_SIZE, audit_proof, fragment_id, leaf_count
from p2pstore.core.holders import PLACEMENT_FORMAT
from p2pstore.core.placement import Candidate
from p2pstore.core.receipts import Receipt, sign_receipt
from p2pstore.core.records import RULES, RecordKind, manifest_key, sign_record, signed_bytes
from p2pstore.errors import FragmentNotFound, PeerUnreachable, RemoteError
from p2pstore.identity import NodeCredentials, PeerIdentity
from p2pstore.net.fragments import store_fragment
from p2pstore.net.node import Node
from p2pstore.wire import (
    AuditChallenge,
    AuditProofReply,
    GetFragment,
    GetFragmentReply,
    HasFragments,
    HasFragmentsReply,
    Message,
    PutFragment,
    PutFragmentReply,
    SignedRecord,
    StateFragments,
    StateFragmentsReply,
    Store,
    StoreReply,
)

AUDIT_MODES = ("garbage", "other-leaf", "not-found", "silent")


@dataclass
class LyingHolder:
    """See the module docstring; start it with ``await nursery.start(liar.node.run)``."""

    node: Node
    audit: str = "garbage"
    keep: frozenset[bytes] = frozenset()
    rng: random.Random = field(default_factory=lambda: random.Random(666))
    wall_clock: Callable[[], float] = time.time
    """Unix time for its receipts (a mesh's clock in memory)."""
    kept: dict[bytes, bytes] = field(default_factory=dict)
    swallowed: list[bytes] = field(default_factory=list)
    challenges: list[AuditChallenge] = field(default_factory=list)

    HANDLED = (PutFragment, HasFragments, GetFragment, AuditChallenge, StateFragments)

    def __post_init__(self) -> None:
        if self.audit not in AUDIT_MODES:
            raise ValueError(f"audit mode {self.audit!r} is not one of {AUDIT_MODES}")
        self.node.handle(PutFragment, self._on_put)
        self.node.handle(HasFragments, self._on_has)
        self.node.handle(GetFragment, self._on_get)
        self.node.handle(AuditChallenge, self._on_audit)
        self.node.handle(StateFragments, self._on_state)

    @classmethod
    def taking_over(cls, node: Node, **options: object) -> LyingHolder:
        """Turn a running honest node (its fragment service) into a liar from now on: it
        keeps what its store holds but answers every fragment request as a liar would."""
        for message_type in cls.HANDLED:
            node.dispatcher.handlers.pop(message_type, None)
        return cls(node, **options)

    @property
    def node_id(self) -> bytes:
        return self.node.identity.node_id

    async def _on_put(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, PutFragment)
        if message.fragment_id in self.keep:
            self.kept[message.fragment_id] = message.data
        else:
            self.swallowed.append(message.fragment_id)
        return PutFragmentReply(stored=True)

    async def _on_has(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, HasFragments)
        return HasFragmentsReply(present=(True,) * len(message.fragment_ids))

    async def _on_state(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, StateFragments)
        receipts = [
            sign_receipt(
                self.node.credentials,
                query.object_id,
                address=self.node.address,
                held=dict(zip(query.positions, query.fragment_ids, strict=True)),
                now=self.wall_clock(),
            ).encode()
            for query in message.queries
        ]
        return StateFragmentsReply(
            receipts=tuple(receipts), certificate=self.node.credentials.certificate_der()
        )

    async def _on_get(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, GetFragment)
        return GetFragmentReply(data=self.kept.get(message.fragment_id, b"garbage"))

    async def _on_audit(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, AuditChallenge)
        self.challenges.append(message)
        data = self.kept.get(message.fragment_id)
        if self.audit == "silent" and data is None:
            await trio.sleep_forever()
        if self.audit == "not-found" and data is None:
            raise FragmentNotFound(f"fragment {message.fragment_id.hex()[:16]} is not here")
        if data is not None:
            leaves = leaf_count(len(data))
            index = message.leaf_index
            if self.audit == "other-leaf" and leaves > 1:
                index = (index + 1) % leaves
            if index < leaves:
                proof = audit_proof(data, index)
                return AuditProofReply(message.nonce, proof.leaf, proof.path, proof.length)
        length = (message.leaf_index + 1) * LEAF_SIZE
        path = tuple(self.rng.randbytes(32) for _ in range((message.leaf_index + 1).bit_length()))
        return AuditProofReply(message.nonce, self.rng.randbytes(LEAF_SIZE), path, length)


# -- publishers: keys without certificates, and members flooding records and fragments ------

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


# -- placement forgeries ----------------------------------------------------------------

PLACEMENT_SEQUENCE_ATTACK = 2**62
"""The sequence of the issue's forged record: higher than any honest publisher's."""


def throwaway_key(seed: bytes = b"attacker") -> Ed25519PrivateKey:
    """An Ed25519 key no mesh certificate binds."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())


def forge_placement_table(
    object_id: bytes,
    manifest: Manifest,
    holders: Sequence[Candidate],
    choose: Callable[[int], int] | None = None,
) -> bytes:
    """The issue's record verbatim: format 1 (before receipts), every share pointed at
    ``holders`` in turn (or at ``holders[choose(position)]``), nothing signed by them."""
    entries = [[h.node_id, h.address, h.datacenter, h.region] for h in holders]
    table = b"".join(
        struct.pack(">H", choose(position) if choose else position % len(holders))
        for position in range(manifest.chunk_count * manifest.n)
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


def forge_placement_pointing(
    object_id: bytes,
    manifest: Manifest,
    pointed: Iterable[tuple[NodeCredentials, Iterable[int]]],
    *,
    key: Ed25519PrivateKey,
    now: float,
) -> bytes:
    """Today's format pointing shares at nodes that do not hold them: receipts saying each
    node holds the positions given with it, signed by ``key`` (not the node's) but naming the
    node as holder, its genuine certificate beside them."""
    receipts: list[Receipt] = []
    certificates = []
    for victim, positions in pointed:
        held = {p: manifest.chunks[p // manifest.n].fragment_ids[p % manifest.n] for p in positions}
        if held:
            forged = sign_receipt(key, object_id, address="", held=held, now=now)
            receipts.append(_as_holder(forged, victim.node_id))
            certificates.append(victim.certificate_der())
    return _container(object_id, manifest.n, certificates, receipts)


def forge_placement_claiming(
    object_id: bytes,
    manifest: Manifest,
    attacker: NodeCredentials,
    *,
    now: float,
    address: str = "evil.invalid:1",
) -> bytes:
    """A certified member's genuine receipts saying it holds every fragment of the object
    (which it does not), dialled at ``address``: all it can sign is a claim about itself."""
    every = {
        chunk * manifest.n + share: manifest.chunks[chunk].fragment_ids[share]
        for chunk in range(manifest.chunk_count)
        for share in range(manifest.n)
    }
    receipts = [
        sign_receipt(
            attacker,
            object_id,
            address=address,
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
    sequence (``sign_record`` would do, but an attacker does not ask permission); it carries
    the member's certificate, or junk for a key without one."""
    if isinstance(signer, NodeCredentials):
        key, certificate = signer.private_key, signer.certificate_der()
    else:
        key, certificate = signer, JUNK_CERTIFICATE
    return forge_record(
        key,
        RecordKind.PLACEMENT,
        manifest_key(object_id),
        value,
        expires_at=math.floor(now) + RULES[RecordKind.PLACEMENT].max_ttl,
        sequence=sequence,
        certificate=certificate,
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
