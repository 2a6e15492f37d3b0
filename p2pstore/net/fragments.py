"""Serving fragments from a node's store, and fetching them from peers with their ids checked.

Strategy: the store is synchronous, blocking I/O (fsync, SQLite, hashing), so every call runs
in a worker thread, at most ``max_threads`` at once per node so a burst of puts cannot pile up
threads or memory.  The store already refuses what it must (wrong id, quota, disk errors) with
typed errors, which the session turns into ``ErrorReply`` codes.  A fetched fragment is checked
against the id that asked for it before anyone uses it: a peer that lies is caught here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from p2pstore.codec.fragment_ids import check_fragment
from p2pstore.errors import IntegrityError, RemoteError
from p2pstore.identity import PeerIdentity, short_id
from p2pstore.net.node import Node
from p2pstore.store import FragmentStore
from p2pstore.wire import (
    GetFragment,
    GetFragmentReply,
    HasFragments,
    HasFragmentsReply,
    Message,
    PutFragment,
    PutFragmentReply,
)

DEFAULT_STORE_THREADS = 4
T = TypeVar("T")


class FragmentService:
    """Answers PutFragment, GetFragment and HasFragments from ``store`` on ``node``."""

    def __init__(
        self,
        node: Node,
        store: FragmentStore,
        *,
        max_threads: int = DEFAULT_STORE_THREADS,
        in_threads: bool = True,
    ) -> None:
        """``in_threads=False`` calls the store directly: for the in-memory store under a
        ``MockClock``, where a worker thread would let virtual time jump past deadlines."""
        self.store = store
        self._metrics = node.metrics
        self._metrics.watch_store(store.usage)
        self._threads = trio.CapacityLimiter(max_threads)
        self._in_threads = in_threads
        node.handle(PutFragment, self._on_put)
        node.handle(GetFragment, self._on_get)
        node.handle(HasFragments, self._on_has)

    async def _on_put(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, PutFragment)
        await self._run(self.store.put, message.fragment_id, message.data)
        self._metrics.record_fragment_written(len(message.data))
        return PutFragmentReply(stored=True)

    async def _on_get(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, GetFragment)
        data: bytes = await self._run(self.store.get, message.fragment_id)
        self._metrics.record_fragment_served(len(data))
        return GetFragmentReply(data=data)

    async def _on_has(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, HasFragments)
        ids = message.fragment_ids
        present: tuple[bool, ...] = await self._run(
            lambda: tuple(self.store.has(fragment_id) for fragment_id in ids)
        )
        return HasFragmentsReply(present=present)

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        if not self._in_threads:
            await trio.lowlevel.checkpoint()
            return function(*args)
        return await trio.to_thread.run_sync(function, *args, limiter=self._threads)


async def fetch_fragment(
    node: Node, peer_id: bytes, address: str, fragment_id: bytes, *, timeout: float | None = None
) -> bytes:
    """The fragment ``fragment_id`` from the peer, verified against its id.

    Raises :class:`IntegrityError` if the peer sent other bytes (a lying or broken peer: ask
    another), :class:`RemoteError` if it refused (code ``FragmentNotFound``,
    ``IntegrityError`` when its own copy was corrupt, ...), and
    :class:`~p2pstore.errors.PeerUnreachable` if it could not be asked in time.
    """
    reply = await node.call(peer_id, address, GetFragment(fragment_id=fragment_id), timeout=timeout)
    if not isinstance(reply, GetFragmentReply):
        raise RemoteError(
            f"{short_id(peer_id)} answered GetFragment with {type(reply).__name__}",
            code="bad-reply",
        )
    try:
        check_fragment(fragment_id, reply.data)
    except IntegrityError as exc:
        raise IntegrityError(
            f"node {short_id(peer_id)} at {address} served bad bytes: {exc}"
        ) from exc
    return reply.data


async def store_fragment(
    node: Node,
    peer_id: bytes,
    address: str,
    fragment_id: bytes,
    data: bytes,
    *,
    timeout: float | None = None,
) -> None:
    """Store a fragment on the peer; returns once the peer says it is durable.

    Raises :class:`RemoteError` if the peer refused (code ``QuotaExceeded``, ``StoreError``,
    ``IntegrityError``) and :class:`~p2pstore.errors.PeerUnreachable` if it could not be asked
    in time.
    """
    reply = await node.call(
        peer_id, address, PutFragment(fragment_id=fragment_id, data=data), timeout=timeout
    )
    if not (isinstance(reply, PutFragmentReply) and reply.stored):
        raise RemoteError(
            f"{short_id(peer_id)} did not confirm storing fragment {fragment_id.hex()[:16]}",
            code="bad-reply",
        )
