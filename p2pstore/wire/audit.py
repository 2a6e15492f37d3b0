"""Storage audits on the wire: "show me leaf i of fragment f", answered with the leaf and its path.

A fragment id is a Merkle root over ``MAX_AUDIT_LEAF``-byte leaves (see
``p2pstore.codec.fragment_ids``), so an answer is bounded whatever the fragment: one leaf, at
most ``MAX_AUDIT_PATH`` sibling hashes, and the fragment's length.  The nonce is the
challenger's, echoed back so an answer is tied to one challenge in the evidence it keeps.
A holder that does not have the fragment answers ``ErrorReply`` (``FragmentNotFound``).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from .fragments import MAX_FRAGMENT, FragmentId
from .messages import Message, message
from .schema import Bound

MAX_AUDIT_LEAF = 16 * 1024
"""The leaf size of ``p2pstore.codec.fragment_ids`` (a test pins that they agree)."""
MAX_LEAVES = MAX_FRAGMENT // MAX_AUDIT_LEAF
MAX_AUDIT_PATH = (MAX_LEAVES - 1).bit_length() + 1
"""log2(largest fragment / leaf) + 1: room for one more level than the largest tree needs."""
NODE_HASH_LENGTH = 32
MAX_NONCE = (1 << 64) - 1

NodeHash = Annotated[bytes, Bound(min_len=NODE_HASH_LENGTH, max_len=NODE_HASH_LENGTH)]


@message(40)
@dataclasses.dataclass(frozen=True, slots=True)
class AuditChallenge(Message):
    """Prove you hold ``fragment_id``: send leaf ``leaf_index`` and its path to the root."""

    fragment_id: FragmentId
    leaf_index: int = dataclasses.field(metadata={"min": 0, "max": MAX_LEAVES - 1})
    nonce: int = dataclasses.field(metadata={"min": 0, "max": MAX_NONCE})


@message(41)
@dataclasses.dataclass(frozen=True, slots=True)
class AuditProofReply(Message):
    """The answer to an ``AuditChallenge``: its nonce, the leaf, the sibling hashes from the
    bottom up, and the fragment's length in bytes."""

    nonce: int = dataclasses.field(metadata={"min": 0, "max": MAX_NONCE})
    leaf: bytes = dataclasses.field(metadata={"min_len": 0, "max_len": MAX_AUDIT_LEAF})
    path: tuple[NodeHash, ...] = dataclasses.field(metadata={"max_len": MAX_AUDIT_PATH})
    length: int = dataclasses.field(metadata={"min": 0, "max": MAX_FRAGMENT})
