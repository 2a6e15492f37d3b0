"""What one reader sees of an object's placement at one instant, and what it excludes on its
own evidence.

Why apart from :mod:`p2pstore.core.holders`: the receipts (a CRDT) and their container are
one idea; the read-only view a steward, a client or ``stat`` works from is another, used by
modules that never touch a receipt.  Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from p2pstore.core.placement import Candidate
from p2pstore.core.receipts import RECEIPT_TTL
from p2pstore.errors import LocalProtocolError

OBJECT_ID_BYTES: Final = 32
STALE_AFTER: Final = RECEIPT_TTL / 2
"""Seconds after which a holder's receipt is shown stale: its stewards stopped renewing it."""

Exclusion = Callable[[bytes, int], bool]
"""``exclude(holder, position)``: True if the reader counts that fragment lost on its own
evidence."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Holders of an object's fragments as one reader sees them at one instant.

    ``chunks[i][share]`` is the holder with the freshest receipt (None: nobody holds it);
    ``others[i][share]`` the further receipted holders of that share (``()`` when there are
    none anywhere), by node id."""

    object_id: bytes
    n: int
    chunks: tuple[tuple[Candidate | None, ...], ...]
    others: tuple[tuple[tuple[Candidate, ...], ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.object_id) != OBJECT_ID_BYTES:
            raise LocalProtocolError("a placement names a 32-byte object id")
        if not 1 <= self.n <= 256 or any(len(row) != self.n for row in self.chunks):
            raise LocalProtocolError(f"every chunk of a placement has n={self.n} entries")
        if self.others:
            if len(self.others) != len(self.chunks) or any(
                len(row) != self.n for row in self.others
            ):
                raise LocalProtocolError("a placement's other holders have one row per chunk")
            if not any(extra for row in self.others for extra in row):
                object.__setattr__(self, "others", ())  # one value, one representation

    def holders_of(self, chunk: int, share: int) -> tuple[Candidate, ...]:
        """Every receipted holder of the share, freshest first."""
        primary = self.chunks[chunk][share]
        extra = self.others[chunk][share] if self.others else ()
        return extra if primary is None else (primary, *extra)

    def holders(self) -> list[Candidate]:
        """Every distinct holder, in first-seen order (primary holders first)."""
        seen: dict[bytes, Candidate] = {}
        primary = [holder for row in self.chunks for holder in row]
        extra = [holder for row in self.others for share in row for holder in share]
        for holder in [*primary, *extra]:
            if holder is not None and holder.node_id not in seen:
                seen[holder.node_id] = holder
        return list(seen.values())


def placement_of(object_id: bytes, n: int, rows: Sequence[Sequence[Candidate | None]]) -> Placement:
    """A :class:`Placement` of one holder per share (tests, displays)."""
    return Placement(object_id, n, tuple(tuple(row) for row in rows))


@dataclass(frozen=True, slots=True)
class Statement:
    """A holder's winning statement about one position: held or not, and its receipt's times
    (Unix milliseconds)."""

    held: bool
    issued_ms: int
    expires_ms: int

    def fresh(self, now: float) -> bool:
        """Whether the receipt was issued less than :data:`STALE_AFTER` before ``now``."""
        return now * 1000 - self.issued_ms < STALE_AFTER * 1000


@dataclass
class LocalEvidence:
    """What this node counts lost on its own evidence, whatever holders sign: whole holders
    (e.g. caught lying by an audit) and single fragments ``(holder, object id, position)``.

    The steward's hook for storage audits: excluded statements count in none of its views, and
    it relays a receipt only while it still counts one of the fragments it states (a signed
    receipt cannot be cut)."""

    holders: dict[bytes, str] = field(default_factory=dict)
    fragments: dict[tuple[bytes, bytes, int], str] = field(default_factory=dict)

    def forget(self, key: bytes) -> None:
        """Drop the fragment evidence of the objects whose ids start with ``key`` (an
        object's DHT key: a steward that no longer stewards it)."""
        self.fragments = {
            slot: why for slot, why in self.fragments.items() if not slot[1].startswith(key)
        }

    def exclusion(self, object_id: bytes) -> Exclusion | None:
        """The :data:`Exclusion` for one object's views (None when there is no evidence)."""
        if not self.holders and not self.fragments:
            return None
        return lambda holder, position: (
            holder in self.holders or (holder, object_id, position) in self.fragments
        )


__all__ = [
    "OBJECT_ID_BYTES",
    "STALE_AFTER",
    "Exclusion",
    "LocalEvidence",
    "Placement",
    "Statement",
    "placement_of",
]
