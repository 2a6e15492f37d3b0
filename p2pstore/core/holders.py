"""The placement record's value: which peer holds which fragment of an object.

Why a record and not a recomputation: rendezvous placement depends on the peers the putter
could see, which a reader (or a steward, later) does not know.  The record lists each holder
once (node id, address hint, datacenter and region as its certificate said when the fragment was
stored) and a table of holder indexes, ``n`` per chunk, two bytes each, so a 64 GiB object of
4 MiB chunks still fits the 256 KiB placement record.  An address is a hint: the reader dials it
expecting the node id, so a stale or lying entry costs a failed dial, never wrong bytes
(fragments are checked against the manifest's ids).

Encoding: canonical msgpack ``[PLACEMENT_FORMAT, object_id, n, [[node_id, address, datacenter,
region], ...], table]``.  Pure.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from p2pstore.core.placement import Candidate
from p2pstore.core.records import RULES, RecordKind
from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.wire.dht import SignedRecord

PLACEMENT_FORMAT: Final = 1
NO_HOLDER: Final = 0xFFFF
"""Table entry of a fragment with no known holder."""
MAX_HOLDERS: Final = NO_HOLDER - 1
OBJECT_ID_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class Placement:
    """Holders of an object's fragments: ``chunks[i][share]`` is a holder, or None if unknown."""

    object_id: bytes
    n: int
    chunks: tuple[tuple[Candidate | None, ...], ...]

    def __post_init__(self) -> None:
        if len(self.object_id) != OBJECT_ID_BYTES:
            raise LocalProtocolError("a placement names a 32-byte object id")
        if not 1 <= self.n <= 256 or any(len(row) != self.n for row in self.chunks):
            raise LocalProtocolError(f"every chunk of a placement has n={self.n} entries")

    def holders(self) -> list[Candidate]:
        """Every distinct holder, in first-seen order."""
        seen: dict[bytes, Candidate] = {}
        for row in self.chunks:
            for holder in row:
                if holder is not None and holder.node_id not in seen:
                    seen[holder.node_id] = holder
        return list(seen.values())

    def encode(self) -> bytes:
        """The record value.  Raises :class:`LocalProtocolError` if it would not fit a
        placement record (an object of too many chunks)."""
        holders = self.holders()
        if len(holders) > MAX_HOLDERS:
            raise LocalProtocolError(f"a placement lists at most {MAX_HOLDERS} holders")
        index = {holder.node_id: i for i, holder in enumerate(holders)}
        table = bytearray()
        for row in self.chunks:
            for holder in row:
                table += struct.pack(">H", NO_HOLDER if holder is None else index[holder.node_id])
        entries = [[h.node_id, h.address, h.datacenter, h.region] for h in holders]
        value: bytes = msgpack.packb(
            [PLACEMENT_FORMAT, self.object_id, self.n, entries, bytes(table)], use_bin_type=True
        )
        limit = RULES[RecordKind.PLACEMENT].max_value
        if len(value) > limit:
            raise LocalProtocolError(
                f"the placement of {len(self.chunks)} chunks takes {len(value)} bytes, more than "
                f"a placement record's {limit}: use a larger chunk size for this object"
            )
        return value

    def merged(self, other: Placement) -> Placement:
        """Both placements' knowledge: where this one has no holder, take the other's."""
        if (other.object_id, other.n, len(other.chunks)) != (
            self.object_id,
            self.n,
            len(self.chunks),
        ):
            raise LocalProtocolError("cannot merge placements of different objects")
        rows = tuple(
            tuple(a if a is not None else b for a, b in zip(mine, theirs, strict=True))
            for mine, theirs in zip(self.chunks, other.chunks, strict=True)
        )
        return Placement(self.object_id, self.n, rows)


def decode_placement(data: bytes, object_id: bytes, chunk_count: int, n: int) -> Placement:
    """Parse a placement record's value for the object whose manifest says ``chunk_count``
    chunks of ``n`` fragments.

    Raises :class:`RemoteProtocolError` naming the problem for anything malformed or for
    another object.
    """
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=len(data))
    except (ValueError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"placement record is not msgpack: {exc}") from None
    if not (isinstance(items, list) and len(items) == 5 and items[0] == PLACEMENT_FORMAT):
        raise RemoteProtocolError("placement record has an unknown layout")
    _, record_object, record_n, entries, table = items
    if record_object != object_id or record_n != n:
        raise RemoteProtocolError("placement record is for another object or coding")
    if not isinstance(entries, list) or not isinstance(table, bytes):
        raise RemoteProtocolError("placement record has malformed holders")
    if len(table) != 2 * chunk_count * n:
        raise RemoteProtocolError(
            f"placement record covers {len(table) // 2} fragments, the manifest {chunk_count * n}"
        )
    holders = [_holder(entry) for entry in entries]
    slots = struct.unpack(f">{chunk_count * n}H", table)
    rows = []
    for chunk in range(chunk_count):
        row: list[Candidate | None] = []
        for slot in slots[chunk * n : (chunk + 1) * n]:
            if slot == NO_HOLDER:
                row.append(None)
            elif slot < len(holders):
                row.append(holders[slot])
            else:
                raise RemoteProtocolError("placement record points past its holder list")
        rows.append(tuple(row))
    return Placement(object_id, n, tuple(rows))


def _holder(entry: object) -> Candidate:
    if not (
        isinstance(entry, list)
        and len(entry) == 4
        and isinstance(entry[0], bytes)
        and len(entry[0]) == 20
        and all(isinstance(field, str) and 0 < len(field) <= 255 for field in entry[1:])
    ):
        raise RemoteProtocolError("placement record has a malformed holder entry")
    return Candidate(entry[0], entry[1], entry[2], entry[3])


def placement_of(object_id: bytes, n: int, rows: Sequence[Sequence[Candidate | None]]) -> Placement:
    """A :class:`Placement` from per-chunk holder lists."""
    return Placement(object_id, n, tuple(tuple(row) for row in rows))


def newest_placement(
    records: Iterable[SignedRecord], object_id: bytes, chunk_count: int, n: int
) -> tuple[Placement | None, int, list[str]]:
    """What a set of placement records says, for readers and stewards alike: the versions
    merged newest (highest sequence) first, so a repair's newer record wins for every share it
    names and older ones fill only what it leaves unknown.  Returns the merged placement (None
    if no record was valid), the highest sequence seen (0 if none) and why any record was
    skipped; raises nothing for bad records, which any peer can send."""
    merged: Placement | None = None
    highest = 0
    problems: list[str] = []
    for record in sorted(records, key=lambda r: r.sequence, reverse=True):
        try:
            found = decode_placement(record.value, object_id, chunk_count, n)
        except RemoteProtocolError as exc:
            problems.append(f"ignoring a malformed placement record: {exc}")
            continue
        highest = max(highest, record.sequence)
        merged = found if merged is None else merged.merged(found)
    return merged, highest, problems
