"""A malicious-peer kit: mesh members with valid certificates that lie, driven by p2pstore's own
classes (a real :class:`Node` on the test's transport, the real wire messages), so every attack
is a regression test on both transports.

``LyingHolder`` takes fragments and keeps only those in ``keep`` (none by default), says it has
every fragment it is asked about, and answers audits as ``audit`` says:

* ``"garbage"``: a leaf of random bytes and a path of random hashes, of plausible sizes;
* ``"other-leaf"``: for a fragment it kept, a true proof of another leaf than the one asked
  (a replayed or precomputed answer); garbage for the others;
* ``"not-found"``: the honest refusal of a holder that lost the fragment;
* ``"silent"``: never answers (the challenger's deadline must catch it).

Fragments it kept are proved honestly whatever the mode, except ``"other-leaf"``, so a holder
that kept a share of what it took is modelled too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import trio

from p2pstore.codec.fragment_ids import LEAF_SIZE, audit_proof, leaf_count
from p2pstore.errors import FragmentNotFound
from p2pstore.identity import PeerIdentity
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
)

AUDIT_MODES = ("garbage", "other-leaf", "not-found", "silent")


@dataclass
class LyingHolder:
    """See the module docstring; start it with ``await nursery.start(liar.node.run)``."""

    node: Node
    audit: str = "garbage"
    keep: frozenset[bytes] = frozenset()
    rng: random.Random = field(default_factory=lambda: random.Random(666))
    kept: dict[bytes, bytes] = field(default_factory=dict)
    swallowed: list[bytes] = field(default_factory=list)
    challenges: list[AuditChallenge] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.audit not in AUDIT_MODES:
            raise ValueError(f"audit mode {self.audit!r} is not one of {AUDIT_MODES}")
        self.node.handle(PutFragment, self._on_put)
        self.node.handle(HasFragments, self._on_has)
        self.node.handle(GetFragment, self._on_get)
        self.node.handle(AuditChallenge, self._on_audit)

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
