"""The Kademlia DHT of a node: routing-table upkeep, iterative lookups, and signed records.

Strategy: the decisions live in the sans-IO core (``RoutingTable``, ``Lookup``,
``RecordStore``); this module only moves messages and time between them and the node.  A
contact enters the routing table only when a session with it comes up, so its id, datacenter
and region are the ones its certificate proves; contacts named in replies are only dialled,
with their claimed id as the expected one.  Every RPC has a deadline; a failed one counts
against the contact, which is dropped only after repeated failures.  Records carry their own
proof (signature, publisher's mesh certificate, expiry, kind rules), so holders can pass them on
and readers check them whoever served them; what one publisher may hold here is bounded by the
store, and a revocation list reloaded by the node drops a revoked publisher's records.
When to probe contacts, refresh buckets and ping before evicting is the core's
:class:`~p2pstore.core.dht_upkeep.DhtUpkeep` (the simulator replays the same rounds): this
driver sleeps until its next deadline and sends what it names.  Expiry runs on trio's clock;
our own records are sent again by the :class:`Publisher` when the core says they are due.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from p2pstore.core.capacity import FreeSpace
from p2pstore.core.contact import Contact
from p2pstore.core.dht_upkeep import DEFAULT_REFRESH_INTERVAL, DhtUpkeep, Met
from p2pstore.core.lookup import Lookup, LookupResult
from p2pstore.core.record_store import RecordStore
from p2pstore.core.records import RecordKind, verify_record
from p2pstore.core.routing import RoutingTable
from p2pstore.errors import (
    ConfigError,
    PeerRefused,
    PeerTooOld,
    PeerUnreachable,
    RecordRejected,
    RemoteError,
    RemoteProtocolError,
)
from p2pstore.identity import PeerIdentity, Role, TrustAnchor, short_id
from p2pstore.net.node import Node
from p2pstore.net.publisher import RPC_FAILURES, FreeBytes, Publisher
from p2pstore.net.record_holder import RecordHolder
from p2pstore.wire import (
    ContactInfo,
    FindNode,
    FindNodeReply,
    FindValue,
    FindValueReply,
    Message,
    Ping,
    SignedRecord,
    Store,
)

log = logging.getLogger("p2pstore.dht")


@dataclass(frozen=True, slots=True)
class DhtSettings:
    """Kademlia's parameters and timers; the defaults suit a datacenter mesh."""

    k: int = 20
    alpha: int = 3
    rpc_timeout: float = 5.0
    max_failures: int = 3
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    expire_interval: float = 60.0
    probe_concurrency: int = 16
    max_records: int = 100_000
    max_record_bytes: int = 512 * 1024 * 1024
    max_publisher_records: int | None = None
    """Records one publisher may hold here; None: a quarter of ``max_records``."""
    max_publisher_bytes: int | None = None
    """Bytes of records one publisher may hold here; None: a quarter of ``max_record_bytes``."""


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    """A finished lookup: the core's result and, for FIND_VALUE, the valid records found."""

    result: LookupResult
    records: tuple[SignedRecord, ...] = ()


_Outcome = Message | PeerRefused | PeerUnreachable | RemoteError | RemoteProtocolError


class Dht:
    """Kademlia over a :class:`Node`.  Start with ``await nursery.start(dht.run)``."""

    def __init__(
        self,
        node: Node,
        trust: Callable[[], TrustAnchor],
        *,
        rng: random.Random,
        wall_clock: Callable[[], float],
        settings: DhtSettings | None = None,
    ) -> None:
        self.node = node
        self.settings = settings or DhtSettings()
        self.node_id = node.identity.node_id
        self.table = RoutingTable(
            self.node_id,
            k=self.settings.k,
            max_failures=self.settings.max_failures,
            now=trio.current_time(),
        )
        self.upkeep = DhtUpkeep(
            self.table, now=trio.current_time(), refresh_interval=self.settings.refresh_interval
        )
        """When this node probes, refreshes and pings (the core's decisions; see ``run``)."""
        self.store = RecordStore(
            self.settings.max_records,
            self.settings.max_record_bytes,
            max_publisher_records=self.settings.max_publisher_records,
            max_publisher_bytes=self.settings.max_publisher_bytes,
        )
        self._trust = trust
        self._rng = rng
        self._wall_clock = wall_clock
        self._nursery: trio.Nursery | None = None
        self.joined = False
        """True once :meth:`join` succeeded (the node's health and metrics report it)."""
        self.holder = RecordHolder(self, self.store)
        self.free_space = FreeSpace()
        """Free space other nodes announced (placement weighs candidates by it)."""
        self.publisher = Publisher(self)
        self.published = self.publisher.records
        """What this node publishes itself, and when each is due again."""
        node.metrics.watch_routing_table(lambda: len(self.table))
        node.metrics.watch_records(lambda: (len(self.store), self.store.bytes_held))
        node.metrics.watch_record_publishers(self.holder.usage_by_role)
        node.metrics.watch_joined(lambda: self.joined)
        node.add_listener(self)
        node.handle(FindNode, self._on_find_node)
        node.handle(FindValue, self.holder.on_find_value)
        node.handle(Store, self.holder.on_store)

    def wall_clock(self) -> float:
        """Unix time as this DHT reads it (record expiries are wall-clock times)."""
        return self._wall_clock()

    def trust(self) -> TrustAnchor:
        """The mesh CA as this node trusts it now (receipts are checked against it)."""
        return self._trust()

    # -- service ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the table and the records fresh until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._keep_up)
            await nursery.start(self.publisher.run)
            nursery.start_soon(self._every, self.settings.expire_interval, self.holder.expire)
            task_status.started()

    async def _keep_up(self) -> None:
        while True:
            await trio.sleep_until(self.upkeep.next_deadline())
            await self.refresh()

    @staticmethod
    async def _every(interval: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await trio.sleep(interval)
            await job()

    async def join(
        self,
        bootstrap: Sequence[str],
        pinned: Mapping[str, bytes] | None = None,
        *,
        known: Sequence[Contact] = (),
    ) -> int:
        """Join through the bootstrap peers that answer, then look ourselves up and refresh
        every bucket.  Returns how many bootstrap peers answered.  ``pinned`` maps addresses to
        the node id their certificate must carry.  ``known`` are contacts remembered from an
        earlier run: they are dialled too, at once, each expected to carry its saved node id,
        so a restarted node rejoins even when every bootstrap peer is down.

        Raises :class:`PeerUnreachable` naming every peer tried and why, if none answered.
        """
        answered = 0
        problems: list[str] = []
        others = [address for address in bootstrap if address != self.node.address]
        for address in others:
            try:
                await self.node.connect(address, (pinned or {}).get(address))
                answered += 1
            except (PeerRefused, PeerUnreachable) as exc:
                problems.append(f"{address}: {exc}")
                log.warning(
                    "bootstrap peer %s did not answer: %s",
                    address,
                    exc,
                    extra={"event": "bootstrap_failed", "remote": address},
                )
        reached_known = await self._dial_known(known, problems)
        # Only other peers count: a node whose list names just itself founds the mesh alone,
        # and saved contacts help a join but never stop a node that has no one else to ask.
        if others and not (answered or reached_known):
            saved = f" nor the {len(known)} saved contacts" if known else ""
            raise PeerUnreachable(
                f"none of the {len(others)} bootstrap peers{saved} answered:\n  "
                + "\n  ".join(problems)
                + "\ncheck the addresses in [bootstrap] and that those nodes are running"
            )
        await self.lookup(self.node_id)
        for target in self.upkeep.joined(trio.current_time(), self._rng):
            await self.lookup(target)
        self.joined = True
        log.info(
            "joined the mesh through %d bootstrap peers and %d saved contacts; "
            "routing table holds %d contacts",
            answered,
            reached_known,
            len(self.table),
            extra={"event": "joined", "contacts": len(self.table), "saved_contacts": reached_known},
        )
        return answered

    async def _dial_known(self, known: Sequence[Contact], problems: list[str]) -> int:
        """Dial remembered contacts, a few at a time, until k of them answered as the node they
        were; returns how many did (a contact already in session counts without a dial)."""
        connected = {view.identity.node_id for view in self.node.peers()}
        reached = 0
        limiter = trio.CapacityLimiter(self.settings.probe_concurrency)

        async def dial(contact: Contact, nursery: trio.Nursery) -> None:
            nonlocal reached
            async with limiter:
                try:
                    await self.node.connect(contact.address, contact.id)
                except (PeerRefused, PeerUnreachable, ConfigError) as exc:  # bad address: skip
                    problems.append(f"{contact.address} (saved contact): {exc}")
                    return
            reached += 1
            if reached >= self.settings.k:
                nursery.cancel_scope.cancel()  # enough to rejoin; the lookups find the rest

        async with trio.open_nursery() as nursery:
            for contact in known:
                if contact.id in connected:
                    reached += 1
                elif contact.id != self.node_id and contact.address != self.node.address:
                    nursery.start_soon(dial, contact, nursery)
        return reached

    async def refresh(self) -> None:
        """Run the upkeep round due now, if one is (see :class:`DhtUpkeep`): probe the
        contacts silent since about the last round, a few at a time, then look up a random id
        in every bucket no lookup touched for a refresh interval."""
        due = self.upkeep.due(trio.current_time(), self._rng)
        if due is None:
            return
        limiter = trio.CapacityLimiter(self.settings.probe_concurrency)
        async with trio.open_nursery() as nursery:
            for contact in due.probes:
                nursery.start_soon(self._probe, contact, limiter)
        for target in due.refresh:
            await self.lookup(target)

    async def _probe(self, contact: Contact, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            alive = await self._answers_ping(contact)
        if self.upkeep.probed(contact.id, alive, trio.current_time()):
            log.info(
                "dropped contact %s: silent through repeated probes",
                short_id(contact.id),
                extra={"event": "contact_dropped", "peer": contact.id.hex()},
            )

    def heard_from(self, peer: PeerIdentity) -> None:
        """A request from a node proves it is alive."""
        if peer.role is Role.NODE:
            self.table.record_success(peer.node_id, trio.current_time())

    # -- lookups ----------------------------------------------------------------------------

    async def lookup(self, target: bytes) -> LookupResult:
        """The k closest live nodes to ``target`` that answered (FIND_NODE)."""
        outcome = await self._lookup(target, FindNode(target=target), find_value=False)
        return outcome.result

    async def find_records(
        self, kind: RecordKind, key: bytes, *, seeds: Sequence[Contact] | None = None
    ) -> list[SignedRecord]:
        """Valid records of ``kind`` under ``key`` (FIND_VALUE), our own held ones first.

        ``seeds`` start the lookup from chosen contacts instead of our table's closest (e.g. to
        check what the mesh answers from one node's point of view)."""
        local = self.holder.local_records(int(kind), key)
        outcome = await self._lookup(
            key, FindValue(kind=int(kind), key=key), find_value=True, seeds=seeds
        )
        found = list(local)
        for record in outcome.records:
            if record not in found:
                found.append(record)
        return found

    async def _lookup(
        self,
        target: bytes,
        request: Message,
        *,
        find_value: bool,
        seeds: Sequence[Contact] | None = None,
    ) -> LookupOutcome:
        if seeds is None:
            seeds = self.table.closest(target, self.settings.k, include_stale=False)
        lookup = Lookup(
            target,
            seeds,
            local_id=self.node_id,
            k=self.settings.k,
            alpha=self.settings.alpha,
            find_value=find_value,
        )
        self.table.mark_refreshed(target, trio.current_time())
        records: list[SignedRecord] = []
        send, receive = trio.open_memory_channel[tuple[Contact, _Outcome]](math.inf)
        async with trio.open_nursery() as nursery:
            while True:
                for contact in lookup.next_queries():
                    nursery.start_soon(self._query, contact, request, send)
                if lookup.done or not lookup.in_flight:
                    break
                contact, outcome = await receive.receive()
                self._absorb(lookup, contact, outcome, records)
            nursery.cancel_scope.cancel()
        return LookupOutcome(lookup.result(), tuple(records))

    async def _query(
        self,
        contact: Contact,
        request: Message,
        send: trio.MemorySendChannel[tuple[Contact, _Outcome]],
    ) -> None:
        outcome: _Outcome
        peer, timeout = (contact.id, contact.address), self.settings.rpc_timeout
        try:
            try:
                outcome = await self.node.call(*peer, request, timeout=timeout)
            except PeerTooOld:  # a record kind its version does not know: it still shows the way
                if not isinstance(request, FindValue):
                    raise
                outcome = await self.node.call(*peer, FindNode(target=request.key), timeout=timeout)
        except RPC_FAILURES as exc:
            outcome = exc
        await send.send((contact, outcome))

    def _absorb(
        self, lookup: Lookup, contact: Contact, outcome: _Outcome, records: list[SignedRecord]
    ) -> None:
        now = trio.current_time()
        if isinstance(outcome, FindNodeReply | FindValueReply):
            self.table.record_success(contact.id, now)
            if isinstance(outcome, FindValueReply) and outcome.records:
                valid = self._valid_records(outcome.records, contact)
                if valid:
                    records.extend(r for r in valid if r not in records)
                    if not lookup.done:
                        lookup.on_value(contact.id, valid[0].value)
                    return
            if not lookup.done:
                lookup.on_reply(contact.id, self._contacts(outcome.contacts))
            return
        if isinstance(outcome, Message):
            outcome = RemoteProtocolError(
                f"{contact.address} answered a lookup with {type(outcome).__name__}"
            )
        if self.table.record_failure(contact.id, now):
            log.info(
                "dropped contact %s after repeated failures: %s",
                short_id(contact.id),
                outcome,
                extra={"event": "contact_dropped", "peer": contact.id.hex()},
            )
        if not lookup.done:
            lookup.on_failure(contact.id)

    def _valid_records(
        self, candidates: Sequence[SignedRecord], source: Contact
    ) -> list[SignedRecord]:
        now = self._wall_clock()
        valid = []
        for record in candidates:
            try:
                verify_record(record, now, trust=self._trust())
            except RecordRejected as rejected:
                log.warning(
                    "%s served an invalid record: %s",
                    short_id(source.id),
                    rejected,
                    extra={
                        "event": "record_rejected",
                        "peer": source.id.hex(),
                        "reason": rejected.reason,
                    },
                )
                continue
            valid.append(record)
        return valid

    def _contacts(self, infos: Sequence[ContactInfo]) -> list[Contact]:
        contacts = []
        for info in infos:
            if info.node_id == self.node_id or not (info.datacenter and info.region):
                continue
            contacts.append(Contact(info.node_id, info.address, info.datacenter, info.region))
        return contacts

    # -- records ----------------------------------------------------------------------------

    async def publish(self, record: SignedRecord) -> int:
        """Store ``record`` on the k closest nodes to its key; returns how many accepted it.
        Our own records are republished as their kind's rules say (see :class:`Publisher`)."""
        return await self.publisher.publish(record)

    async def publish_value(self, kind: RecordKind, key: bytes, value: bytes) -> int:
        """Sign ``value`` as a new version of our record (kind, key) and publish it.  Raises
        :class:`LocalProtocolError` if the record breaks its kind's rules."""
        record = self.published.publish(kind, key, value, self._wall_clock())
        return await self.publisher.publish(record)

    async def announce(self, free_bytes: int | FreeBytes) -> int:
        """Publish this node's announcement, kept fresh from then on (see :class:`Publisher`)."""
        return await self.publisher.announce(free_bytes)

    # -- what the node hears ----------------------------------------------------------------

    def peer_up(self, peer: PeerIdentity, address: str) -> None:
        """A session came up: its certificate vouches for the contact."""
        if peer.role is not Role.NODE or not address:
            return
        contact = Contact(peer.node_id, address, peer.datacenter, peer.region)
        meeting = self.upkeep.met(contact, trio.current_time())
        if self._nursery is None:
            return
        if meeting.then is Met.PING_OLDEST and meeting.ping is not None:
            self._nursery.start_soon(self._check_oldest, meeting.ping)
        elif meeting.then is Met.HAND_OVER:
            self._nursery.start_soon(self.holder.hand_over, contact)

    def peer_down(self, peer: PeerIdentity) -> None:
        """Nothing to do: a closed session is not a dead peer; failed requests decide that."""

    def trust_changed(self, trust: TrustAnchor) -> None:
        """The node reloaded its revocation list: forget the records revoked publishers signed."""
        self.holder.drop_revoked(trust)

    def restore(self, records: Sequence[SignedRecord]) -> int:
        """Hold again records saved by an earlier run (see :meth:`RecordHolder.restore`)."""
        return self.holder.restore(records)

    async def _check_oldest(self, oldest: Contact) -> None:
        alive = await self._answers_ping(oldest)
        self.upkeep.ping_answered(oldest.id, alive, trio.current_time())

    async def _answers_ping(self, contact: Contact) -> bool:
        try:
            await self.node.call(
                contact.id,
                contact.address,
                Ping(nonce=0, padding=b""),
                timeout=self.settings.rpc_timeout,
            )
        except RPC_FAILURES:
            return False
        return True

    # -- handlers ---------------------------------------------------------------------------

    def contact_infos(self, target: bytes, exclude: bytes) -> tuple[ContactInfo, ...]:
        return tuple(
            ContactInfo(node_id=c.id, address=c.address, datacenter=c.datacenter, region=c.region)
            for c in self.table.closest(
                target, self.settings.k, exclude=(exclude,), include_stale=False
            )
        )

    async def _on_find_node(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, FindNode)
        self.heard_from(peer)
        return FindNodeReply(contacts=self.contact_infos(message.target, peer.node_id))
