"""Bucket indexes on the mesh: replicas on the peers closest to a bucket's id, and anti-entropy.

Strategy: a tenant's client pushes its signed entries to the ``replicas`` peers closest to the
bucket id and reads a bucket by pulling from all of them and merging what it verified itself
(:mod:`p2pstore.core.bucket_index`), so a replica that drops or forges entries changes nothing a
reader sees as long as one honest replica answers.  Replicas converge on their own: every
``anti_entropy_interval`` a node compares each bucket it holds with the other replicas (one pull
answers with the peer's summary digest; equal digests end the round), pulls what differs, then
pushes its own entries when the peer still differs.  The exchange is state-based (whole indexes,
in pages); a delta protocol (summaries per digest range) is the follow-up for big buckets.

Every pull is bounded: a page holds at most ``MAX_ENTRIES_PER_MESSAGE`` entries, cursors must
advance, and a bucket read stops at ``max_pull_entries``; every call has a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import trio
import trio.lowlevel

from p2pstore.core.bucket_entries import VerifiedEntry, entry_digest, verify_entry
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.core.bucket_replica import BucketReplica
from p2pstore.core.contact import Contact
from p2pstore.errors import EntryRejected, StoreError
from p2pstore.identity import NodeId, PeerIdentity, TrustAnchor, short_id
from p2pstore.net.bucket_book import BucketBook
from p2pstore.net.dht import Dht
from p2pstore.net.publisher import RPC_FAILURES
from p2pstore.wire import (
    MAX_ENTRIES_PER_MESSAGE,
    BucketEntry,
    BucketPull,
    BucketPullReply,
    BucketPush,
    BucketPushReply,
    BucketVersionQuery,
    BucketVersionReply,
    Message,
)
from p2pstore.wire.buckets import MAX_VERSION_ENTRIES

log = logging.getLogger("p2pstore.buckets")
PAST_EVERY_DIGEST = b"\xff" * 33
"""A pull cursor above every entry digest (32 bytes): its page is empty, its summary whole."""


@dataclass(frozen=True, slots=True)
class BucketSettings:
    """How many peers hold a bucket, how often they reconcile, and how much a node holds."""

    replicas: int = 5
    rpc_timeout: float = 10.0
    anti_entropy_interval: float = 600.0
    max_entries: int = 1_000_000
    max_bytes: int = 1024 * 1024 * 1024
    max_pull_entries: int = 2_000_000
    """Entries one bucket read takes from one replica at most (then it stops with what it has)."""
    save_interval: float = 300.0
    """How often a node with a :class:`BucketBook` saves what it holds (and at a clean stop)."""
    in_threads: bool = True
    """Load and save the book in a worker thread (False under a mock clock, which would jump
    while a thread works)."""


@dataclass
class FetchOutcome:
    """A bucket read: the merged index, which replicas answered, and what was refused."""

    index: BucketIndex
    answered: list[bytes] = field(default_factory=list)
    failed: list[bytes] = field(default_factory=list)
    refused: list[EntryRejected] = field(default_factory=list)
    """Entries a replica served that did not verify (forged, revoked signer...)."""


class BucketService:
    """Holds bucket indexes for the mesh and reads/writes them for a client.

    Start with ``await nursery.start(service.run)`` on nodes that hold replicas; a client only
    calls :meth:`push` and :meth:`fetch`.
    """

    def __init__(
        self, dht: Dht, settings: BucketSettings | None = None, *, book: BucketBook | None = None
    ) -> None:
        """``book``: where a node saves the entries it holds across restarts (None: memory
        only, as for clients and tests)."""
        self.dht = dht
        self.node = dht.node
        self.settings = settings or BucketSettings()
        self.replica = BucketReplica(self.settings.max_entries, self.settings.max_bytes)
        self.book = book
        self._restored = book is None
        self.node.handle(BucketPush, self._on_push)
        self.node.handle(BucketPull, self._on_pull)
        self.node.handle(BucketVersionQuery, self._on_version_query)
        self.node.add_listener(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold again what the last run saved, then reconcile the buckets held with their
        other replicas and save them, every interval, until cancelled (a last save then)."""
        task_status.started()
        try:
            await self.restore()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_every, self.settings.anti_entropy_interval, self.anti_entropy)
                if self.book is not None:
                    nursery.start_soon(_every, self.settings.save_interval, self._save_in_thread)
        finally:
            self.save(level=logging.INFO)  # blocking, at a stop: the node is going away

    # -- persistence -------------------------------------------------------------------------

    async def restore(self) -> int:
        """Push the saved entries through the replica (verified like a peer's), in batches
        that let the node serve meanwhile; return how many are held again."""
        if self.book is None or self._restored:
            return 0
        try:
            if self.settings.in_threads:
                loaded = await trio.to_thread.run_sync(self.book.load)
            else:
                loaded = self.book.load()
        except StoreError as error:
            log.warning(
                "ignoring the saved bucket entries: %s",
                error,
                extra={"event": "buckets_unreadable"},
            )
            self._restored = True
            return 0
        kept = 0
        for start in range(0, len(loaded.entries), MAX_ENTRIES_PER_MESSAGE):
            for bucket, entry in loaded.entries[start : start + MAX_ENTRIES_PER_MESSAGE]:
                outcome = self.replica.push(
                    bucket, [entry], self.dht.wall_clock(), trust=self.dht.trust()
                )
                kept += outcome.added
            await trio.lowlevel.checkpoint()
        self._restored = True
        self.book.saved_changes = self.replica.changes
        log.info(
            "holding again %d bucket index entries saved by the last run (%d invalid, revoked "
            "or over their tenant's quota, dropped)",
            kept,
            len(loaded.entries) + loaded.malformed - kept,
            extra={"event": "buckets_loaded", "entries": kept},
        )
        return kept

    def save(self, level: int = logging.DEBUG) -> bool:
        """Save the entries held if they changed since the last save (never before the saved
        ones were restored: that would overwrite them); log instead of raising.  Blocking."""
        book = self.book
        if book is None or not self._restored or book.saved_changes == self.replica.changes:
            return True
        return self._write(book, book.snapshot(self.replica), self.replica.changes, level)

    async def _save_in_thread(self) -> None:
        book = self.book
        if book is None or not self._restored or book.saved_changes == self.replica.changes:
            return
        held, changes = book.snapshot(self.replica), self.replica.changes
        if self.settings.in_threads:
            await trio.to_thread.run_sync(self._write, book, held, changes, logging.DEBUG)
        else:
            self._write(book, held, changes, logging.DEBUG)

    def _write(
        self,
        book: BucketBook,
        held: list[tuple[NodeId, BucketEntry]],
        changes: int,
        level: int,
    ) -> bool:
        try:
            book.save(held)
        except StoreError as error:
            log.warning(
                "could not save the bucket entries held here: %s",
                error,
                extra={"event": "buckets_save_failed"},
            )
            return False
        book.saved_changes = changes
        log.log(
            level,
            "saved %d bucket index entries to %s",
            len(held),
            book.path,
            extra={"event": "buckets_saved", "entries": len(held)},
        )
        return True

    # -- a client's reads and writes ---------------------------------------------------------

    async def replicas(self, bucket: bytes) -> list[Contact]:
        """The peers that should hold ``bucket``: the closest to its id."""
        result = await self.dht.lookup(bucket)
        return list(result.closest[: self.settings.replicas])

    async def push(
        self,
        bucket: bytes,
        entries: Sequence[BucketEntry],
        *,
        contacts: Sequence[Contact] | None = None,
    ) -> int:
        """Send ``entries`` to every replica of ``bucket`` (``contacts``, if the caller knows
        them); return how many replicas took them all.  An entry a replica refuses for a reason
        that is the entry's fault is logged."""
        if not entries:
            return 0
        if contacts is None:
            contacts = await self.replicas(bucket)
        took = 0

        async def one(contact: Contact) -> None:
            nonlocal took
            complete = await self._push_to(contact, bucket, entries)
            took += complete  # not `took += await ...`: that reads `took` before awaiting

        async with trio.open_nursery() as nursery:
            for contact in contacts:
                nursery.start_soon(one, contact)
        return took

    async def fetch(
        self, bucket: bytes, *, known: Mapping[bytes, VerifiedEntry] | None = None
    ) -> FetchOutcome:
        """Read ``bucket`` from all its replicas, verifying every entry here, and merge.

        ``known``: entries this reader verified before, by digest; an identical entry is not
        verified again (only its signer's revocation is checked anew)."""
        outcome = FetchOutcome(BucketIndex(bucket))
        contacts = await self.replicas(bucket)

        async def one(contact: Contact) -> None:
            read = await self.read_replica(contact, bucket, known=known, refused=outcome.refused)
            if read is None:
                outcome.failed.append(contact.id)
                return
            outcome.answered.append(contact.id)
            outcome.index.merge(read.entries())

        async with trio.open_nursery() as nursery:
            for contact in contacts:
                nursery.start_soon(one, contact)
        return outcome

    async def read_replica(
        self,
        contact: Contact,
        bucket: bytes,
        *,
        known: Mapping[bytes, VerifiedEntry] | None = None,
        refused: list[EntryRejected] | None = None,
    ) -> BucketIndex | None:
        """What one replica holds of ``bucket``, every entry verified here (or found in
        ``known``, see :meth:`fetch`); None if it could not be reached.  Entries that do not
        verify are left out (and appended to ``refused``)."""
        pulled = await self._pull_all(contact, bucket, b"")
        if pulled is None:
            return None
        now, trust = self.dht.wall_clock(), self.dht.trust()
        index = BucketIndex(bucket)
        for entry in pulled:
            seen = known.get(entry_digest(entry)) if known else None
            if seen is not None and seen.bucket == bucket and not _revoked(seen, trust):
                index.add(seen)
                continue
            try:
                verified = verify_entry(entry, now, trust=trust)
            except EntryRejected as error:
                if refused is not None:
                    refused.append(error)
                continue
            if verified.bucket == bucket:
                index.add(verified)
        return index

    async def summary_of(self, contact: Contact, bucket: bytes) -> bytes | None:
        """The summary digest of what ``contact`` holds of ``bucket`` (a pull of the empty page
        past every digest: one small round trip), or None if it could not be reached."""
        page = await self._pull_page(contact, bucket, PAST_EVERY_DIGEST)
        return None if page is None else page.summary

    # -- replicas ----------------------------------------------------------------------------

    async def anti_entropy(self) -> None:
        """One round: each bucket held is compared with its other replicas."""
        for bucket in self.replica.buckets():
            for contact in await self.replicas(bucket):
                await self.sync(contact, bucket)

    async def sync(self, contact: Contact, bucket: bytes) -> None:
        """Make this node and ``contact`` hold the same entries of ``bucket``."""
        index = self.replica.index(bucket)
        ours = BucketIndex(bucket).summary() if index is None else index.summary()
        first = await self._pull_page(contact, bucket, b"")
        if first is None or first.summary == ours:
            return
        pulled = await self._pull_all(contact, bucket, b"", first=first)
        if pulled:
            outcome = self.replica.push(
                bucket, pulled, self.dht.wall_clock(), trust=self.dht.trust()
            )
            for refusal in outcome.refused:
                if refusal.sender_at_fault:
                    log.info(
                        "%s served a bucket entry that does not verify: %s",
                        short_id(contact.id),
                        refusal,
                        extra={"event": "bucket_entry_refused", "peer": contact.id.hex()},
                    )
        index = self.replica.index(bucket)
        if index is not None and index.summary() != first.summary:
            entries = [e.entry for e in index.entries()]
            await self._push_to(contact, bucket, entries)

    async def _push_to(
        self, contact: Contact, bucket: bytes, entries: Sequence[BucketEntry]
    ) -> bool:
        complete = True
        for start in range(0, len(entries), MAX_ENTRIES_PER_MESSAGE):
            batch = tuple(entries[start : start + MAX_ENTRIES_PER_MESSAGE])
            try:
                reply = await self.node.call(
                    contact.id,
                    contact.address,
                    BucketPush(bucket=bucket, entries=batch),
                    timeout=self.settings.rpc_timeout,
                )
            except RPC_FAILURES as error:
                log.debug("pushing bucket entries to %s failed: %s", short_id(contact.id), error)
                return False
            if not isinstance(reply, BucketPushReply):
                return False
            if reply.refused:
                complete = False
                log.info(
                    "%s refused %d bucket entries: %s",
                    short_id(contact.id),
                    len(reply.refused),
                    reply.refused[0],
                    extra={"event": "bucket_push_refused", "peer": contact.id.hex()},
                )
        return complete

    async def _pull_page(
        self, contact: Contact, bucket: bytes, cursor: bytes
    ) -> BucketPullReply | None:
        try:
            reply = await self.node.call(
                contact.id,
                contact.address,
                BucketPull(bucket=bucket, cursor=cursor),
                timeout=self.settings.rpc_timeout,
            )
        except RPC_FAILURES as error:
            log.debug("pulling a bucket from %s failed: %s", short_id(contact.id), error)
            return None
        return reply if isinstance(reply, BucketPullReply) else None

    async def _pull_all(
        self,
        contact: Contact,
        bucket: bytes,
        cursor: bytes,
        *,
        first: BucketPullReply | None = None,
    ) -> list[BucketEntry] | None:
        """Every page a replica serves, or None if it could not be reached; stops at
        ``max_pull_entries`` and when a cursor does not advance (a replica looping us)."""
        page = first or await self._pull_page(contact, bucket, cursor)
        if page is None:
            return None
        entries = list(page.entries)
        while page.cursor and len(entries) < self.settings.max_pull_entries:
            if page.cursor <= cursor:
                log.info(
                    "%s served a bucket cursor that does not advance; stopping its read",
                    short_id(contact.id),
                    extra={"event": "bucket_pull_looped", "peer": contact.id.hex()},
                )
                break
            cursor = page.cursor
            following = await self._pull_page(contact, bucket, cursor)
            if following is None:
                break
            page = following
            entries.extend(page.entries)
        return entries

    # -- handlers ----------------------------------------------------------------------------

    async def _on_push(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, BucketPush)
        outcome = self.replica.push(
            message.bucket, message.entries, self.dht.wall_clock(), trust=self.dht.trust()
        )
        return BucketPushReply(
            added=outcome.added, refused=tuple(str(r)[:500] for r in outcome.refused)
        )

    async def _on_pull(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, BucketPull)
        index = self.replica.index(message.bucket) or BucketIndex(message.bucket)
        page, cursor = index.page(message.cursor, MAX_ENTRIES_PER_MESSAGE)
        return BucketPullReply(
            entries=tuple(e.entry for e in page), cursor=cursor, summary=index.summary()
        )

    def version_entries(self, bucket: bytes, name: bytes, version: bytes) -> list[BucketEntry]:
        """The entries held about one version of a name (for a steward checking a reference)."""
        index = self.replica.index(bucket)
        if index is None:
            return []
        return [e.entry for e in index.entries_of(name, version)][:MAX_VERSION_ENTRIES]

    async def _on_version_query(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, BucketVersionQuery)
        entries = self.version_entries(message.bucket, message.name, message.version)
        return BucketVersionReply(entries=tuple(entries))

    # -- node listener -----------------------------------------------------------------------

    def peer_up(self, peer: PeerIdentity, address: str) -> None:
        """Nothing: anti-entropy finds newly close peers through its lookups."""

    def peer_down(self, peer: PeerIdentity) -> None:
        """Nothing: a replica that left is replaced at the next anti-entropy round."""

    def trust_changed(self, trust: TrustAnchor) -> None:
        """Forget the entries of identities the mesh CA revoked."""
        dropped = self.replica.drop_revoked(trust)
        if dropped:
            log.info(
                "dropped %d bucket entries signed by revoked identities",
                dropped,
                extra={"event": "bucket_entries_revoked", "entries": dropped},
            )


def _revoked(entry: VerifiedEntry, trust: TrustAnchor) -> bool:
    return entry.certificate is not None and entry.certificate.serial in trust.revoked_serials


async def _every(interval: float, job: Callable[[], Awaitable[None]]) -> None:
    while True:
        await trio.sleep(interval)
        await job()
