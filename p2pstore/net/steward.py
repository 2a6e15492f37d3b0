"""Stewards: the live peer closest to an object keeps its records alive and its chunks whole.

Strategy: every node looks at the manifests it holds as a DHT record holder, and for each one
decides whether it is the object's steward: no live contact is XOR-closer to the object's key
(closer contacts are pinged, at most ``max_closer`` of them; a node with more closer contacts
leaves the object to them).  Once per ``check_interval`` a steward

1. asks every holder of its objects which fragments it still has, one batched ``HasFragments``
   per holder (not per object), paced to ``queries_per_second``; an answer makes the holder
   heard in the :class:`FailureDetector`, silence makes it missed;
2. assesses every chunk with :func:`assess_chunk` (a fragment reported missing is lost at once,
   one whose holder is silent only after the rule's grace period), and repairs the chunks that
   need it: fetch any k survivors, rebuild the lost shares with the verify cap's manifest alone
   (:func:`rebuild_fragments`: no key, no plaintext), place them with the put's rendezvous under
   the rule, store them, and publish a new placement version;
3. keeps its own signed copies of the manifest and placement records published, so the DHT
   renews them after the client that put the object has gone.

Why it is safe to be wrong about who the steward is: a repair publishes whole chunk rows computed
from one consistent view (survivors plus new holders within the rule), newer than what it read,
so overlapping stewards at worst repair twice; a steward that dies mid-repair published nothing,
and its successor redoes the repair (rendezvous picks the same holders, which store a fragment
they already hold once).  Fragments left behind by a dead steward or a returning holder are
garbage, never a rule violation.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from p2pstore.codec import decode_manifest
from p2pstore.codec.manifest import object_id_of
from p2pstore.core.contact import Contact
from p2pstore.core.holders import newest_placement
from p2pstore.core.placement import Candidate
from p2pstore.core.records import RULES, RecordKind, manifest_key, sign_record
from p2pstore.core.repair_plan import (
    FailureDetector,
    FragmentReport,
    Verdict,
    assess_chunk,
)
from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.errors import (
    IntegrityError,
    NodeLeaving,
    P2PStoreError,
    RemoteError,
    RemoteProtocolError,
)
from p2pstore.identity import short_id
from p2pstore.net.client import FRAGMENT_FAILURES, Client, ClientSettings
from p2pstore.net.dht import RPC_FAILURES, Dht
from p2pstore.net.repairer import ChunkRepair, Known, Repairer, Watched
from p2pstore.store import FragmentStore
from p2pstore.wire import HasFragments, HasFragmentsReply, Ping, SignedRecord
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY

log = logging.getLogger("p2pstore.steward")
T = TypeVar("T")

class Leaving(enum.Enum):
    """A holder's answer meaning "I am being drained: move my fragments"."""

    LEAVING = "leaving"


LEAVING = Leaving.LEAVING

_Slot = tuple[int, int, int]
"""(watched object index, chunk, share)."""


@dataclass(frozen=True, slots=True)
class StewardSettings:
    """How often and how hard a steward checks; the defaults suit a datacenter mesh."""

    check_interval: float = 600.0
    """Seconds between rounds (a lost holder is noticed within one round of its grace)."""
    max_closer: int = 2
    """Closer contacts pinged before stepping in as steward for an object."""
    queries_per_second: float = 20.0
    """``HasFragments`` requests started per second, over all holders."""
    query_concurrency: int = 8
    """``HasFragments`` requests in flight at once."""
    query_timeout: float = 10.0
    """Seconds a holder has to answer a check or a ping."""
    repairs_at_once: int = 2
    """Objects being repaired at once."""

    def __post_init__(self) -> None:
        if self.check_interval <= 0 or self.queries_per_second <= 0 or self.query_timeout <= 0:
            raise ValueError("steward intervals, rates and timeouts must be positive")
        if self.max_closer < 0 or self.query_concurrency < 1 or self.repairs_at_once < 1:
            raise ValueError("steward counts must be positive (max_closer may be 0)")


@dataclass
class RoundReport:
    """What one round (or one ``check``) found and did."""

    objects: list[Watched] = field(default_factory=list)
    queries: int = 0
    repairs: list[ChunkRepair] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[Verdict, int]:
        """Chunks per verdict, after repairs were attempted (as assessed before them)."""
        counts: dict[Verdict, int] = {}
        for watched in self.objects:
            for assessment in watched.assessments:
                counts[assessment.verdict] = counts.get(assessment.verdict, 0) + 1
        return counts


class Steward:
    """Checks and repairs the objects this node stewards.  Start with
    ``await nursery.start(steward.run)``; :meth:`check_objects` serves ``p2pstore check``."""

    def __init__(
        self,
        dht: Dht,
        rules: Mapping[str, CodingRule] = SHIPPED_RULES,
        *,
        store: FragmentStore | None = None,
        settings: StewardSettings | None = None,
        client_settings: ClientSettings | None = None,
    ) -> None:
        """``store``: this node's fragments (checked and read locally when it is a holder)."""
        self.dht = dht
        self.node = dht.node
        self.rules = rules
        self.store = store
        self.settings = settings or StewardSettings()
        self.client = Client(dht, settings=client_settings, local_store=store)
        self.detector = FailureDetector()
        self.leaving = False
        """Set while this node is drained: its own fragments are moved like a leaving peer's."""
        self.leaving_peers: set[bytes] = set()
        """Holders that answered they are leaving: offered no new fragments."""
        self.repairer = Repairer(dht, self.client, self.detector, self._unwelcome)
        self.rounds = 0
        self._manifests: dict[bytes, Known] = {}
        self._warned: set[str] = set()
        self._round_done = trio.Event()

    # -- service ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A round every ``check_interval`` until cancelled; a round's failures are logged."""
        task_status.started()
        while True:
            await trio.sleep(self.settings.check_interval)
            await self.check_round()

    async def wait_round(self) -> None:
        """Return after the next round ends (tests and the demo watch repairs with it)."""
        await self._round_done.wait()

    async def check_round(self) -> RoundReport:
        """Check every object this node stewards now; repair what needs it."""
        keys = await self._stewarded_keys()
        self.node.metrics.stewarded_objects.set(len(keys))
        report = await self.check_objects(
            [self._manifests[key] for key in keys], renew_records=True
        )
        self.rounds += 1
        self._round_done.set()
        self._round_done = trio.Event()
        if report.repairs or report.failures:
            log.info(
                "steward round %d: %d objects, %d chunks repaired, %d failures",
                self.rounds,
                len(report.objects),
                len(report.repairs),
                len(report.failures),
                extra={"event": "steward_round", "repairs": len(report.repairs)},
            )
        return report

    async def check_objects(
        self,
        objects: Sequence[Known],
        *,
        repair: bool = True,
        renew_records: bool = False,
        grace_period: float | None = None,
    ) -> RoundReport:
        """Check the holders of ``objects`` (batched per holder) and, with
        ``repair``, rebuild every chunk below its threshold.  ``grace_period`` overrides the
        rules' (``p2pstore check --repair`` passes 0: the operator decided).  Raises nothing
        for a peer's failure: those are in the report's ``failures``."""
        report = RoundReport()
        for known in objects:
            watched = await self._watch(known, grace_period, report)
            if watched is not None:
                report.objects.append(watched)
        await self._query_holders(report)
        now = trio.current_time()
        due: list[Watched] = []
        for watched in report.objects:
            watched.assessments = [
                assess_chunk(
                    [h.node_id if h is not None else None for h in row],
                    self.detector.health,
                    watched.rule,
                    now,
                    reports={s: r for (c, s), r in watched.reports.items() if c == index},
                )
                for index, row in enumerate(watched.placement.chunks)
            ]
            if any(watched.due(index) for index in range(len(watched.assessments))):
                due.append(watched)
        if repair and due:
            limiter = trio.CapacityLimiter(self.settings.repairs_at_once)

            async def repair_one(watched: Watched) -> None:
                done = await self.repairer.repair_object(watched, limiter, report.failures)
                report.repairs.extend(done)

            async with trio.open_nursery() as nursery:
                for watched in due:
                    nursery.start_soon(repair_one, watched)
        if renew_records:
            for watched in report.objects:
                await self._renew(watched)
        return report

    # -- who stewards what ------------------------------------------------------------------

    async def _stewarded_keys(self) -> list[bytes]:
        """Keys of the manifests this node holds and is the closest live peer to."""
        now = self.dht.wall_clock()
        held: dict[bytes, SignedRecord] = {}
        for record in self.dht.store.records_for_refresh(now):
            if record.kind == RecordKind.MANIFEST:
                held.setdefault(bytes(record.key), record)
        alive: dict[bytes, bool] = {}
        mine: list[bytes] = []
        for key, record in held.items():
            if key not in self._manifests:
                object_id = object_id_of(record.value)
                try:
                    manifest = decode_manifest(record.value, object_id)
                except (IntegrityError, RemoteProtocolError) as exc:
                    log.warning("ignoring a manifest record that does not decode: %s", exc)
                    continue
                self._manifests[key] = Known(object_id, manifest, record.value)
            if await self._closest_live(key, alive):
                mine.append(key)
            else:
                self._stop_renewing(key)
        for key in set(self._manifests) - set(held):
            del self._manifests[key]
            self._stop_renewing(key)
        return mine

    async def _closest_live(self, key: bytes, alive: dict[bytes, bool]) -> bool:
        me = int.from_bytes(self.dht.node_id, "big") ^ int.from_bytes(key, "big")
        closer = [
            contact
            for contact in self.dht.table.closest(
                key, self.settings.max_closer + 1, include_stale=False
            )
            if int.from_bytes(contact.id, "big") ^ int.from_bytes(key, "big") < me
        ]
        if len(closer) > self.settings.max_closer:
            return False
        for contact in closer:
            if contact.id not in alive:
                alive[contact.id] = await self._answers(contact)
            if alive[contact.id]:
                return False
        return True

    async def _answers(self, contact: Contact) -> bool:
        now = trio.current_time()
        try:
            await self.node.call(
                contact.id,
                contact.address,
                Ping(nonce=2, padding=b""),
                timeout=self.settings.query_timeout,
            )
        except RPC_FAILURES:
            self.dht.table.record_failure(contact.id, now)
            return False
        self.dht.table.record_success(contact.id, trio.current_time())
        return True

    def _unwelcome(self) -> set[bytes]:
        """Peers a repair must not place on: leaving ones, and this node while it leaves."""
        return self.leaving_peers | ({self.dht.node_id} if self.leaving else set())

    def _stop_renewing(self, key: bytes) -> None:
        for kind in (RecordKind.MANIFEST, RecordKind.PLACEMENT):
            self.dht.published.pop((int(kind), key), None)

    # -- checking ---------------------------------------------------------------------------

    async def _watch(
        self, known: Known, grace_period: float | None, report: RoundReport
    ) -> Watched | None:
        object_id, manifest = known.object_id, known.manifest
        rule = self.rules.get(manifest.rule)
        if rule is None or (rule.k, rule.n) != (manifest.k, manifest.n):
            problem = (
                f"object {object_id.hex()[:16]} uses rule {manifest.rule!r} "
                f"({manifest.k}-of-{manifest.n}), which this node's configuration does not "
                "declare with that k and n: it is not checked or repaired here; declare the "
                "mesh's rules in [rules] of every node"
            )
            report.failures.append(problem)
            if manifest.rule not in self._warned:
                self._warned.add(manifest.rule)
                log.error("%s", problem, extra={"event": "unknown_rule"})
            return None
        if grace_period is not None:
            rule = dataclasses.replace(rule, grace_period=grace_period)
        key = manifest_key(object_id)
        records = self.dht.store.get(int(RecordKind.PLACEMENT), key, self.dht.wall_clock())
        own = self.dht.published.get((int(RecordKind.PLACEMENT), key))
        if own is not None:
            records = [own, *records]
        if not records:
            records = await self.dht.find_records(RecordKind.PLACEMENT, key)
        placement, sequence, problems = newest_placement(
            records, object_id, manifest.chunk_count, manifest.n
        )
        for problem in problems:
            log.warning("object %s: %s", object_id.hex()[:16], problem)
        if placement is None:
            report.failures.append(f"object {object_id.hex()[:16]} has no placement record")
            return None
        return Watched(object_id, manifest, known.manifest_bytes, rule, placement, sequence)

    async def _query_holders(self, report: RoundReport) -> None:
        """One batched question per holder about all its fragments of the round's objects."""
        wanted: dict[bytes, list[_Slot]] = {}
        holders: dict[bytes, Candidate] = {}
        for number, watched in enumerate(report.objects):
            for index, row in enumerate(watched.placement.chunks):
                for share, holder in enumerate(row):
                    if holder is not None:
                        wanted.setdefault(holder.node_id, []).append((number, index, share))
                        holders[holder.node_id] = holder
        slots_free = trio.Semaphore(self.settings.query_concurrency)
        gap = 1.0 / self.settings.queries_per_second
        async with trio.open_nursery() as nursery:
            for node_id, slots in wanted.items():
                for start in range(0, len(slots), MAX_IDS_PER_QUERY):
                    await slots_free.acquire()
                    report.queries += 1
                    batch = slots[start : start + MAX_IDS_PER_QUERY]
                    nursery.start_soon(self._ask, holders[node_id], batch, report, slots_free)
                    await trio.sleep(gap)

    async def _ask(
        self,
        holder: Candidate,
        batch: list[_Slot],
        report: RoundReport,
        slots_free: trio.Semaphore,
    ) -> None:
        try:
            ids = [
                report.objects[number].manifest.chunks[index].fragment_ids[share]
                for number, index, share in batch
            ]
            present = await self._holds(holder, ids)
            if present is None:
                self.detector.missed(holder.node_id, trio.current_time())
                return
            self.detector.heard(holder.node_id, trio.current_time())
            if present is LEAVING:
                self.leaving_peers.add(holder.node_id)
                for number, index, share in batch:
                    report.objects[number].leaving.add((index, share))
                return
            self.leaving_peers.discard(holder.node_id)
            for (number, index, share), held in zip(batch, present, strict=True):
                if not held:
                    report.objects[number].reports[(index, share)] = FragmentReport.MISSING
        finally:
            slots_free.release()

    async def _holds(self, holder: Candidate, ids: list[bytes]) -> list[bool] | Leaving | None:
        """Which of ``ids`` the holder has, :data:`LEAVING` if it is being drained, or None
        if it did not answer sensibly."""
        if holder.node_id == self.dht.node_id and self.store is not None:
            if self.leaving:
                return LEAVING
            store = self.store
            return [store.has(fragment_id) for fragment_id in ids]
        try:
            reply = await self.node.call(
                holder.node_id,
                holder.address,
                HasFragments(fragment_ids=tuple(ids)),
                timeout=self.settings.query_timeout,
            )
        except RemoteError as refused:
            return LEAVING if refused.code == NodeLeaving.__name__ else None
        except FRAGMENT_FAILURES:
            return None
        if not isinstance(reply, HasFragmentsReply) or len(reply.present) != len(ids):
            return None
        return list(reply.present)

    # -- records ----------------------------------------------------------------------------

    async def _renew(self, watched: Watched) -> None:
        """Publish our own copies of the object's records once; the DHT renews them."""
        key = manifest_key(watched.object_id)
        now = int(self.dht.wall_clock())
        for kind, value, sequence in (
            (RecordKind.MANIFEST, watched.manifest_bytes, now),
            (RecordKind.PLACEMENT, watched.placement.encode(), max(watched.sequence, 1)),
        ):
            if (int(kind), key) in self.dht.published:
                continue
            record = sign_record(
                self.node.credentials,
                kind,
                key,
                value,
                sequence=sequence,
                expires_at=now + RULES[kind].max_ttl,
            )
            try:
                await self.dht.publish(record)
            except P2PStoreError as exc:
                log.warning("could not publish records of %s: %s", short_id(key), exc)
