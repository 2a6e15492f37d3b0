"""Stewards: the live peer closest to an object keeps its records alive and its chunks whole.

Strategy: the decisions are the core's (:mod:`p2pstore.core.steward_round`); this driver moves
their messages and time.  At each tick of the core's :class:`RoundClock` (every
``check_interval``) a node

1. looks at the manifests it holds as a DHT record holder and runs the core's election for
   each: it pings the closer contacts :func:`contenders` names (at most ``max_closer``; with
   more it leaves the object to them) and stewards the object if none answers;
2. reads each stewarded object's placement: the union of the receipts of every placement
   record it holds (``core.holders``) and of those it gathered itself, minus what it counts
   lost on its own evidence (``evidence``: a failed audit, a fragment it told a leaving node
   to delete);
3. sends the :class:`Census`'s questions (one batched ``StateFragments`` per holder, paced to
   ``queries_per_second``) and folds each answer in: a fresh signed receipt renews the
   holder's place ("held" keeps it, "missing" removes it), silence makes it missed in the
   :class:`FailureDetector` as of the round's instant (however late its question timed out),
   an answer that is not a valid receipt counts as "missing" for this round;
4. has the census count and assess every chunk, and repairs those due
   (:mod:`p2pstore.net.repairer`: fetch k survivors, rebuild with the verify cap's manifest
   alone, place with the core's :class:`~p2pstore.core.store_plan.RepairPlacement`, store,
   have the new holders sign, publish);
5. keeps the manifest record and its own placement record published: the receipts it verified
   that count (never a merge signed as its own claim), again whenever the set of holders
   changes and at least every ``placement_refresh`` so the receipts in it stay fresh.

Why it is safe to be wrong about who the steward is: placements merge by union, so overlapping
stewards at worst repair twice (a share then has two holders); a steward that dies mid-repair
published nothing, and its successor redoes the repair (rendezvous picks the same holders,
which store a fragment they already hold once).  Fragments left behind by a dead steward or a
returning holder are garbage, never a rule violation.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio

from p2pstore.codec import decode_manifest
from p2pstore.codec.manifest import object_id_of
from p2pstore.core.audit import AuditPlanner, AuditSettings, Evidence, WatchedFragment
from p2pstore.core.contact import Contact
from p2pstore.core.holders import Holdings
from p2pstore.core.placement import Candidate
from p2pstore.core.placement_view import Exclusion, LocalEvidence
from p2pstore.core.protocol import CHECK_INTERVAL, MAX_CLOSER, PLACEMENT_REFRESH, QUERY_TIMEOUT
from p2pstore.core.records import RecordKind, manifest_key
from p2pstore.core.repair_plan import FailureDetector, Verdict
from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.core.steward_records import StewardRecords
from p2pstore.core.steward_round import Census, Question, RoundClock, Said, contenders, elected
from p2pstore.errors import (
    IntegrityError,
    P2PStoreError,
    RemoteProtocolError,
)
from p2pstore.identity import short_id
from p2pstore.net.audits import Auditor, AuditTarget, audit_reply_error
from p2pstore.net.client import Client, ClientSettings
from p2pstore.net.dht import Dht
from p2pstore.net.leases import LeaseRenewer
from p2pstore.net.placements import Ask, publish_holdings, read_holdings
from p2pstore.net.publisher import RPC_FAILURES
from p2pstore.net.repairer import ChunkRepair, Known, Repairer, Watched
from p2pstore.store import FragmentStore
from p2pstore.wire import Ping, SignedRecord
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY

log = logging.getLogger("p2pstore.steward")


@dataclass(frozen=True, slots=True)
class StewardSettings:
    """How often and how hard a steward checks; the defaults suit a datacenter mesh."""

    check_interval: float = CHECK_INTERVAL
    """Seconds between rounds (a lost holder is noticed within one round of its grace)."""
    max_closer: int = MAX_CLOSER
    """Closer contacts pinged before stepping in as steward for an object."""
    queries_per_second: float = 20.0
    """``StateFragments`` requests started per second, over all holders."""
    query_concurrency: int = 8
    """``StateFragments`` requests in flight at once."""
    query_timeout: float = QUERY_TIMEOUT
    """Seconds a holder has to answer a check or a ping."""
    repairs_at_once: int = 2
    """Objects being repaired at once."""
    chunk_repairs_at_once: int = 4
    """Chunks being repaired at once, over all objects: each holds k fetched fragments and
    the ones rebuilt (8 MiB for a 4 MiB chunk at 4-of-8)."""
    placement_refresh: float = PLACEMENT_REFRESH
    """Seconds after which the steward's placement record is published again with the
    receipts of its latest round, even if no holder changed (receipts live three days)."""
    audits: AuditSettings = field(default_factory=AuditSettings)
    """How often holders are audited (``[repair] audit_*``)."""
    audit_concurrency: int = 8
    """Audit challenges in flight at once."""

    def __post_init__(self) -> None:
        if (
            min(self.check_interval, self.queries_per_second, self.query_timeout) <= 0
            or self.placement_refresh <= 0
        ):
            raise ValueError("steward intervals, rates and timeouts must be positive")
        if (
            self.max_closer < 0
            or self.query_concurrency < 1
            or self.repairs_at_once < 1
            or self.chunk_repairs_at_once < 1
            or self.audit_concurrency < 1
        ):
            raise ValueError("steward counts must be positive (max_closer may be 0)")


@dataclass
class RoundReport:
    """What one round (or one ``check``) found and did."""

    objects: list[Watched] = field(default_factory=list)
    queries: int = 0
    repairs: list[ChunkRepair] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    audits: list[Evidence] = field(default_factory=list)
    """The audits this check made (``check`` audits every holder once)."""

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
        rng: random.Random | None = None,
    ) -> None:
        """``store``: this node's fragments (checked and read locally when it is a holder).
        ``rng`` draws the audits' times, fragments, leaves and nonces: holders must not
        predict it, so the default is ``random.SystemRandom()`` (tests pass a seeded one)."""
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
        self.evidence = LocalEvidence()
        """What this steward counts lost on its own evidence, whatever holders sign."""
        self.repairer = Repairer(dht, self.client, self.detector, self._unwelcome, self.evidence)
        self.rng = rng if rng is not None else random.SystemRandom()
        self.auditor = Auditor(
            self.node,
            AuditPlanner(self.settings.audits, self.rng, audit_reply_error),
            self.evidence,
            concurrency=self.settings.audit_concurrency,
        )
        self.rounds = 0
        self.clock = RoundClock(self.settings.check_interval)
        """When rounds fall (its phase drawn when :meth:`run` starts)."""
        self._manifests: dict[bytes, Known] = {}
        self._holdings: dict[bytes, Holdings] = {}
        self._records = StewardRecords(self.settings.placement_refresh)
        """When our placement records were last published, and the holders they named."""
        self._warned: set[str] = set()
        self._round_done = trio.Event()
        self.renewer: LeaseRenewer | None = None
        """Set to renew the leases of live objects after each round (``net.leases``)."""

    # -- service ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A round at each tick of the core's :class:`RoundClock` (every ``check_interval``
        from a phase drawn at start, however long a round takes), and the audits of what the
        rounds found, until cancelled; a round's failures are logged."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.auditor.run)
            task_status.started()
            interval = self.settings.check_interval
            # A phase of its own, drawn once: stewards' rounds do not all fall at one instant.
            self.clock = RoundClock(interval, trio.current_time() + self.rng.uniform(0, interval))
            while True:
                at = self.clock.after(trio.current_time())
                await trio.sleep_until(at)
                await self.check_round(at)

    async def wait_round(self) -> None:
        """Return after the next round ends (tests and the demo watch repairs with it)."""
        await self._round_done.wait()

    async def check_round(self, at: float | None = None) -> RoundReport:
        """Check every object this node stewards now; repair what needs it.  ``at``: the
        round's instant on the clock (default: now), which dates the holders' answers."""
        at = trio.current_time() if at is None else at
        keys = await self._stewarded_keys()
        self.node.metrics.stewarded_objects.set(len(keys))
        report = await self.check_objects(
            [self._manifests[key] for key in keys], renew_records=True, at=at
        )
        self.auditor.watch(self._audit_targets(report), trio.current_time())
        if self.renewer is not None:  # leases of the objects still referenced
            await self.renewer.renew(report.objects)
        self.rounds += 1
        self.node.metrics.record_steward_round()
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
        audit: bool = False,
        at: float | None = None,
    ) -> RoundReport:
        """Check the holders of ``objects`` (batched per holder) and, with
        ``repair``, rebuild every chunk below its threshold.  ``grace_period`` overrides the
        rules' (``p2pstore check --repair`` passes 0: the operator decided); ``audit``
        challenges every holder that signed for a fragment once, now, and counts the fragment
        lost if it fails.  ``at``: the round's instant (default: now; see :class:`Census`).
        Raises nothing for a peer's failure: those are in the report's ``failures``."""
        at = trio.current_time() if at is None else at
        report = RoundReport()
        for known in objects:
            watched = await self._watch(known, grace_period, report)
            if watched is not None:
                report.objects.append(watched)
        census = Census(
            report.objects, self.detector, self.leaving_peers, at, self.clock.judged_at(at)
        )
        await self._query_holders(census, report)
        wall, trust = self.dht.wall_clock(), self.dht.trust()
        census.count(wall, trust, self.evidence)
        if audit:
            planner = AuditPlanner(self.settings.audits, self.rng, audit_reply_error)
            report.audits = await self.auditor.spot(self._audit_targets(report), planner)
            census.count(self.dht.wall_clock(), trust, self.evidence)
        due = census.assess()
        if repair and due:
            at_once = trio.CapacityLimiter(self.settings.repairs_at_once)
            chunks = trio.CapacityLimiter(self.settings.chunk_repairs_at_once)

            async def repair_one(watched: Watched) -> None:
                async with at_once:
                    done = await self.repairer.repair_object(watched, chunks, report.failures)
                report.repairs.extend(done)
                if done:  # the repairer published the placement: not again this round
                    now = self.dht.wall_clock()
                    key = manifest_key(watched.object_id)
                    self._records.sent(key, self._named(watched, now)[1], now)

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
        """The core's election: ping the closer live contacts; steward if none answers."""
        limit = self.settings.max_closer
        known = self.dht.table.closest(key, limit + 1, include_stale=False)
        asked = contenders(self.dht.node_id, key, [c.id for c in known], limit)
        if asked is None:
            return False
        by_id: dict[bytes, Contact] = {c.id: c for c in known}
        for node_id in asked:
            if node_id not in alive:
                alive[node_id] = await self._answers(by_id[node_id])
        return elected(asked, alive.__getitem__)

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

    def _audit_targets(self, report: RoundReport) -> list[AuditTarget]:
        """Every fragment a holder signed for this round, on the holders the failure detector
        thinks alive and that are not leaving (not this node: it proves nothing to itself)."""
        targets = []
        for watched in report.objects:
            for index, entry in enumerate(watched.manifest.chunks):
                for share in range(watched.manifest.n):
                    position = watched.holdings.position(index, share)
                    for holder in watched.placement.holders_of(index, share):
                        node_id = holder.node_id
                        if (
                            node_id == self.dht.node_id
                            or node_id in self.leaving_peers
                            or watched.answers.get((node_id, position)) is not Said.STATED
                            or self.detector.health(node_id).silent_since is not None
                        ):
                            continue
                        fragment = WatchedFragment(
                            node_id, entry.fragment_ids[share], entry.block_size
                        )
                        targets.append(AuditTarget(holder, fragment, watched.object_id, position))
        return targets

    def _unwelcome(self) -> set[bytes]:
        """Peers a repair must not place on: leaving ones, and this node while it leaves."""
        return self.leaving_peers | ({self.dht.node_id} if self.leaving else set())

    def _stop_renewing(self, key: bytes) -> None:
        for kind in (RecordKind.MANIFEST, RecordKind.PLACEMENT, RecordKind.REFERENCES):
            self.dht.published.remove(kind, key)
        self._holdings.pop(key, None)
        self._records.forget(key)
        self.evidence.forget(key)

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
        now = self.dht.wall_clock()
        records = self.dht.store.get(int(RecordKind.PLACEMENT), key, now)
        own = self.dht.published.get(RecordKind.PLACEMENT, key)
        if own is not None:
            records = [own, *records]
        holdings = self._holdings.get(key)
        if holdings is None:
            holdings = Holdings(object_id, [c.fragment_ids for c in manifest.chunks])
            if not records:
                records = await self.dht.find_records(RecordKind.PLACEMENT, key)
        await read_holdings(self.dht, holdings, records)
        holdings.prune(now)
        if not len(holdings):
            report.failures.append(
                f"object {object_id.hex()[:16]} has no placement record with a valid receipt"
            )
            return None
        self._holdings[key] = holdings
        placement = holdings.view(now, self.dht.trust(), exclude=self.evidence.exclusion(object_id))
        return Watched(
            object_id,
            rule,
            placement,
            holdings,
            manifest=manifest,
            manifest_bytes=known.manifest_bytes,
        )

    async def _query_holders(self, census: Census[Watched], report: RoundReport) -> None:
        """Send the census's questions, ``queries_per_second`` and ``query_concurrency``
        at most, and fold each answer in."""
        slots_free = trio.Semaphore(self.settings.query_concurrency)
        gap = 1.0 / self.settings.queries_per_second
        async with trio.open_nursery() as nursery:
            for question in census.questions(MAX_IDS_PER_QUERY):
                await slots_free.acquire()
                report.queries += 1
                nursery.start_soon(self._ask, census, question, report, slots_free)
                await trio.sleep(gap)

    async def _ask(
        self,
        census: Census[Watched],
        question: Question,
        report: RoundReport,
        slots_free: trio.Semaphore,
    ) -> None:
        holder = question.holder
        try:
            if holder.node_id == self.dht.node_id and self.leaving:
                census.answered(question, Said.LEAVING)
                return
            positions = question.positions(census.objects)
            asks = [Ask(census.objects[n].holdings, p) for n, p in positions.items()]
            answer = await self.client.ask(holder, asks)
            if answer.said is Said.FAILED:
                self._warn_failed(holder, answer.problem)
                report.failures.append(
                    f"holder {short_id(holder.node_id)} ({holder.datacenter}) did not sign "
                    f"for its fragments, counted missing: {answer.problem}"
                )
            census.answered(question, answer.said)
        finally:
            slots_free.release()

    @staticmethod
    def _warn_failed(holder: Candidate, problem: str) -> None:
        log.warning(
            "holder %s did not sign for its fragments, counting them missing this round: %s",
            short_id(holder.node_id),
            problem,
            extra={"event": "holder_unsigned", "peer": holder.node_id.hex()},
        )

    # -- records ----------------------------------------------------------------------------

    def _named(self, watched: Watched, now: float) -> tuple[Exclusion, frozenset[object]]:
        """What our placement record leaves out, and the holders it names."""
        exclude = watched.unrelayed(self.evidence)
        return exclude, watched.named(now, self.dht.trust(), exclude)

    async def _renew(self, watched: Watched) -> None:
        """Publish our manifest record once (the DHT renews it), and our placement record
        whenever the holders it names changed or ``placement_refresh`` has passed."""
        key = manifest_key(watched.object_id)
        now = self.dht.wall_clock()
        published = self.dht.published
        try:
            exclude, named = self._named(watched, now)
            due = self._records.due(
                key,
                named,
                now,
                manifest_kept=(int(RecordKind.MANIFEST), key) in published,
                placement_kept=(int(RecordKind.PLACEMENT), key) in published,
            )
            if RecordKind.MANIFEST in due:
                await self.dht.publish_value(RecordKind.MANIFEST, key, watched.manifest_bytes)
            if RecordKind.PLACEMENT in due:
                await publish_holdings(self.dht, watched.holdings, exclude=exclude)
                self._records.sent(key, named, now)
        except P2PStoreError as exc:
            log.warning("could not publish records of %s: %s", short_id(key), exc)
