"""The client: put and get objects through the mesh.

Put: the object is read chunk by chunk, encrypted and coded (in a worker thread: zfec and the
AEAD release the GIL), and each chunk's n fragments are sent concurrently to the holders that
placement chooses; a holder that fails or refuses is replaced by the next one the rule allows.
Only when every fragment of every chunk is durable, and every holder signed a receipt for what
it holds (asked once the manifest, hence the object id, exists), are the manifest and the
placement record (those receipts: ``core.holders``) published, and only then is a capability
returned.  Get: the manifest is found in the DHT and checked against the object id, the
placement is the union of the receipts of every placement record found, k fragments per chunk
are fetched from the quickest receipted holders (another holder is asked when one fails, lies
or is slow), checked, decoded, authenticated and written out in order.  Memory is bounded by
``chunks_in_flight`` encoded chunks either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

import trio

from p2pstore.codec import (
    DEFAULT_CHUNK_SIZE,
    EncodedChunk,
    Manifest,
    ObjectDecoder,
    ObjectEncoder,
    ReadCap,
    VerifyCap,
    random_key,
)
from p2pstore.codec.chunking import chunk_length
from p2pstore.core.contact import Contact
from p2pstore.core.holders import Holdings, Placement
from p2pstore.core.placement import Candidate, check_feasible, choose_holder, place_chunk
from p2pstore.core.rules import CodingRule
from p2pstore.core.steward_round import Said
from p2pstore.core.store_plan import STORE_ATTEMPTS, StoreAttempts
from p2pstore.errors import (
    PeerRefused,
    PeerUnreachable,
    PlacementError,
    PutFailed,
)
from p2pstore.net.capacity import weigh_by_free_space
from p2pstore.net.chunk_fetch import FRAGMENT_FAILURES, ChunkFetcher, describe, read_in_order
from p2pstore.net.dht import Dht
from p2pstore.net.fragments import store_fragment
from p2pstore.net.object_records import (
    find_holdings,
    find_manifest,
    find_placement,
    publish_object,
)
from p2pstore.net.placements import Answer, Ask, ask_holder
from p2pstore.net.put_source import convergent_key, read_and_encode
from p2pstore.net.status import ObjectStatus, object_status
from p2pstore.store import FragmentStore
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY

log = logging.getLogger("p2pstore.client")
T = TypeVar("T")

Progress = Callable[[int], None]
"""Called with the number of plaintext bytes just finished."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How a client puts and gets; the defaults suit a datacenter mesh."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunks_in_flight: int = 3
    """Chunks being encoded, sent, fetched or decoded at once: memory is about this many times
    ``chunk_size * n / k``."""
    fragment_timeout: float = 60.0
    """Seconds one fragment store or fetch may take (a 1 MiB fragment over a slow link)."""
    store_attempts: int = STORE_ATTEMPTS
    """Holders tried for one fragment before the put fails (the simulator's budget too)."""
    hedge_after: float = 10.0
    """Seconds a chunk's fetches may take before one more holder is asked as well."""
    min_record_copies: int = 3
    """Peers that must accept the manifest record (fewer if the mesh is smaller)."""
    in_threads: bool = True
    """Encode and decode in a worker thread; False under a ``MockClock`` (tests)."""
    worker_threads: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))
    """Threads hashing, coding and encrypting at once: one per core.  More would not use more
    cores, and every new thread gets a malloc arena of its own: with trio's default of 40, a
    128 MiB get kept 100-125 MiB more resident, against 79 MiB with two."""


@dataclass(frozen=True, slots=True)
class PutResult:
    """A finished put: the capabilities, the manifest and where every fragment went."""

    read_cap: ReadCap
    manifest: Manifest
    placement: Placement
    record_copies: int

    @property
    def verify_cap(self) -> VerifyCap:
        return self.read_cap.verify_cap()


@dataclass
class _PutState:
    """What one put shares between its chunk workers."""

    candidates: list[Candidate]
    rule: CodingRule
    size: int
    chunk_size: int
    excluded: set[bytes] = field(default_factory=set)
    rows: dict[int, tuple[Candidate, ...]] = field(default_factory=dict)
    failure: PutFailed | None = None


class Client:
    """Puts and gets objects over a running :class:`Node` and its :class:`Dht` (both started
    by the caller; the node may be a client node that does not listen)."""

    def __init__(
        self,
        dht: Dht,
        *,
        settings: ClientSettings | None = None,
        local_store: FragmentStore | None = None,
    ) -> None:
        """``local_store``: this node's own fragments, read directly when it is a holder."""
        self.dht = dht
        self.local_store = local_store
        self.node = dht.node
        self.settings = settings or ClientSettings()
        self._threads = trio.CapacityLimiter(self.settings.worker_threads)
        self.fetcher = ChunkFetcher(
            self.node,
            fragment_timeout=self.settings.fragment_timeout,
            hedge_after=self.settings.hedge_after,
            local_store=local_store,
            run_sync=self.run_sync,
        )

    # -- put --------------------------------------------------------------------------------

    async def put(
        self,
        source: BinaryIO,
        size: int,
        rule: CodingRule,
        *,
        convergence_secret: bytes | None = None,
        key: bytes | None = None,
        progress: Progress | None = None,
    ) -> PutResult:
        """Store ``size`` bytes read from ``source`` under ``rule``; return the capabilities.

        The key is convergent with ``convergence_secret`` (``source`` is then read twice and must
        be seekable), else ``key``, else random.  Raises :class:`PlacementError` if the peers
        that can be reached cannot meet the rule, :class:`PutFailed` naming the chunk and the
        reason if a chunk could not be stored, and what reading ``source`` raises.
        """
        if key is None and convergence_secret is not None:
            key = await self.run_sync(
                convergent_key, source, size, convergence_secret, self.settings.chunk_size
            )
            await self.run_sync(source.seek, 0)
        encoder = ObjectEncoder(
            key or random_key(os.urandom(32)),
            size,
            k=rule.k,
            n=rule.n,
            chunk_size=self.settings.chunk_size,
            rule=rule.name,
        )
        candidates = await self.candidates(rule)
        check_feasible(candidates, rule)
        state = _PutState(candidates, rule, size, self.settings.chunk_size)
        send, receive = trio.open_memory_channel[EncodedChunk](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._encode_all, source, encoder, send, state)
            async with receive:
                for _ in range(self.settings.chunks_in_flight):
                    nursery.start_soon(self._chunk_worker, receive.clone(), state, progress)
        if state.failure is not None:
            raise state.failure
        encoded = encoder.finish()
        holdings = Holdings(encoded.object_id, [c.fragment_ids for c in encoded.manifest.chunks])
        placed = [
            (holdings.position(index, share), holder)
            for index in range(encoder.chunk_count)
            for share, holder in enumerate(state.rows[index])
        ]
        problems = await self.confirm(holdings, placed)
        if problems:
            raise PutFailed(
                "every fragment was stored, but not every holder signed a receipt for what it "
                "holds, so the object could not be found; try again:\n  " + "\n  ".join(problems),
                chunk=None,
            )
        placement = holdings.view(self.dht.wall_clock(), self.dht.trust())
        copies = await publish_object(
            self.dht,
            encoded.object_id,
            encoded.manifest_bytes,
            holdings,
            self.settings.min_record_copies,
        )
        log.info(
            "put object %s: %d bytes in %d chunks, rule %s, manifest on %d peers",
            encoded.object_id.hex()[:16],
            size,
            encoder.chunk_count,
            rule.name,
            copies,
            extra={"event": "object_put", "object": encoded.object_id.hex()},
        )
        return PutResult(encoded.read_cap, encoded.manifest, placement, copies)

    async def _encode_all(
        self,
        source: BinaryIO,
        encoder: ObjectEncoder,
        send: trio.MemorySendChannel[EncodedChunk],
        state: _PutState,
    ) -> None:
        """Read and encode chunk after chunk; the channel's zero buffer is the backpressure."""
        async with send:
            for _ in range(encoder.chunk_count):
                if state.failure is not None:
                    return
                chunk = await self.run_sync(
                    read_and_encode, source, encoder, state.size, state.chunk_size
                )
                await send.send(chunk)

    async def _chunk_worker(
        self,
        receive: trio.MemoryReceiveChannel[EncodedChunk],
        state: _PutState,
        progress: Progress | None,
    ) -> None:
        async with receive:
            async for chunk in receive:
                if state.failure is not None:
                    continue  # drain so the encoder is not left blocked
                try:
                    state.rows[chunk.index] = await self._store_chunk(chunk, state)
                except PutFailed as failure:
                    state.failure = state.failure or failure
                    continue
                if progress is not None:
                    progress(chunk_length(state.size, state.chunk_size, chunk.index))

    async def _store_chunk(self, chunk: EncodedChunk, state: _PutState) -> tuple[Candidate, ...]:
        """Store every fragment of ``chunk``; returns the holders, share by share."""
        rule = state.rule
        size = len(chunk.fragments[0])
        try:
            holders = list(
                place_chunk(
                    chunk.fragment_ids,
                    state.candidates,
                    rule,
                    excluded=state.excluded,
                    fragment_size=size,
                )
            )
        except PlacementError as exc:
            raise PutFailed(f"chunk {chunk.index}: {exc}", chunk=chunk.index) from exc

        async def store_share(share: int) -> None:
            def reselect() -> Candidate:
                holders[share] = choose_holder(
                    chunk.fragment_ids[share],
                    state.candidates,
                    rule,
                    taken=[h for i, h in enumerate(holders) if i != share],
                    excluded=state.excluded,
                    fragment_size=size,
                )
                return holders[share]

            holders[share] = await self.store_with_fallback(
                chunk.fragment_ids[share],
                chunk.fragments[share],
                holders[share],
                reselect,
                state.excluded,
                what=f"chunk {chunk.index}: share {share}",
                chunk=chunk.index,
            )

        failures: list[PutFailed] = []

        async def guarded(share: int) -> None:
            try:
                await store_share(share)
            except PutFailed as failure:
                failures.append(failure)

        async with trio.open_nursery() as nursery:
            for share in range(rule.n):
                nursery.start_soon(guarded, share)
        if failures:
            raise failures[0]
        return tuple(holders)

    async def store_with_fallback(
        self,
        fragment_id: bytes,
        data: bytes,
        holder: Candidate,
        reselect: Callable[[], Candidate],
        excluded: set[bytes],
        *,
        what: str,
        chunk: int | None,
    ) -> Candidate:
        """Store a fragment on ``holder``, or on the next holder ``reselect`` chooses (after
        the failed one joined ``excluded``), up to ``store_attempts`` holders; returns the one
        that took it.  Raises :class:`PutFailed` naming ``what`` and each holder's failure."""
        problems: list[str] = []
        attempts = StoreAttempts(self.settings.store_attempts)
        while True:
            try:
                await self.store_on(holder, fragment_id, data)
            except FRAGMENT_FAILURES as exc:
                problems.append(f"{describe(holder)}: {exc}")
                excluded.add(holder.node_id)
                if isinstance(exc, PeerUnreachable):  # lookups stop offering it sooner
                    self.dht.table.record_failure(holder.node_id, trio.current_time())
                log.info(
                    "storing a fragment on %s failed, placing it elsewhere: %s",
                    describe(holder),
                    exc,
                    extra={"event": "fragment_store_failed", "peer": holder.node_id.hex()},
                )
            else:
                return holder
            if not attempts.failed(0):
                break
            try:
                holder = reselect()
            except PlacementError as exc:
                problems.append(str(exc))
                break
        raise PutFailed(f"{what} could not be stored:\n  " + "\n  ".join(problems), chunk=chunk)

    async def store_on(self, holder: Candidate, fragment_id: bytes, data: bytes) -> None:
        """Store on ``holder`` after checking its certificate says what placement assumed
        (in our own store when we are the holder: a steward placing a rebuilt fragment)."""
        if self._is_local(holder):
            assert self.local_store is not None
            await self.run_sync(self.local_store.put, fragment_id, data)
            return
        timeout = self.settings.fragment_timeout
        identity = await self.node.session_with(holder.node_id, holder.address, timeout=timeout)
        if (identity.datacenter, identity.region) != (holder.datacenter, holder.region):
            raise PeerRefused(
                f"{describe(holder)} is in {identity.datacenter}/{identity.region} by its "
                "certificate, not where the mesh said",
                reason="placement-mismatch",
            )
        started = trio.current_time()
        await store_fragment(
            self.node, holder.node_id, holder.address, fragment_id, data, timeout=timeout
        )
        self.fetcher.observe(holder.node_id, trio.current_time() - started)

    async def confirm(
        self, holdings: Holdings, placed: Sequence[tuple[int, Candidate]]
    ) -> list[str]:
        """Ask each holder to sign for the positions ``placed`` on it (one request per
        ``MAX_IDS_PER_QUERY`` positions); the receipts join ``holdings``.  Returns what went
        wrong, per holder: silence, a refusal, a bad receipt, or a position stated missing."""
        by_holder: dict[bytes, tuple[Candidate, list[int]]] = {}
        for position, holder in placed:
            by_holder.setdefault(holder.node_id, (holder, []))[1].append(position)
        problems: list[str] = []

        async def confirm_one(holder: Candidate, positions: list[int]) -> None:
            positions.sort()
            for start in range(0, len(positions), MAX_IDS_PER_QUERY):
                asked = tuple(positions[start : start + MAX_IDS_PER_QUERY])
                answer = await self.ask(holder, [Ask(holdings, asked)])
                if answer.said is not Said.STATED:
                    problems.append(f"{describe(holder)}: {answer.said.value} {answer.problem}")
                    return
                lost = set(asked) - set(answer.receipts[0].held)
                if lost:
                    problems.append(
                        f"{describe(holder)} says it does not hold positions {sorted(lost)}"
                    )
                    return

        async with trio.open_nursery() as nursery:
            for holder, positions in by_holder.values():
                nursery.start_soon(confirm_one, holder, positions)
        return problems

    async def ask(self, holder: Candidate, asks: Sequence[Ask]) -> Answer:
        """Ask ``holder`` to state positions (see :func:`ask_holder`), from our own store
        when we are the holder."""
        return await ask_holder(
            self.dht,
            holder,
            asks,
            timeout=self.settings.fragment_timeout,
            local_store=self.local_store if self._is_local(holder) else None,
            run_sync=self.run_sync,
        )

    async def candidates(self, rule: CodingRule) -> list[Candidate]:
        """Peers that may hold fragments: the routing table, after a lookup of our own id
        refreshed it (region and datacenter are re-checked against each certificate when
        a fragment is sent)."""
        await self.dht.lookup(self.node.identity.node_id)
        contacts: list[Contact] = self.dht.table.contacts()
        if self.local_store is not None:  # a storage node offers its own store too
            me = self.node.identity
            contacts.append(Contact(me.node_id, self.node.address, me.datacenter, me.region))
        allowed = [
            Candidate(c.id, c.address, c.datacenter, c.region)
            for c in contacts
            if rule.allows_region(c.region)
        ]
        return await weigh_by_free_space(self.dht, allowed)  # as the simulator weighs them

    def _is_local(self, holder: Candidate) -> bool:
        return self.fetcher.is_local(holder)

    # -- get --------------------------------------------------------------------------------

    async def fetch_manifest(self, object_id: bytes) -> Manifest:
        """See :func:`find_manifest`."""
        return await find_manifest(self.dht, object_id)

    async def fetch_holdings(self, object_id: bytes, manifest: Manifest) -> Holdings:
        """See :func:`find_holdings`."""
        return await find_holdings(self.dht, object_id, manifest)

    async def fetch_placement(self, object_id: bytes, manifest: Manifest) -> Placement:
        """See :func:`find_placement`."""
        return await find_placement(self.dht, object_id, manifest)

    async def get(
        self,
        cap: ReadCap,
        write: Callable[[bytes], Awaitable[object]],
        *,
        progress: Progress | None = None,
    ) -> Manifest:
        """Fetch, check, decode and decrypt the object, passing its plaintext to ``write``
        chunk by chunk, in order (``net.chunk_fetch``).

        Raises :class:`ObjectNotFound`, :class:`NotEnoughFragments` naming the chunk and what
        each holder answered, or :class:`IntegrityError` for a wrong key (no byte of a chunk
        that fails authentication is ever written).
        """
        manifest = await self.fetch_manifest(cap.object_id)
        placement = await self.fetch_placement(cap.object_id, manifest)
        await read_in_order(
            self.fetcher,
            manifest,
            placement,
            ObjectDecoder(manifest, cap.key),
            write,
            chunks_in_flight=self.settings.chunks_in_flight,
            run_sync=self.run_sync,
            progress=progress,
        )
        return manifest

    async def fetch_chunk(
        self, manifest: Manifest, placement: Placement, index: int
    ) -> dict[int, bytes]:
        """k verified fragments of chunk ``index`` (see :meth:`ChunkFetcher.fetch_chunk`)."""
        return await self.fetcher.fetch_chunk(manifest, placement, index)

    async def fetch_from(self, holder: Candidate, fragment_id: bytes) -> bytes:
        """One fragment from ``holder`` (see :meth:`ChunkFetcher.fetch_from`)."""
        return await self.fetcher.fetch_from(holder, fragment_id)

    # -- status -----------------------------------------------------------------------------

    async def stat(self, cap: ReadCap | VerifyCap) -> ObjectStatus:
        """What the mesh holds of the object now (see :func:`object_status`)."""
        return await object_status(self, cap)

    async def run_sync(self, function: Callable[..., T], *args: object) -> T:
        if not self.settings.in_threads:
            await trio.lowlevel.checkpoint()
            return function(*args)
        return await trio.to_thread.run_sync(function, *args, limiter=self._threads)
