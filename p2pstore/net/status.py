"""What the mesh holds of an object now: ``p2pstore stat``.

Every receipted holder of the object (as the union of its placement records says) is asked to
sign which of its fragments it has, one batched ``StateFragments`` per holder; a share counts
as present when one of its holders signs for it.  Beside that fresh answer, the receipt that
placed each holder there is kept, so an operator sees whether stewards keep renewing it.

A signature is a claim, not a proof, so each holder that signed for a fragment is then audited
once on one of them, drawn at random (:func:`~p2pstore.net.audits.audit_each`: one leaf and its
path, a whole-fragment read on the holder); a failed audit names the holder, and none of the
fragments it signed for counts as present: its signature has just been shown false, and
counting the rest would let one member that says yes to everything keep ``stat`` "readable"
while ``get`` fails (issue 13).  What the object's stewards learnt from their own
audits stays on their nodes (``p2pstore_holder_audit_failures_total``, ``/status``, the
``audit_failed`` log events): no message asks a steward for it, so ``stat`` shows what it
proved itself.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from p2pstore.codec import Manifest, ReadCap, VerifyCap
from p2pstore.core.audit import AuditPlanner, AuditSettings, Evidence, WatchedFragment
from p2pstore.core.holders import Holdings
from p2pstore.core.placement import Candidate
from p2pstore.core.placement_view import Placement, Statement
from p2pstore.core.steward_round import Said
from p2pstore.net.audits import AuditTarget, audit_each, audit_reply_error
from p2pstore.net.placements import Ask
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
    audits: Mapping[bytes, Evidence] = field(default_factory=dict)
    """Per holder that signed for a fragment: the audit of one of them, made by this check."""

    def audit_failures(self) -> list[Evidence]:
        """The audits failed in this check, by holder id."""
        return [e for _, e in sorted(self.audits.items()) if e.verdict.failed]

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


async def object_status(
    client: Client, cap: ReadCap | VerifyCap, rng: random.Random | None = None
) -> ObjectStatus:
    """Ask every receipted holder to sign which of the object's fragments it has (one
    batched request per holder), then audit each on one fragment it signed for (drawn with
    ``rng``, by default ``random.SystemRandom()``); needs only the verify cap.  A holder that
    refuses to sign, or signs something invalid, counts as not having them; so does one that
    fails its audit."""
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
    audits = await _audit_holders(client, manifest, holdings, wanted, answers, rng=rng)
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
        manifest, placement, tuple(present), frozenset(leaving), answers, published, now, audits
    )


async def _audit_holders(
    client: Client,
    manifest: Manifest,
    holdings: Holdings,
    wanted: Mapping[bytes, tuple[Candidate, list[int]]],
    answers: dict[tuple[bytes, int], bool | None],
    *,
    rng: random.Random | None,
) -> dict[bytes, Evidence]:
    """Audit each holder once on a fragment it just signed for; a failure sets every answer
    of that holder to False.  Returns the evidence by holder."""
    targets = []
    for holder_id, (holder, positions) in wanted.items():
        for position in positions:
            if answers.get((holder_id, position)):
                chunk = manifest.chunks[position // manifest.n]
                fragment_id = chunk.fragment_ids[position % manifest.n]
                fragment = WatchedFragment(holder_id, fragment_id, chunk.block_size)
                targets.append(AuditTarget(holder, fragment, holdings.object_id, position))
    settings = AuditSettings(answer_timeout=client.settings.fragment_timeout)
    planner = AuditPlanner(settings, rng or random.SystemRandom(), audit_reply_error)
    found = await audit_each(client.node, targets, planner)
    for evidence in found:
        if evidence.verdict.failed:
            for position in wanted[evidence.challenge.holder][1]:
                answers[(evidence.challenge.holder, position)] = False
    return {evidence.challenge.holder: evidence for evidence in found}
