"""What a node holds for the mesh: the DHT records others stored here, served and handed on.

Strategy: what is kept, and how much per publisher, is the core's
(:class:`~p2pstore.core.record_store.RecordStore`); this driver answers FIND_VALUE and STORE,
restores the records saved by the last run through the same checks as a peer's STORE, forgets
expired and revoked ones, and hands records over to a newcomer closer to their keys.  A refusal
is logged once per publisher per interval, so a flood is not a flood of log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from p2pstore.core.contact import Contact
from p2pstore.core.dht_upkeep import closer_to
from p2pstore.core.record_store import PutResult, RecordStore
from p2pstore.core.records import CA_KINDS, RejectReason
from p2pstore.errors import RecordRejected
from p2pstore.identity import PeerIdentity, TrustAnchor, short_id
from p2pstore.net.throttle import RefusalLog
from p2pstore.wire import (
    MAX_RECORDS_PER_REPLY,
    FindValue,
    FindValueReply,
    Message,
    SignedRecord,
    Store,
    StoreReply,
)

if TYPE_CHECKING:
    from p2pstore.net.dht import Dht

log = logging.getLogger("p2pstore.dht")

REPLY_VALUE_BUDGET = 12 * 1024 * 1024
"""Record bytes one FIND_VALUE reply may carry: the rest of a 16 MiB frame is headroom."""


class RecordHolder:
    """The records this node holds for others (``store``), and the handlers that serve them."""

    def __init__(self, dht: Dht, store: RecordStore) -> None:
        self._dht = dht
        self.store = store
        self._quota_log = RefusalLog()
        self.ca_listeners: list[Callable[[SignedRecord], object]] = []
        """Called with every record of a ``CA_KINDS`` kind a peer stored here that is newer
        than the one held (a revocation list or policy spreading through the mesh)."""

    def restore(self, records: Sequence[SignedRecord]) -> int:
        """Hold again records saved by an earlier run, each verified as a peer's STORE is
        (an expired, forged or superseded one is dropped).  Returns how many it holds anew
        (a record it already held is not counted twice)."""
        kept = 0
        for record in records:
            try:
                outcome = self.store.put(record, self._dht.wall_clock(), trust=self._dht.trust())
            except RecordRejected:
                continue
            kept += outcome is not PutResult.UNCHANGED
        return kept

    def local_records(self, kind: int, key: bytes) -> list[SignedRecord]:
        """Unexpired records under (kind, key) that this node holds: its own first."""
        now = self._dht.wall_clock()
        held = self.store.get(kind, key, now)
        own = self._dht.published.get(kind, key)
        if own is None or own.expires_at <= now:
            return held
        return [own, *[record for record in held if record != own]]

    async def expire(self) -> None:
        """Forget the records that expired."""
        await trio.lowlevel.checkpoint()
        removed = self.store.expire(self._dht.wall_clock())
        if removed:
            log.debug("expired %d records", removed)

    def drop_revoked(self, trust: TrustAnchor) -> None:
        """The node reloaded its revocation list: forget every record a revoked certificate
        signed (their publishers can no longer renew them anywhere either)."""
        dropped = self.store.drop_revoked(trust)
        for publisher, count in sorted(dropped.items()):
            log.warning(
                "dropped %d DHT records published by %s: its certificate was revoked",
                count,
                short_id(publisher),
                extra={"event": "records_revoked", "publisher": publisher.hex(), "records": count},
            )

    def usage_by_role(self) -> dict[str, tuple[int, int]]:
        return {
            role.value: (usage.records, usage.bytes)
            for role, usage in self.store.usage_by_role().items()
        }

    async def hand_over(self, newcomer: Contact) -> None:
        """Give a node that joined closer to some keys than we are the records it should hold.

        Only records our store accepted are offered, so one publisher's share of what we hand
        over is bounded by its quota here, whatever it sent us."""
        held = self.store.records_for_refresh(self._dht.wall_clock())
        handed = closer_to(((r.key, r) for r in held), self._dht.node_id, newcomer.id)
        offered, taken = len(handed), 0
        for record in handed:
            taken += await self._dht.publisher.store_on(newcomer, record)
        log.debug(
            "handed %d DHT records over to %s, which is closer to their keys (%d stored)",
            offered,
            short_id(newcomer.id),
            taken,
            extra={
                "event": "records_handed_over",
                "peer": newcomer.id.hex(),
                "records": offered,
                "stored": taken,
            },
        )

    async def on_find_value(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, FindValue)
        self._dht.heard_from(peer)
        chosen: list[SignedRecord] = []
        budget = REPLY_VALUE_BUDGET
        for record in self.local_records(message.kind, message.key):
            if len(record.value) > budget or len(chosen) >= MAX_RECORDS_PER_REPLY:
                break
            chosen.append(record)
            budget -= len(record.value)
        contacts = () if chosen else self._dht.contact_infos(message.key, peer.node_id)
        return FindValueReply(records=tuple(chosen), contacts=contacts)

    async def on_store(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, Store)
        try:
            outcome = self.store.put(
                message.record, self._dht.wall_clock(), trust=self._dht.trust()
            )
        except RecordRejected as rejected:
            self._dht.node.metrics.record_record_refused(rejected.reason)
            if rejected.reason == RejectReason.OVER_QUOTA and rejected.publisher is not None:
                self._log_over_quota(peer, rejected, rejected.publisher)
            else:
                log.info(
                    "refused a record from %s: %s",
                    short_id(peer.node_id),
                    rejected,
                    extra={
                        "event": "record_refused",
                        "peer": peer.node_id.hex(),
                        "reason": rejected.reason,
                    },
                )
            return StoreReply(stored=False, reason=str(rejected)[:500])
        if outcome is not PutResult.UNCHANGED and message.record.kind in CA_KINDS:
            for listener in self.ca_listeners:  # newer than what we held: the CA's news
                listener(message.record)
        return StoreReply(stored=True, reason="")

    def _log_over_quota(
        self, peer: PeerIdentity, rejected: RecordRejected, publisher: bytes
    ) -> None:
        """Once per publisher per interval: a flood must not become a flood of log lines."""
        left_out = self._quota_log.due(publisher, trio.current_time())
        if left_out is None:
            return
        log.warning(
            "%s (sent by %s; %d more refusals of this publisher not logged since its last line)",
            rejected,
            short_id(peer.node_id),
            left_out,
            extra={
                "event": "record_quota_exceeded",
                "publisher": publisher.hex(),
                "peer": peer.node_id.hex(),
                "records": self.store.usage_of(publisher).records,
                "bytes": self.store.usage_of(publisher).bytes,
                "not_logged": left_out,
            },
        )
