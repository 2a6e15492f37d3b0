"""Reading an object's chunks from their holders.

A chunk's k fragments come from the quickest receipted holders first (each share's freshest
holder before its others, primary shares before coded ones), another holder is asked whenever a
fetch fails or lies, and one more when the chunk is slow; every fragment is checked against the
manifest's id on arrival.  :func:`read_in_order` keeps ``chunks_in_flight`` chunks fetching and
decoding while their plaintext is written out in order: memory is bounded by that many chunks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from p2pstore.codec import Manifest, ObjectDecoder
from p2pstore.core.holders import Placement
from p2pstore.core.placement import Candidate
from p2pstore.errors import (
    IntegrityError,
    NotEnoughFragments,
    P2PStoreError,
    PeerRefused,
    PeerUnreachable,
    RemoteError,
    RemoteProtocolError,
    StoreError,
)
from p2pstore.identity import short_id
from p2pstore.net.fragments import fetch_fragment
from p2pstore.net.node import Node
from p2pstore.store import FragmentStore

log = logging.getLogger("p2pstore.client")

RunSync = Callable[..., Awaitable[Any]]
"""How blocking work runs (a bounded worker thread, or inline under a ``MockClock``)."""

FRAGMENT_FAILURES = (
    PeerRefused,
    PeerUnreachable,
    RemoteError,
    RemoteProtocolError,
    IntegrityError,
    StoreError,
)
"""What storing or fetching one fragment can fail with: try another holder."""


def describe(holder: Candidate) -> str:
    """``node ab12cd34 (dc-2, FR-GES)`` for messages."""
    return f"node {short_id(holder.node_id)} ({holder.datacenter}, {holder.region})"


class ChunkFetcher:
    """Fetches chunks' fragments for one client, remembering each peer's latency."""

    def __init__(
        self,
        node: Node,
        *,
        fragment_timeout: float,
        hedge_after: float,
        local_store: FragmentStore | None,
        run_sync: RunSync,
    ) -> None:
        self.node = node
        self.fragment_timeout = fragment_timeout
        self.hedge_after = hedge_after
        self.local_store = local_store
        self._run_sync = run_sync
        self._latency: dict[bytes, float] = {}

    def is_local(self, holder: Candidate) -> bool:
        """Whether ``holder`` is this node with its own store (read directly)."""
        return self.local_store is not None and holder.node_id == self.node.identity.node_id

    async def fetch_chunk(
        self, manifest: Manifest, placement: Placement, index: int
    ) -> dict[int, bytes]:
        """k verified fragments of chunk ``index`` (share -> bytes), asking the quickest
        receipted holders first (each share's freshest holder before its others) and another
        one whenever a fetch fails or the chunk is slow."""
        ids = manifest.chunks[index].fragment_ids
        pending = sorted(
            (
                (rank, share, holder)
                for share in range(manifest.n)
                for rank, holder in enumerate(placement.holders_of(index, share))
            ),
            key=lambda a: (a[0], *self._preference(a[2], a[1], manifest.k)),
        )
        got: dict[int, bytes] = {}
        problems: list[str] = [
            f"share {s}: no known holder"
            for s in range(manifest.n)
            if not placement.holders_of(index, s)
        ]
        fetching: set[int] = set()
        wake = trio.Event()

        def next_attempt() -> tuple[int, Candidate] | None:
            pending[:] = [a for a in pending if a[1] not in got]
            for position, (_, share, holder) in enumerate(pending):
                if share not in fetching:
                    del pending[position]
                    return share, holder
            return None

        async def fetch(share: int, holder: Candidate) -> None:
            nonlocal wake
            started = trio.current_time()
            try:
                data = await self.fetch_from(holder, ids[share])
            except FRAGMENT_FAILURES as exc:
                problems.append(f"share {share} from {describe(holder)}: {exc}")
                if isinstance(exc, IntegrityError):
                    log.warning(
                        "%s served a corrupt fragment; asking another holder",
                        describe(holder),
                        extra={"event": "corrupt_fragment_served", "peer": holder.node_id.hex()},
                    )
            else:
                self.observe(holder.node_id, trio.current_time() - started)
                got[share] = data
            fetching.discard(share)
            wake.set()

        def start_one(nursery: trio.Nursery) -> bool:
            attempt = next_attempt()
            if attempt is None:
                return False
            fetching.add(attempt[0])
            nursery.start_soon(fetch, *attempt)
            return True

        async with trio.open_nursery() as nursery:
            while len(got) < manifest.k:
                while len(fetching) + len(got) < manifest.k and start_one(nursery):
                    pass
                if not fetching:
                    break
                with trio.move_on_after(self.hedge_after) as scope:
                    await wake.wait()
                wake = trio.Event()
                if scope.cancelled_caught:
                    start_one(nursery)  # a slow chunk: ask one more holder as well
            nursery.cancel_scope.cancel()
        if len(got) < manifest.k:
            raise NotEnoughFragments(
                f"chunk {index}: only {len(got)} of the {manifest.k} fragments needed could be "
                "fetched:\n  " + "\n  ".join(problems),
                needed=manifest.k,
                found=len(got),
            )
        return dict(sorted(got.items())[: manifest.k])

    async def fetch_from(self, holder: Candidate, fragment_id: bytes) -> bytes:
        """One fragment from ``holder``, checked against its id; from our own store when we
        are the holder (a steward repairing an object it holds part of).  Raises what
        :func:`fetch_fragment` raises, or :class:`StoreError` for a local miss."""
        if self.is_local(holder):
            assert self.local_store is not None
            data: bytes = await self._run_sync(self.local_store.get, fragment_id)
            return data
        return await fetch_fragment(
            self.node,
            holder.node_id,
            holder.address,
            fragment_id,
            timeout=self.fragment_timeout,
            run_sync=self._run_sync,
        )

    def _preference(self, holder: Candidate | None, share: int, k: int) -> tuple[int, bool, int]:
        """Sort key of a share to fetch: holders in the quickest 50 ms band first (an untimed
        one counts as typical), then primary shares (decoding them is a copy, not a zfec
        decode), then the share number for a stable order."""
        known = sorted(self._latency.values())
        typical = known[len(known) // 2] if known else 0.0
        latency = self._latency.get(holder.node_id, typical) if holder else math.inf
        return (int(latency / 0.05) if latency != math.inf else 1 << 30, share >= k, share)

    def observe(self, node_id: bytes, seconds: float) -> None:
        """Keep a smoothed latency per peer: gets ask the quickest holders first."""
        previous = self._latency.get(node_id)
        self._latency[node_id] = seconds if previous is None else 0.7 * previous + 0.3 * seconds


async def read_in_order(
    fetcher: ChunkFetcher,
    manifest: Manifest,
    placement: Placement,
    decoder: ObjectDecoder,
    write: Callable[[bytes], Awaitable[object]],
    *,
    chunks_in_flight: int,
    run_sync: RunSync,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Fetch, check and decode every chunk, ``chunks_in_flight`` at once, and pass each
    chunk's plaintext to ``write`` in order.  Raises the first chunk's failure
    (:class:`NotEnoughFragments`, :class:`IntegrityError`): no byte of a chunk that fails
    authentication is ever written."""
    count = manifest.chunk_count
    results: dict[int, bytes] = {}
    ready = [trio.Event() for _ in range(count)]
    window = trio.Semaphore(chunks_in_flight)
    failure: list[P2PStoreError] = []

    async def fetch_one(index: int) -> None:
        try:
            fragments = await fetcher.fetch_chunk(manifest, placement, index)
            # fetch_chunk checked every fragment against the manifest's ids: no second hash.
            results[index] = await run_sync(
                partial(decoder.decode_chunk, hashed=True), index, fragments
            )
        except P2PStoreError as exc:
            failure.append(exc)
            nursery.cancel_scope.cancel()
        ready[index].set()

    async def write_in_order() -> None:
        for index in range(count):
            await ready[index].wait()
            data = results.pop(index)
            await write(data)
            if progress is not None:
                progress(len(data))
            window.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_in_order)
        for index in range(count):
            await window.acquire()
            nursery.start_soon(fetch_one, index)
    if failure:
        raise failure[0]
