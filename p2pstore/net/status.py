"""What the mesh holds of an object now: ``p2pstore stat``.

Every receipted holder of the object (as the union of its placement records says) is asked to
sign which of its fragments it has, one batched ``StateFragments`` per holder; a share counts
as present when one of its holders signs for it.  Beside that fresh answer, the receipt that
placed each holder there is kept, so an operator sees whether stewards keep renewing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from p2pstore.codec import Manifest, ReadCap, VerifyCap
from p2pstore.core.holders import Holdings, Placement, Statement
from p2pstore.core.placement import Candidate
from p2pstore.net.placements import Ask, Said
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY

if TYPE_CHECKING:
    from p2pstore.net.client import Client


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """What the mesh holds of an object: per chunk and share, its receipted holders and
    whether one of them has the fragment (True/False), or ``None`` if none could be asked."""

    manifest: Manifest
    placement: Placement
    present: tuple[tuple[bool | None, ...], ...]
    leaving: frozenset[bytes] = frozenset()
    """Holders that answered they are being drained (``p2pstore node drain``): their shares
    are ``None`` (not confirmed live; stewards are moving them), but not silent."""
    answers: Mapping[tuple[bytes, int], bool | None] = field(default_factory=dict)
    """Per (holder, position): what the holder just signed (None: it did not answer)."""
    receipts: Mapping[tuple[bytes, int], Statement] = field(default_factory=dict)
    """Per (holder, position): the published receipt the placement counts."""
    checked_at: float = 0.0
    """Unix time of the check (receipts' freshness is judged at it)."""

    def live(self, chunk: int) -> int:
        """Fragments of ``chunk`` confirmed held."""
        return sum(1 for state in self.present[chunk] if state)

    @property
    def readable(self) -> bool:
        """Whether every chunk has at least k confirmed fragments."""
        return all(self.live(i) >= self.manifest.k for i in range(len(self.present)))

    def answer(self, chunk: int, share: int, holder: bytes) -> bool | None:
        """What ``holder`` signed for the share now (None: no answer)."""
        return self.answers.get((holder, chunk * self.manifest.n + share))

    def receipt(self, chunk: int, share: int, holder: bytes) -> Statement | None:
        """The published receipt by which ``holder`` holds the share."""
        return self.receipts.get((holder, chunk * self.manifest.n + share))


async def object_status(client: Client, cap: ReadCap | VerifyCap) -> ObjectStatus:
    """Ask every receipted holder to sign which of the object's fragments it has (one
    batched request per holder); needs only the verify cap.  A holder that refuses to sign,
    or signs something invalid, counts as not having them."""
    manifest = await client.fetch_manifest(cap.object_id)
    holdings = await client.fetch_holdings(cap.object_id, manifest)
    now, trust = client.dht.wall_clock(), client.dht.trust()
    placement = holdings.view(now, trust)
    published = {slot: st for slot, st in holdings.statements(now, trust).items() if st.held}
    wanted: dict[bytes, tuple[Candidate, list[int]]] = {}
    for index in range(manifest.chunk_count):
        for share in range(manifest.n):
            for holder in placement.holders_of(index, share):
                entry = wanted.setdefault(holder.node_id, (holder, []))
                entry[1].append(holdings.position(index, share))
    answers: dict[tuple[bytes, int], bool | None] = {}
    leaving: set[bytes] = set()
    asked = Holdings(cap.object_id, [c.fragment_ids for c in manifest.chunks])

    async def ask(holder: Candidate, positions: list[int]) -> None:
        for start in range(0, len(positions), MAX_IDS_PER_QUERY):
            batch = tuple(sorted(positions[start : start + MAX_IDS_PER_QUERY]))
            answer = await client.ask(holder, [Ask(asked, batch)])
            if answer.said is Said.LEAVING:
                leaving.add(holder.node_id)
            held = answer.held()
            for position in batch:
                if answer.said is Said.STATED or answer.said is Said.FAILED:
                    stated = (cap.object_id, position) in held
                    answers[(holder.node_id, position)] = stated
                else:
                    answers[(holder.node_id, position)] = None

    async with trio.open_nursery() as nursery:
        for holder, positions in wanted.values():
            nursery.start_soon(ask, holder, positions)
    present: list[tuple[bool | None, ...]] = []
    for index in range(manifest.chunk_count):
        row: list[bool | None] = []
        for share in range(manifest.n):
            said = [
                answers.get((h.node_id, holdings.position(index, share)))
                for h in placement.holders_of(index, share)
            ]
            row.append(True if True in said else (False if False in said else None))
        present.append(tuple(row))
    return ObjectStatus(
        manifest, placement, tuple(present), frozenset(leaving), answers, published, now
    )
