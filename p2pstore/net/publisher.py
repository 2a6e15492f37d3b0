"""The records a node publishes (manifests, placements, its announcement), on one path.

Strategy: when to send a record again is the core's decision
(:class:`~p2pstore.core.published.PublishedRecords`: each kind at its own period, read by the
simulator's traffic model too); this driver stores what it returns on the k closest peers and
sleeps until its next deadline, or until a new record is published.  The announcement is sent
here only (no second loop elsewhere), each time with the free space the node has then.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from p2pstore.core.announcements import Announcement, decode_announcement
from p2pstore.core.contact import Contact
from p2pstore.core.published import PublishedRecords
from p2pstore.core.records import RecordKind
from p2pstore.errors import (
    PeerRefused,
    PeerTooOld,
    PeerUnreachable,
    RemoteError,
    RemoteProtocolError,
)
from p2pstore.identity import NodeCredentials, short_id
from p2pstore.wire import SignedRecord, Store, StoreReply

if TYPE_CHECKING:
    from p2pstore.net.dht import Dht

log = logging.getLogger("p2pstore.dht")

RPC_FAILURES = (PeerRefused, PeerUnreachable, RemoteError, RemoteProtocolError)
"""What a request to another peer can fail with: the peer's fault or the network's, never ours."""

FreeBytes = Callable[[], int]
"""What the node's store has free now (read at each announcement)."""


class Publisher:
    """Publishes a node's own records and keeps them alive.  Run with ``nursery.start(run)``."""

    def __init__(self, dht: Dht) -> None:
        self._dht = dht
        self.records = PublishedRecords(dht.node.credentials)
        dht.node.on_renewal(self._renewed)
        self._free_bytes: FreeBytes | None = None
        self._changed = trio.Event()
        self._fresh: list[SignedRecord] = []
        """Records to send at the next republish whatever their period (a new announcement)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send every record again when the core says it is due, until cancelled."""
        task_status.started()
        while True:
            due_at = self.records.next_due()
            wait = math.inf if due_at is None else max(0.0, due_at - self._dht.wall_clock())
            with trio.move_on_after(wait):
                await self._changed.wait()
            self._changed = trio.Event()
            await self.republish()

    async def publish(self, record: SignedRecord) -> int:
        """Store ``record`` on the k closest nodes to its key; returns how many accepted it.
        A record this node signed is kept alive from then on; another's is sent once."""
        if record.publisher_key == self.records.publisher_key:
            self.records.add(record, self._dht.wall_clock())
            self._changed.set()
        return await self.store_on_closest(record)

    async def announce(self, free_bytes: int | FreeBytes) -> int:
        """Publish this node's signed announcement (address, datacenter, region, free space and
        certificate), which placement reads; returns how many peers stored it.  Given a
        function, every later announcement carries what it returns then."""
        if callable(free_bytes):
            self._free_bytes = free_bytes
            free = free_bytes()
        else:
            self._free_bytes = None
            free = free_bytes
        node_id = self._dht.node_id
        record = self.records.publish(
            RecordKind.ANNOUNCEMENT, node_id, self._announcement(free), self._dht.wall_clock()
        )
        self._changed.set()
        return await self.store_on_closest(record)

    async def republish(self) -> int:
        """Store again every record due now (renewed, or a new announcement if the free space
        changed); returns how many were sent."""
        values = {}
        if self._free_bytes is not None:
            slot = (int(RecordKind.ANNOUNCEMENT), bytes(self._dht.node_id))
            values[slot] = self._announcement(self._free_bytes())
        due = self.records.due(self._dht.wall_clock(), values=values)
        fresh, self._fresh = self._fresh, []
        due += [r for r in fresh if r not in due]
        for record in due:
            await self.store_on_closest(record)
        return len(due)

    def _renewed(self, credentials: NodeCredentials) -> None:
        """A renewed certificate: records carry it from their next republish, and the
        announcement, whose value carries it too, is signed again and sent at once."""
        self.records.use(credentials)
        node_id = bytes(self._dht.node_id)
        held = self.records.get(int(RecordKind.ANNOUNCEMENT), node_id)
        if held is None:
            return
        free = decode_announcement(held.value).free_bytes
        value = self._announcement(self._free_bytes() if self._free_bytes else free)
        now = self._dht.wall_clock()
        self._fresh.append(self.records.publish(RecordKind.ANNOUNCEMENT, node_id, value, now))
        self._changed.set()

    def _announcement(self, free_bytes: int) -> bytes:
        node = self._dht.node
        return Announcement(
            address=node.address,
            datacenter=node.identity.datacenter,
            region=node.identity.region,
            free_bytes=free_bytes,
            certificate_der=node.credentials.certificate_der(),
        ).encode()

    async def store_on_closest(self, record: SignedRecord) -> int:
        """Store ``record`` on the k closest live nodes to its key; how many accepted it."""
        result = await self._dht.lookup(record.key)
        accepted = 0

        async def store_one(contact: Contact) -> None:
            nonlocal accepted
            if await self.store_on(contact, record):
                accepted += 1

        async with trio.open_nursery() as nursery:
            for contact in result.closest:
                nursery.start_soon(store_one, contact)
        return accepted

    async def store_on(self, contact: Contact, record: SignedRecord) -> bool:
        """Store ``record`` on ``contact``; True if it accepted it."""
        dht = self._dht
        try:
            reply = await dht.node.call(
                contact.id, contact.address, Store(record=record), timeout=dht.settings.rpc_timeout
            )
        except PeerTooOld:
            return False  # a kind its version does not know (said once by its session)
        except RPC_FAILURES as exc:
            dht.table.record_failure(contact.id, trio.current_time())
            log.debug("storing on %s failed: %s", short_id(contact.id), exc)
            return False
        dht.table.record_success(contact.id, trio.current_time())
        if isinstance(reply, StoreReply) and not reply.stored:
            log.info(
                "%s refused a record: %s",
                short_id(contact.id),
                reply.reason,
                extra={"event": "store_refused", "peer": contact.id.hex()},
            )
        return isinstance(reply, StoreReply) and reply.stored
