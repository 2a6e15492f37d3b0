"""Serving fragments from a node's store, and fetching them from peers with their ids checked.

Strategy: the store is synchronous, blocking I/O (fsync, SQLite, hashing), so every call runs
in a worker thread, at most ``max_threads`` at once per node so a burst of puts cannot pile up
threads or memory.  The store already refuses what it must (wrong id, quota, disk errors) with
typed errors, which the session turns into ``ErrorReply`` codes (``StoreNotWritable`` for a
read-only or full disk, ``QuotaExceeded``, ``IntegrityError``); reads and ``HasFragments`` go on
whatever happens to writes.  Each fragment is stored on behalf of the session's peer, whose
certificate names it: one identity holds at most its share of the store (``QuotaExceeded``
naming it, logged once per identity per interval however hard it floods).  A fetched fragment
is checked against the id that asked for it before anyone uses it: a peer that lies is caught
here.

Audits: an ``AuditChallenge`` is answered from the store like a read (same worker threads): the
whole fragment is read and checked, because the path needs every other leaf's hash (measured:
~1-3 ms per 1 MiB fragment, see benchmarks/merkle.py), then the proof of the leaf is built.  A
fragment the store does not have (or found corrupt) is refused as for a read, which the
challenger counts as missing.

Receipts: ``StateFragments`` (the writer once the object's manifest exists, a steward's check,
``stat``) is answered with one receipt per object, signed by this node's key, stating each
position asked as held or missing (``core.receipts``).  The asker's word about which object a
fragment belongs to is not trusted blindly: a receipt binds the fragment ids it speaks of, so
one for the wrong object or position matches no manifest and is refused by whoever checks it.

Stopping: :meth:`FragmentService.drain` refuses new writes (``NodeStopping``) and waits for
the ones already accepted, so a node stopped by SIGTERM answers every write it took before it
says goodbye, and a client never has to guess whether its fragment was stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from p2pstore.codec.fragment_ids import AuditProof, audit_proof, check_fragment
from p2pstore.core.leases import LEASE_TTL
from p2pstore.core.receipts import Receipt, Signer, sign_receipt
from p2pstore.errors import (
    IntegrityError,
    NodeLeaving,
    NodeStopping,
    P2PStoreError,
    QuotaExceeded,
    RemoteError,
    RemoteProtocolError,
)
from p2pstore.identity import PeerIdentity, short_id
from p2pstore.net.node import Node
from p2pstore.net.throttle import RefusalLog
from p2pstore.store import FragmentStore
from p2pstore.store.leases import LeaseTable
from p2pstore.wire import (
    AuditChallenge,
    AuditProofReply,
    GetFragment,
    GetFragmentReply,
    HasFragments,
    HasFragmentsReply,
    Message,
    PositionQuery,
    PutFragment,
    PutFragmentReply,
    StateFragments,
    StateFragmentsReply,
)
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY

DEFAULT_STORE_THREADS = 4
T = TypeVar("T")

log = logging.getLogger("p2pstore.node")


class FragmentService:
    """Answers PutFragment, GetFragment, HasFragments, AuditChallenge and StateFragments from
    ``store`` on
    ``node``."""

    def __init__(
        self,
        node: Node,
        store: FragmentStore,
        *,
        max_threads: int = DEFAULT_STORE_THREADS,
        in_threads: bool = True,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``in_threads=False`` calls the store directly: for the in-memory store under a
        ``MockClock``, where a worker thread would let virtual time jump past deadlines.
        ``wall_clock``: Unix time for receipts (the DHT's clock)."""
        self.store = store
        self.node = node
        self.wall_clock = wall_clock
        self._node_id = node.identity.node_id
        self._metrics = node.metrics
        self._metrics.watch_store(store.usage)
        self._threads = trio.CapacityLimiter(max_threads)
        self._in_threads = in_threads
        self._stopping = False
        self.leaving = False
        """Set by a drain: new fragments are refused, checks answered with NodeLeaving."""
        self._writes_in_flight = 0
        self._writes_done = trio.Event()
        self._writes_done.set()
        self._quota_log = RefusalLog()
        self.leases: LeaseTable | None = None
        """Set by the holder's collector (``net.collection``): puts and receipts are recorded."""
        self.initial_lease_ttl: float = LEASE_TTL
        """Seconds of the lease a fragment gets when first stated held after it was stored."""
        self._writing: dict[bytes, int] = {}
        self._freeing: set[bytes] = set()
        self._freed = trio.Event()
        node.handle(PutFragment, self._on_put)
        node.handle(GetFragment, self._on_get)
        node.handle(HasFragments, self._on_has)
        node.handle(AuditChallenge, self._on_audit)
        node.handle(StateFragments, self._on_state)

    @property
    def writes_in_flight(self) -> int:
        """Fragment writes accepted and not yet finished."""
        return self._writes_in_flight

    async def drain(self) -> None:
        """Take no new fragment writes (they are refused with :class:`NodeStopping`) and return
        once every write already accepted is durable and answered.  Reads are still served.

        Not bounded by itself: the caller gives it a deadline.  Cancelling it leaves the
        service refusing writes; the writes in flight still finish in their worker threads.
        """
        self._stopping = True
        if self._writes_in_flight:
            log.info(
                "stopping: finishing %d fragment writes in flight",
                self._writes_in_flight,
                extra={"event": "draining", "writes": self._writes_in_flight},
            )
        await self._writes_done.wait()

    async def _on_put(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, PutFragment)
        if self.leaving:
            raise NodeLeaving(
                f"node {short_id(self._node_id)} is leaving the mesh and takes no new "
                f"fragments; store fragment {message.fragment_id.hex()[:16]} on another node"
            )
        if self._stopping:
            raise NodeStopping(
                f"node {short_id(self._node_id)} is shutting down and takes no new fragments; "
                f"store fragment {message.fragment_id.hex()[:16]} on another node"
            )
        fragment_id = message.fragment_id
        while fragment_id in self._freeing:  # a sweep is deleting it: store it after
            await self._freed.wait()
        self._writes_in_flight += 1
        self._writes_done = trio.Event() if self._writes_in_flight == 1 else self._writes_done
        self._writing[fragment_id] = self._writing.get(fragment_id, 0) + 1
        try:
            await self._run(self.store.put, fragment_id, message.data, peer.node_id)
            if self.leases is not None:
                await self._run(
                    self.leases.stored, fragment_id, len(message.data), self.wall_clock()
                )
        except QuotaExceeded as exc:
            if exc.identity is None:
                self._log_refused(peer, message, exc)
            else:
                self._metrics.record_fragment_over_quota()
                self._log_over_quota(peer, exc)
            raise
        except P2PStoreError as exc:
            self._log_refused(peer, message, exc)
            raise
        finally:
            # The reply is sent before a drain waiting on this can say goodbye: setting the
            # event does not switch tasks, and the session takes its send lock for the reply
            # before it next yields.
            self._writes_in_flight -= 1
            if not self._writes_in_flight:
                self._writes_done.set()
            self._writing[fragment_id] -= 1
            if not self._writing[fragment_id]:
                del self._writing[fragment_id]
        self._metrics.record_fragment_written(len(message.data))
        log.info(
            "stored fragment %s (%d bytes) from %s",
            message.fragment_id.hex()[:16],
            len(message.data),
            short_id(peer.node_id),
            extra={"event": "fragment_stored", "fragment": message.fragment_id.hex(),
                   "bytes": len(message.data), "peer": peer.node_id.hex()},
        )  # fmt: skip
        return PutFragmentReply(stored=True)

    def _log_refused(self, peer: PeerIdentity, message: PutFragment, exc: P2PStoreError) -> None:
        log.warning(
            "refused fragment %s from %s: %s",
            message.fragment_id.hex()[:16],
            short_id(peer.node_id),
            exc,
            extra={"event": "fragment_refused", "reason": type(exc).__name__,
                   "peer": peer.node_id.hex()},
        )  # fmt: skip

    def _log_over_quota(self, peer: PeerIdentity, exc: QuotaExceeded) -> None:
        """Once per identity per interval: a flood must not become a flood of log lines."""
        left_out = self._quota_log.due(peer.node_id, trio.current_time())
        if left_out is None:
            return
        log.warning(
            "%s refused: %s (%d more refusals of it not logged since its last line)",
            peer.describe(),
            exc,
            left_out,
            extra={"event": "fragment_quota_exceeded", "peer": peer.node_id.hex(),
                   "role": peer.role.value, "bytes": self.store.uploaded_by(peer.node_id),
                   "not_logged": left_out},
        )  # fmt: skip

    async def _on_get(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, GetFragment)
        data: bytes = await self._run(self.store.get, message.fragment_id)
        self._metrics.record_fragment_served(len(data))
        return GetFragmentReply(data=data)

    async def _on_has(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, HasFragments)
        if self.leaving:  # stewards move what we hold instead of counting it
            raise NodeLeaving(
                f"node {short_id(self._node_id)} is leaving the mesh: move its fragments"
            )
        ids = message.fragment_ids
        present: tuple[bool, ...] = await self._run(
            lambda: tuple(self.store.has(fragment_id) for fragment_id in ids)
        )
        return HasFragmentsReply(present=present)

    async def _on_audit(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, AuditChallenge)
        proof = await self._run(self._prove, message.fragment_id, message.leaf_index)
        return AuditProofReply(
            nonce=message.nonce, leaf=proof.leaf, path=proof.path, length=proof.length
        )

    def _prove(self, fragment_id: bytes, leaf_index: int) -> AuditProof:
        """Read (and so check) the fragment, then prove one leaf of it (in a worker thread)."""
        data = self.store.get(fragment_id)
        try:
            return audit_proof(data, leaf_index)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"cannot audit fragment {fragment_id.hex()[:16]}: {exc} ({len(data)} bytes)"
            ) from exc

    async def _on_state(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, StateFragments)
        if self.leaving:
            raise NodeLeaving(
                f"node {short_id(self._node_id)} is leaving the mesh: move its fragments"
            )
        check_queries(message.queries)
        receipts: list[Receipt] = await self._run(
            state_fragments,
            self.store,
            self.node.credentials,
            self.node.address,
            message.queries,
            self.wall_clock(),
        )
        if self.leases is not None:
            now = self.wall_clock()
            stated = [f for query in message.queries for f in query.fragment_ids]
            await self._run(self.leases.stated, stated, now + self.initial_lease_ttl)
        encoded = tuple(r.encode() for r in receipts)
        certificate = self.node.credentials.certificate_der()  # a renewed one, too
        return StateFragmentsReply(receipts=encoded, certificate=certificate)

    async def free(
        self, fragment_ids: Sequence[bytes], still_due: Callable[[bytes], bool]
    ) -> tuple[list[bytes], int]:
        """Delete the fragments of ``fragment_ids`` that no put is storing now and that are
        ``still_due`` when looked at again (a put may have stored one since it was chosen);
        puts of them wait meanwhile.  Returns the ids no longer held (deleted, or already
        gone) and the bytes freed.  Raises :class:`StoreError`."""
        chosen = [f for f in fragment_ids if f not in self._writing and f not in self._freeing]
        self._freeing.update(chosen)
        try:
            return await self._run(self._delete_due, chosen, still_due)
        finally:
            self._freeing.difference_update(chosen)
            self._freed.set()
            self._freed = trio.Event()

    def _delete_due(
        self, fragment_ids: Sequence[bytes], still_due: Callable[[bytes], bool]
    ) -> tuple[list[bytes], int]:
        gone: list[bytes] = []
        freed = 0
        for fragment_id in fragment_ids:
            if still_due(fragment_id):
                size = self.store.size_of(fragment_id) or 0
                freed += size if self.store.delete(fragment_id) else 0
                gone.append(fragment_id)
        return gone, freed

    async def run_store(self, function: Callable[..., T], *args: object) -> T:
        """Call a store method as the handlers do (a worker thread, bounded)."""
        return await self._run(function, *args)

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        if not self._in_threads:
            await trio.lowlevel.checkpoint()
            return function(*args)
        return await trio.to_thread.run_sync(function, *args, limiter=self._threads)


def check_queries(queries: Sequence[PositionQuery]) -> None:
    """Refuse a malformed ``StateFragments``: one id per position, no position twice in a
    query, at most ``MAX_IDS_PER_QUERY`` in all.  Raises :class:`RemoteProtocolError`."""
    total = 0
    for query in queries:
        if len(query.positions) != len(query.fragment_ids):
            raise RemoteProtocolError("StateFragments: one fragment id per position")
        if len(set(query.positions)) != len(query.positions):
            raise RemoteProtocolError("StateFragments: a position is asked twice")
        total += len(query.positions)
    if total > MAX_IDS_PER_QUERY:
        raise RemoteProtocolError(
            f"StateFragments: {total} positions asked, at most {MAX_IDS_PER_QUERY} at once"
        )


def state_fragments(
    store: FragmentStore,
    signer: Signer,
    address: str,
    queries: Sequence[PositionQuery],
    now: float,
) -> list[Receipt]:
    """A holder's signed answer to each query (blocking: reads the store's index).  The
    queries must have passed :func:`check_queries`."""
    receipts = []
    for query in queries:
        held: dict[int, bytes] = {}
        missing: dict[int, bytes] = {}
        for position, fragment_id in zip(query.positions, query.fragment_ids, strict=True):
            (held if store.has(fragment_id) else missing)[position] = fragment_id
        receipts.append(
            sign_receipt(
                signer, query.object_id, address=address, held=held, missing=missing, now=now
            )
        )
    return receipts


async def fetch_fragment(
    node: Node,
    peer_id: bytes,
    address: str,
    fragment_id: bytes,
    *,
    timeout: float | None = None,
    run_sync: Callable[[Callable[..., None], bytes, bytes], Awaitable[None]] | None = None,
) -> bytes:
    """The fragment ``fragment_id`` from the peer, verified against its id.

    ``run_sync`` runs the hash (e.g. in a worker thread, so it overlaps the event loop's I/O);
    by default it runs inline.  Raises :class:`IntegrityError` if the peer sent other bytes (a
    lying or broken peer: ask another), :class:`RemoteError` if it refused (code
    ``FragmentNotFound``, ``IntegrityError`` when its own copy was corrupt, ...), and
    :class:`~p2pstore.errors.PeerUnreachable` if it could not be asked in time.
    """
    reply = await node.call(peer_id, address, GetFragment(fragment_id=fragment_id), timeout=timeout)
    if not isinstance(reply, GetFragmentReply):
        raise RemoteError(
            f"{short_id(peer_id)} answered GetFragment with {type(reply).__name__}",
            code="bad-reply",
        )
    try:
        if run_sync is None:
            check_fragment(fragment_id, reply.data)
        else:
            await run_sync(check_fragment, fragment_id, reply.data)
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

    Raises :class:`RemoteError` if the peer refused (code ``QuotaExceeded``,
    ``StoreNotWritable`` for a read-only or full disk, ``NodeStopping``, ``IntegrityError``,
    ``StoreError``) and :class:`~p2pstore.errors.PeerUnreachable` if it could not be asked
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
