"""The messages that move fragments between clients, stewards and the nodes that hold them.

Fragments are content-addressed: the id is a Merkle root of the bytes, so every receiver checks
what it gets against the id it asked for, whoever sent it.  Refusals (quota, disk, a fragment
that does not hash to its id, one not held) come back as ``ErrorReply`` with the error's class
name as code, so a caller can act on each: go elsewhere, repair, or give up.

A holder answers ``StateFragments`` (the writer once its fragments are stored, a steward's
check, ``stat``) with storage receipts signed by its node key (``core.receipts``; carried here
as their canonical bytes) and its certificate, which binds that key: whoever relays a receipt
later passes both on.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from .messages import Message, message
from .schema import Bound, Record, record

FRAGMENT_ID_LENGTH = 32
MAX_FRAGMENT = 16 * 1024 * 1024
"""Largest fragment: a 16 MiB chunk with k = 1; the default 4 MiB chunk with 4-of-8 gives 1 MiB."""

MAX_IDS_PER_QUERY = 1024
MAX_RECEIPT = 16 * 1024
"""Largest encoded receipt (1024 positions packed, with its fixed fields)."""
MAX_CERTIFICATE = 3 * 1024
"""Largest holder certificate carried beside a receipt (a node certificate is ~600 bytes)."""
OBJECT_ID_LENGTH = 32
MAX_POSITION = (1 << 32) - 1

FragmentId = Annotated[bytes, Bound(min_len=FRAGMENT_ID_LENGTH, max_len=FRAGMENT_ID_LENGTH)]
EncodedReceipt = Annotated[bytes, Bound(min_len=1, max_len=MAX_RECEIPT)]
Position = Annotated[int, Bound(min=0, max=MAX_POSITION)]


@message(30)
@dataclasses.dataclass(frozen=True, slots=True)
class PutFragment(Message):
    """Store ``data`` under ``fragment_id``; answered once the fragment is durable on disk.

    No receipt comes back: an object's id is its manifest's hash, known only once its last
    chunk is coded, so the writer asks for receipts with ``StateFragments`` afterwards."""

    fragment_id: FragmentId
    data: bytes = dataclasses.field(metadata={"min_len": 1, "max_len": MAX_FRAGMENT})


@message(31)
@dataclasses.dataclass(frozen=True, slots=True)
class PutFragmentReply(Message):
    stored: bool


@message(32)
@dataclasses.dataclass(frozen=True, slots=True)
class GetFragment(Message):
    fragment_id: FragmentId


@message(33)
@dataclasses.dataclass(frozen=True, slots=True)
class GetFragmentReply(Message):
    data: bytes = dataclasses.field(metadata={"min_len": 1, "max_len": MAX_FRAGMENT})


@message(34)
@dataclasses.dataclass(frozen=True, slots=True)
class HasFragments(Message):
    """Which of these fragments does the peer hold (and still verify)?"""

    fragment_ids: tuple[FragmentId, ...] = dataclasses.field(
        metadata={"max_len": MAX_IDS_PER_QUERY}
    )


@message(35)
@dataclasses.dataclass(frozen=True, slots=True)
class HasFragmentsReply(Message):
    present: tuple[bool, ...] = dataclasses.field(metadata={"max_len": MAX_IDS_PER_QUERY})


@message(36)
@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseFragments(Message):
    """From a steward to a node leaving the mesh: these fragments of yours are now stored
    elsewhere and the placement says so; delete them.  A node that is not leaving ignores it."""

    fragment_ids: tuple[FragmentId, ...] = dataclasses.field(
        metadata={"max_len": MAX_IDS_PER_QUERY}
    )


@message(37)
@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseFragmentsReply(Message):
    """How many of the released fragments were deleted."""

    released: int = dataclasses.field(metadata={"min": 0, "max": MAX_IDS_PER_QUERY})


@record
@dataclasses.dataclass(frozen=True, slots=True)
class PositionQuery(Record):
    """Positions of one object a holder is asked about, with the manifest's fragment ids."""

    object_id: bytes = dataclasses.field(
        metadata={"min_len": OBJECT_ID_LENGTH, "max_len": OBJECT_ID_LENGTH}
    )
    positions: tuple[Position, ...] = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_IDS_PER_QUERY}
    )
    fragment_ids: tuple[FragmentId, ...] = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_IDS_PER_QUERY}
    )


@message(45)
@dataclasses.dataclass(frozen=True, slots=True)
class StateFragments(Message):
    """Which of these fragments does the holder have (and still verify)?  Answered with one
    signed receipt per query, stating every position asked as held or missing; at most
    ``MAX_IDS_PER_QUERY`` positions in all."""

    queries: tuple[PositionQuery, ...] = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_IDS_PER_QUERY}
    )


@message(46)
@dataclasses.dataclass(frozen=True, slots=True)
class StateFragmentsReply(Message):
    """The holder's receipts, one per query in order, and its certificate."""

    receipts: tuple[EncodedReceipt, ...] = dataclasses.field(
        metadata={"max_len": MAX_IDS_PER_QUERY}
    )
    certificate: bytes = dataclasses.field(metadata={"max_len": MAX_CERTIFICATE})
