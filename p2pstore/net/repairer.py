"""Repair: rebuild the lost fragments of an object's chunks and publish where they went.

Strategy: a chunk that needs repair (see :func:`assess_chunk`) is rebuilt from any k live
fragments with the manifest alone (:func:`rebuild_fragments`: encrypt-then-code means no key and
no plaintext), its new fragments placed with the put's rendezvous under the rule, with the
survivors taken and every lost or failing holder excluded, and stored with the put's
store-with-fallback.  Each new holder then signs a receipt for what it took (a holder that
stores but will not sign fails the chunk's repair, retried next round), and the steward
publishes its placement record again with those receipts: placements merge by union, so two
stewards repairing at once at worst both add holders, and a reader counts them all.  Peers
that fail a store are reported to the steward's failure detector, so the next round offers
them nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from p2pstore.codec import Manifest
from p2pstore.codec.manifest import object_id_of
from p2pstore.codec.repair import rebuild_fragments
from p2pstore.core.placement import Candidate, within_rule
from p2pstore.core.placement_view import LocalEvidence, Placement
from p2pstore.core.repair_plan import ChunkAssessment, FailureDetector
from p2pstore.core.steward_round import ObjectRound, silent_peers
from p2pstore.core.store_plan import RepairPlacement
from p2pstore.errors import IntegrityError, NotEnoughFragments, PlacementError, PutFailed
from p2pstore.net.chunk_fetch import FRAGMENT_FAILURES, describe
from p2pstore.net.client import Client
from p2pstore.net.dht import Dht
from p2pstore.net.placements import publish_holdings
from p2pstore.net.publisher import RPC_FAILURES
from p2pstore.store import FragmentStore
from p2pstore.wire import ReleaseFragments
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY

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
    moved: tuple[tuple[Candidate, bytes], ...] = ()
    """(leaving holder, fragment id) of the shares moved off leaving holders."""


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


@dataclass(kw_only=True)
class Watched(ObjectRound):
    """An object a steward looks after in this round, with its manifest (to rebuild from)."""

    manifest: Manifest
    manifest_bytes: bytes


class Repairer:
    """Repairs watched objects for a steward (or ``p2pstore check --repair``)."""

    def __init__(
        self,
        dht: Dht,
        client: Client,
        detector: FailureDetector,
        unwelcome: Callable[[], set[bytes]] = set,
        evidence: LocalEvidence | None = None,
    ) -> None:
        """``unwelcome``: peers to place nothing on (leaving ones); ``evidence``: what the
        steward counts lost itself (released fragments join it)."""
        self.unwelcome = unwelcome
        self.evidence = evidence if evidence is not None else LocalEvidence()
        self.dht = dht
        self.node = dht.node
        self.client = client
        self.detector = detector

    async def repair_object(
        self, watched: Watched, limiter: trio.CapacityLimiter, failures: list[str]
    ) -> list[ChunkRepair]:
        """Repair every chunk of ``watched`` that needs it, ``limiter``'s worth at once (each
        holds k fetched and the rebuilt fragments: the limiter bounds the steward's memory
        over all objects); returns what was repaired and appends what failed to ``failures``.

        Why several chunks at once: one chunk's repair is mostly waiting (a TLS fetch of k
        fragments, then fsynced stores on other nodes), so one at a time used ~18% of a core's
        rebuild speed (benchmarks/repair.py)."""
        repaired: list[ChunkRepair] = []
        try:
            candidates = await self.client.candidates(watched.rule)
        except RPC_FAILURES as exc:
            failures.append(f"object {watched.object_id.hex()[:16]}: {exc}")
            return []
        # Peers silent to our checks or to an earlier repair get nothing new.
        failed = silent_peers(candidates, self.detector.health)
        failed |= self.unwelcome()

        async def repair_one(index: int, assessment: ChunkAssessment, token: object) -> None:
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
            else:
                repaired.append(done)
            finally:
                limiter.release_on_behalf_of(token)

        async with trio.open_nursery() as nursery:
            for index, assessment in enumerate(watched.assessments):
                if not watched.due(index):
                    continue
                token = object()  # one borrower per chunk: tasks do not hold the limiter
                await limiter.acquire_on_behalf_of(token)
                self.node.metrics.record_repair("started")
                nursery.start_soon(repair_one, index, assessment, token)
        repaired.sort(key=lambda done: done.chunk)
        now = trio.current_time()
        for node_id in failed:
            self.detector.missed(node_id, now)
        if not repaired:
            return []
        await self._publish_repairs(watched, repaired)
        await self._release(watched, repaired)
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
        """Rebuild the lost shares (from any k survivors) and copy the ones on leaving
        holders (from those holders, else rebuilt too), then store them within the rule.
        Peers that fail a store join ``failed`` (shared by the object's chunks)."""
        manifest, rule = watched.manifest, watched.rule
        row = watched.placement.chunks[index]
        ids = manifest.chunks[index].fragment_ids
        moving = watched.moving(index)
        wanted = tuple(sorted({*assessment.rebuild, *moving}))
        fragments: dict[int, bytes] = {}
        bytes_read = 0
        for share in moving:  # a leaving holder still serves: copy, no decoding
            holder = row[share]
            assert holder is not None
            try:
                fragments[share] = await self.client.fetch_from(holder, ids[share])
            except FRAGMENT_FAILURES as exc:
                log.info(
                    "copying share %d from leaving %s failed: %s", share, describe(holder), exc
                )
                continue
            bytes_read += len(fragments[share])
        missing = [share for share in wanted if share not in fragments]
        if missing:
            live = set(assessment.live)
            readable = tuple(h if share in live else None for share, h in enumerate(row))
            sources = await self.client.fetch_chunk(
                manifest, _replace_row(watched.placement, index, readable), index
            )
            bytes_read += sum(len(data) for data in sources.values())
            fragments.update(
                # fetch_chunk checked every survivor against the manifest's ids: no second hash.
                await self.client.run_sync(
                    partial(rebuild_fragments, hashed=True), manifest, index, sources, missing
                )
            )
        staying = [s for s in (*assessment.live, *assessment.silent) if s not in moving]
        keep = [h for s in staying if (h := row[s]) is not None]
        gone = {h.node_id for s in (*assessment.lost, *moving) if (h := row[s]) is not None}
        size = len(next(iter(fragments.values())))
        plan = RepairPlacement(
            wanted, ids, keep, candidates, rule, excluded=failed | gone, fragment_size=size
        )
        placed = plan.placed
        if len(placed) < len(wanted):
            log.warning(
                "chunk %d: only %d of the %d fragments to rebuild fit the rule %s",
                index,
                len(placed),
                len(wanted),
                rule.name,
                extra={"event": "repair_partial", "chunk": index},
            )

        async def store(share: int) -> None:
            await self.client.store_with_fallback(
                ids[share],
                fragments[share],
                placed[share],
                partial(plan.reselect, share),
                plan.excluded,
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
            for share in list(placed):
                nursery.start_soon(guarded, share)
        failed.update(plan.excluded - gone)
        if failures:
            raise failures[0]
        shares = await self._settle(watched, index, placed)
        return ChunkRepair(
            watched.object_id,
            index,
            shares,
            tuple(placed[s] for s in shares),
            bytes_read,
            sum(len(fragments[s]) for s in shares),
            moved=tuple((h, ids[s]) for s in moving if s in placed and (h := row[s]) is not None),
        )

    async def _settle(
        self, watched: Watched, index: int, placed: dict[int, Candidate]
    ) -> tuple[int, ...]:
        """Check the repaired row is within the rule and have every new holder sign for its
        share; returns the shares placed.  Raises :class:`PlacementError` or
        :class:`PutFailed`."""
        rule = watched.rule
        shares = tuple(sorted(placed))
        row = _with_holders(watched.placement.chunks[index], shares, [placed[s] for s in shares])
        if not within_rule([h for h in row if h is not None], rule):
            raise PlacementError(
                f"the repaired row of chunk {index} would break rule {rule.name}",
                rule=rule.name,
                needed=rule.n,
                available=len({h.datacenter for h in row if h is not None}),
            )
        unsigned = await self.client.confirm(
            watched.holdings,
            [(watched.holdings.position(index, s), holder) for s, holder in placed.items()],
        )
        if unsigned:
            raise PutFailed(
                f"chunk {index}: rebuilt fragments were stored but not signed for: "
                + "; ".join(unsigned),
                chunk=index,
            )
        return shares

    async def _release(self, watched: Watched, repaired: Sequence[ChunkRepair]) -> None:
        """Tell each leaving holder which of its fragments now live elsewhere (it deletes
        them and stops when none is left); best effort: it asks again if one is lost.  Its
        receipts for them no longer count here (it is told to delete what they speak of)."""
        moved: dict[bytes, tuple[Candidate, list[bytes]]] = {}
        for repair in repaired:
            for holder, fragment_id in repair.moved:
                moved.setdefault(holder.node_id, (holder, []))[1].append(fragment_id)
                share = watched.manifest.chunks[repair.chunk].fragment_ids.index(fragment_id)
                position = watched.holdings.position(repair.chunk, share)
                self.evidence.fragments[(holder.node_id, watched.object_id, position)] = (
                    "released: moved off a leaving node"
                )
        for holder, ids in moved.values():
            if holder.node_id == self.dht.node_id and self.client.local_store is not None:
                await self.client.run_sync(_delete_all, self.client.local_store, ids)
                continue
            for start in range(0, len(ids), MAX_IDS_PER_QUERY):
                batch = tuple(ids[start : start + MAX_IDS_PER_QUERY])
                try:
                    await self.node.call(
                        holder.node_id,
                        holder.address,
                        ReleaseFragments(fragment_ids=batch),
                        timeout=self.client.settings.fragment_timeout,
                    )
                except FRAGMENT_FAILURES as exc:
                    log.info("could not release fragments on %s: %s", describe(holder), exc)

    async def _publish_repairs(self, watched: Watched, done: list[ChunkRepair]) -> None:
        """Publish our placement record again, now with the new holders' receipts (a union:
        nothing anyone else published is replaced)."""
        copies = await publish_holdings(
            self.dht, watched.holdings, exclude=watched.unrelayed(self.evidence)
        )
        watched.placement = watched.holdings.view(
            self.dht.wall_clock(),
            self.dht.trust(),
            exclude=self.evidence.exclusion(watched.object_id),
        )
        log.info(
            "published the placement of object %s (%d chunks repaired) on %d peers",
            watched.object_id.hex()[:16],
            len(done),
            copies,
            extra={"event": "placement_published", "object": watched.object_id.hex()},
        )


def _delete_all(store: FragmentStore, ids: Sequence[bytes]) -> None:
    """A leaving steward releases its own moved fragments."""
    for fragment_id in ids:
        store.delete(fragment_id)


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
