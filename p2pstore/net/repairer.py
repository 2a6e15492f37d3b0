"""Repair: rebuild the lost fragments of an object's chunks and publish where they went.

Strategy: a chunk that needs repair (see :func:`assess_chunk`) is rebuilt from any k live
fragments with the manifest alone (:func:`rebuild_fragments`: encrypt-then-code means no key and
no plaintext), its new fragments placed with the put's rendezvous under the rule, with the
survivors taken and every lost or failing holder excluded, and stored with the put's
store-with-fallback.  Then one placement record, newer than any seen, replaces the repaired
chunks' rows whole: two stewards' versions never mix within a chunk, so whichever a reader
takes, every chunk is within its rule.  Peers that fail a store are reported to the steward's
failure detector, so the next round offers them nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from p2pstore.codec import Manifest
from p2pstore.codec.manifest import object_id_of
from p2pstore.codec.repair import rebuild_fragments
from p2pstore.core.holders import Placement, newest_placement
from p2pstore.core.placement import Candidate, choose_holder, within_rule
from p2pstore.core.records import RULES, RecordKind, manifest_key, sign_record
from p2pstore.core.repair_plan import (
    ChunkAssessment,
    FailureDetector,
    FragmentReport,
    Verdict,
    place_repairs,
)
from p2pstore.core.rules import CodingRule
from p2pstore.errors import IntegrityError, NotEnoughFragments, PlacementError, PutFailed
from p2pstore.net.client import Client, describe
from p2pstore.net.dht import RPC_FAILURES, Dht

log = logging.getLogger("p2pstore.steward")


@dataclass(frozen=True, slots=True)
class ChunkRepair:
    """One repaired chunk: the shares rebuilt, where they went, and the bytes it moved."""

    object_id: bytes
    chunk: int
    shares: tuple[int, ...]
    holders: tuple[Candidate, ...]
    bytes_read: int
    bytes_written: int


@dataclass(frozen=True, slots=True)
class Known:
    """An object known by its manifest: its id, the manifest and the manifest's bytes."""

    object_id: bytes
    manifest: Manifest
    manifest_bytes: bytes

    @classmethod
    def of(cls, manifest: Manifest) -> Known:
        encoded = manifest.encode()
        return cls(object_id_of(encoded), manifest, encoded)


@dataclass
class Watched:
    """An object a steward looks after in this round."""

    object_id: bytes
    manifest: Manifest
    manifest_bytes: bytes
    rule: CodingRule
    placement: Placement
    sequence: int
    """The highest placement record sequence seen: a new version must exceed it."""
    reports: dict[tuple[int, int], FragmentReport] = field(default_factory=dict)
    assessments: list[ChunkAssessment] = field(default_factory=list)


class Repairer:
    """Repairs watched objects for a steward (or ``p2pstore check --repair``)."""

    def __init__(self, dht: Dht, client: Client, detector: FailureDetector) -> None:
        self.dht = dht
        self.node = dht.node
        self.client = client
        self.detector = detector

    def _silent(self, node_id: bytes) -> bool:
        return self.detector.health(node_id).silent_since is not None

    async def repair_object(
        self, watched: Watched, limiter: trio.CapacityLimiter, failures: list[str]
    ) -> list[ChunkRepair]:
        """Repair every chunk of ``watched`` that needs it; returns what was repaired and
        appends what failed to ``failures``."""
        async with limiter:
            rows = list(watched.placement.chunks)
            repaired: list[ChunkRepair] = []
            try:
                candidates = await self.client.candidates(watched.rule)
            except RPC_FAILURES as exc:
                failures.append(f"object {watched.object_id.hex()[:16]}: {exc}")
                return []
            # Peers silent to our checks or to an earlier repair get nothing new.
            failed = {c.node_id for c in candidates if self._silent(c.node_id)}
            for index, assessment in enumerate(watched.assessments):
                if assessment.verdict is not Verdict.NEEDS_REPAIR:
                    continue
                self.node.metrics.record_repair("started")
                try:
                    done = await self._repair_chunk(watched, index, assessment, candidates, failed)
                except (NotEnoughFragments, IntegrityError, PlacementError, PutFailed) as exc:
                    self.node.metrics.record_repair("failed")
                    problem = f"object {watched.object_id.hex()[:16]} chunk {index}: {exc}"
                    failures.append(problem)
                    log.warning(
                        "repair failed, will retry next round: %s",
                        problem,
                        extra={"event": "repair_failed", "object": watched.object_id.hex()},
                    )
                    continue
                rows[index] = _with_holders(rows[index], done.shares, done.holders)
                repaired.append(done)
            now = trio.current_time()
            for node_id in failed:
                self.detector.missed(node_id, now)
            if not repaired:
                return []
            await self._publish_repairs(watched, rows, repaired)
            for done in repaired:
                self.node.metrics.record_repair("finished")
                self.node.metrics.record_repair_bytes(done.bytes_read, done.bytes_written)
                log.info(
                    "repaired chunk %d of object %s: rebuilt shares %s on %s",
                    done.chunk,
                    watched.object_id.hex()[:16],
                    ",".join(map(str, done.shares)),
                    ", ".join(describe(h) for h in done.holders),
                    extra={
                        "event": "repair_done",
                        "object": watched.object_id.hex(),
                        "chunk": done.chunk,
                    },
                )
            return repaired

    async def _repair_chunk(
        self,
        watched: Watched,
        index: int,
        assessment: ChunkAssessment,
        candidates: list[Candidate],
        failed: set[bytes],
    ) -> ChunkRepair:
        """Fetch k survivors, rebuild the lost shares, store them within the rule; peers
        that fail a store join ``failed`` (shared by the object's chunks)."""
        manifest, rule = watched.manifest, watched.rule
        row = watched.placement.chunks[index]
        ids = manifest.chunks[index].fragment_ids
        live = set(assessment.live)
        readable = tuple(h if share in live else None for share, h in enumerate(row))
        sources = await self.client.fetch_chunk(
            manifest, _replace_row(watched.placement, index, readable), index
        )
        bytes_read = sum(len(data) for share, data in sources.items() if row[share] is not None)
        rebuilt = await self.client.run_sync(
            rebuild_fragments, manifest, index, sources, assessment.rebuild
        )
        keep = [h for s in (*assessment.live, *assessment.silent) if (h := row[s]) is not None]
        excluded = failed
        excluded.update(h.node_id for s in assessment.lost if (h := row[s]) is not None)
        size = len(next(iter(rebuilt.values())))
        placed = place_repairs(
            assessment.rebuild, ids, keep, candidates, rule, excluded=excluded, fragment_size=size
        )

        async def store(share: int) -> None:
            def reselect() -> Candidate:
                others = [*keep, *(h for s, h in placed.items() if s != share)]
                placed[share] = choose_holder(
                    ids[share], candidates, rule, taken=others, excluded=excluded
                )
                return placed[share]

            placed[share] = await self.client.store_with_fallback(
                ids[share],
                rebuilt[share],
                placed[share],
                reselect,
                excluded,
                what=f"rebuilt share {share} of chunk {index}",
                chunk=index,
            )

        failures: list[PutFailed] = []

        async def guarded(share: int) -> None:
            try:
                await store(share)
            except PutFailed as failure:
                failures.append(failure)

        async with trio.open_nursery() as nursery:
            for share in assessment.rebuild:
                nursery.start_soon(guarded, share)
        if failures:
            raise failures[0]
        shares = tuple(sorted(placed))
        new_row = _with_holders(row, shares, [placed[s] for s in shares])
        if not within_rule([h for h in new_row if h is not None], rule):
            raise PlacementError(
                f"the repaired row of chunk {index} would break rule {rule.name}",
                rule=rule.name,
                needed=rule.n,
                available=len({h.datacenter for h in new_row if h is not None}),
            )
        return ChunkRepair(
            watched.object_id,
            index,
            shares,
            tuple(placed[s] for s in shares),
            bytes_read,
            sum(len(rebuilt[s]) for s in shares),
        )

    async def _publish_repairs(
        self, watched: Watched, rows: list[tuple[Candidate | None, ...]], done: list[ChunkRepair]
    ) -> None:
        """Publish the repaired rows as a new placement version, over the newest one seen:
        rows are replaced whole, so two stewards' versions never mix within a chunk."""
        key = manifest_key(watched.object_id)
        records = await self.dht.find_records(RecordKind.PLACEMENT, key)
        latest, sequence, _ = newest_placement(
            records, watched.object_id, watched.manifest.chunk_count, watched.manifest.n
        )
        base = list(latest.chunks) if latest is not None else list(watched.placement.chunks)
        for repair in done:
            base[repair.chunk] = rows[repair.chunk]
        placement = Placement(watched.object_id, watched.manifest.n, tuple(base))
        now = int(self.dht.wall_clock())
        record = sign_record(
            self.node.credentials,
            RecordKind.PLACEMENT,
            key,
            placement.encode(),
            sequence=max(now, sequence + 1, watched.sequence + 1),
            expires_at=now + RULES[RecordKind.PLACEMENT].max_ttl,
        )
        copies = await self.dht.publish(record)
        watched.placement, watched.sequence = placement, record.sequence
        log.info(
            "published placement version %d of object %s on %d peers",
            record.sequence,
            watched.object_id.hex()[:16],
            copies,
            extra={"event": "placement_published", "object": watched.object_id.hex()},
        )


def _replace_row(placement: Placement, index: int, row: tuple[Candidate | None, ...]) -> Placement:
    rows = list(placement.chunks)
    rows[index] = row
    return Placement(placement.object_id, placement.n, tuple(rows))


def _with_holders(
    row: tuple[Candidate | None, ...], shares: Sequence[int], holders: Sequence[Candidate]
) -> tuple[Candidate | None, ...]:
    new = list(row)
    for share, holder in zip(shares, holders, strict=True):
        new[share] = holder
    return tuple(new)
