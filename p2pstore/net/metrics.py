"""What one node counts for Prometheus, on a registry of its own.

Strategy: no global state.  Each :class:`NodeMetrics` owns a ``CollectorRegistry`` (never
prometheus_client's default one), so a hundred in-memory nodes in one test process, or the
simulator, keep separate books and need nothing set up.  Two kinds of figures:

* **events** (requests, bytes, scrub batches) are counted where they happen, by the node and its
  services calling the ``record_*``/``observe_*`` methods below;
* **levels** (peers, routing-table size, fragments stored, quota, records held) are read when
  Prometheus scrapes, from callables the components register with the ``watch_*`` methods: the
  numbers are never stale and nothing has to remember to update them.

Label values are bounded sets: message type names, ``ok`` or an error code (a P2PStoreError class
name or an ErrorReply code), and never an address; a peer id only in the audit failures of the
few holders that failed most (:data:`AUDIT_HOLDER_SERIES`), which an operator needs by name.

Adding a family: create it in ``__init__`` on ``self.registry``, give it a
``record_*`` method, call that from the service, and list it in bootstrap/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from p2pstore.core.records import RejectReason
from p2pstore.errors import P2PStoreError
from p2pstore.identity import PeerIdentity
from p2pstore.net.link import FrameLink
from p2pstore.store import ScrubReport, StoreUsage

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a ping on a LAN takes about a millisecond, a 16 MiB fragment on a slow disk seconds."""

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""What :meth:`NodeMetrics.exposition` returns: the text format every Prometheus version reads."""

OK = "ok"
OTHER = "other"
PROTOCOL_CODES = frozenset({"busy", "unsupported", "bad-reply"})
"""Error codes that are not exception names: a busy session, an unknown request, a bad answer."""

REFUSAL_REASONS = frozenset({
    "session_busy",  # a session had its most requests in flight: answered busy
    "not_reading",  # a session's busy replies piled up unread: the session was ended
    "node_busy",  # the node had its most requests in flight, or the peer more than its share
    "peer_busy",  # one identity had its most requests in flight across its sessions
    "lookup_rate", "store_rate", "fragment_in_rate", "fragment_out_rate",  # token buckets
    "sessions_per_client", "sessions_per_address",  # a session over its cap was closed
    "handshakes_per_address",  # a connection over its address's handshake cap was closed
    "handshake_rate",  # an address started too many failed handshakes a second
    "handshake_slots",  # members held every handshake slot: a stranger's connection closed
    "handshake_reclaimed",  # a stranger's handshake closed to free its slot for a newcomer
    "receive_budget",  # a frame waited too long for the node's receive buffers
    "partial_frame_timeout",  # a frame took too long to arrive
    "idle_timeout",  # a session stayed silent, keepalive pings unanswered
})  # fmt: skip
"""Why a peer was refused (``p2pstore_refusals_total{reason}``): a fixed set, so a flood can
never grow the metrics."""


AUDIT_OUTCOMES = ("passed", "wrong-proof", "missing", "refused", "late")
"""``p2pstore_audits_total{outcome}``: the verdicts of :class:`p2pstore.core.audit.AuditVerdict`."""
AUDIT_HOLDER_SERIES = 32
"""Holders in ``p2pstore_holder_audit_failures_total``: a bounded set, the ones that failed
most (holder ids are certified members', and only these few are exported)."""


def bounded_code(code: str) -> str:
    """``code`` if p2pstore itself could have sent it, else ``other``: a peer chooses the codes
    in its replies, and an unbounded label would let it flood the metrics."""
    return code if code in PROTOCOL_CODES or code in _error_names() else OTHER


def bounded_reason(reason: str) -> str:
    """A record refusal's reason if it is one p2pstore gives, else ``other``."""
    return reason if reason in _REJECT_REASONS else OTHER


_REJECT_REASONS = frozenset(reason.value for reason in RejectReason)


def _error_names() -> frozenset[str]:
    names = set()
    pending: list[type[BaseException]] = [P2PStoreError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return frozenset(names)


class NodeMetrics:
    """The metrics of one node.  ``registry`` defaults to a fresh private one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "p2pstore_requests_handled",
            "Requests from peers answered, by message type and "
            "outcome (ok, or the error code sent back).",
            ("type", "outcome"),
            registry=r,
        )
        self.latency = Histogram(
            "p2pstore_request_duration_seconds",
            "Time to answer a peer's request, by type.",
            ("type",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_sent = Counter(
            "p2pstore_requests_sent",
            "Requests this node sent to peers, by message type and "
            "outcome (ok, timeout, unreachable, or the peer's error code).",
            ("type", "outcome"),
            registry=r,
        )
        self.bytes_received = Counter(
            "p2pstore_received_bytes", "Bytes of frames received from peers.", registry=r
        )
        self.bytes_sent = Counter(
            "p2pstore_sent_bytes", "Bytes of frames sent to peers.", registry=r
        )
        self.fragment_bytes_written = Counter(
            "p2pstore_fragment_written_bytes",
            "Bytes of fragments peers stored here (re-sent ones included).",
            registry=r,
        )
        self.fragment_bytes_served = Counter(
            "p2pstore_fragment_served_bytes", "Bytes of fragments served to peers.", registry=r
        )
        self.scrub_checked = Counter(
            "p2pstore_scrub_checked_fragments", "Fragments re-verified by scrubbing.", registry=r
        )
        self.scrub_bytes = Counter(
            "p2pstore_scrub_checked_bytes", "Bytes re-verified by scrubbing.", registry=r
        )
        self.scrub_passes = Counter(
            "p2pstore_scrub_passes", "Scrub passes finished over the whole store.", registry=r
        )
        self.scrub_progress = Gauge(
            "p2pstore_scrub_progress",
            "Fraction of the current scrub pass done (0 to 1).",
            registry=r,
        )
        self.steward_rounds = Counter(
            "p2pstore_steward_rounds",
            "Steward rounds finished (one every [repair] check_interval).",
            registry=r,
        )
        self.repairs = Counter(
            "p2pstore_repairs",
            "Chunk repairs by outcome (started, finished, failed).",
            ["outcome"],
            registry=r,
        )
        self.repair_bytes = Counter(
            "p2pstore_repair_bytes",
            "Fragment bytes moved by repair: read from survivors or written to new holders.",
            ["direction"],
            registry=r,
        )
        for outcome in ("started", "finished", "failed"):  # exported at 0 from the start,
            self.repairs.labels(outcome)  # so rate() and alerts see the series before a repair
        for direction in ("read", "written"):
            self.repair_bytes.labels(direction)
        self.stewarded_objects = Gauge(
            "p2pstore_stewarded_objects",
            "Objects this node checked as their steward in its last round.",
            registry=r,
        )
        self.records_refused = Counter(
            "p2pstore_records_refused",
            "DHT records peers asked this node to store and it refused, by reason "
            "(over-quota, uncertified, revoked, full, stale, bad-signature, ...).",
            ("reason",),
            registry=r,
        )
        for reason in ("over-quota", "uncertified", "revoked", "full"):
            self.records_refused.labels(reason)  # the ones alerts watch, at 0 from the start
        self.fragments_refused_quota = Counter(
            "p2pstore_fragments_over_identity_quota",
            "Fragments refused because their uploader holds its per-identity quota here.",
            registry=r,
        )
        self.audits = Counter(
            "p2pstore_audits",
            "Storage audits this node's steward judged, by outcome (passed, wrong-proof, "
            "missing, refused, late).",
            ("outcome",),
            registry=r,
        )
        for outcome in AUDIT_OUTCOMES:
            self.audits.labels(outcome)
        self._live = _LiveLevels()
        r.register(self._live)
        self.refusals = Counter(
            "p2pstore_refusals",
            "Requests, sessions and connections refused under a bound, by reason.",
            ("reason",),
            registry=r,
        )
        for reason in sorted(REFUSAL_REASONS):
            self.refusals.labels(reason)
        self._limits = _LimitLevels()
        r.register(self._limits)

    # -- events -----------------------------------------------------------------------------

    def record_request(self, message_type: str, outcome: str, seconds: float) -> None:
        """A peer's request was answered (``outcome``: ``ok`` or the error code sent back)."""
        self.requests.labels(message_type, outcome).inc()
        self.latency.labels(message_type).observe(max(0.0, seconds))

    def record_sent(self, message_type: str, outcome: str) -> None:
        """A request to a peer finished (``ok``, ``timeout``, ``unreachable`` or its code)."""
        self.requests_sent.labels(message_type, outcome).inc()

    def record_frame_in(self, size: int) -> None:
        self.bytes_received.inc(size)

    def record_frame_out(self, size: int) -> None:
        self.bytes_sent.inc(size)

    def record_fragment_written(self, size: int) -> None:
        self.fragment_bytes_written.inc(size)

    def record_fragment_served(self, size: int) -> None:
        self.fragment_bytes_served.inc(size)

    def record_record_refused(self, reason: str) -> None:
        """A peer's STORE was refused for ``reason`` (a ``RejectReason`` value)."""
        self.records_refused.labels(bounded_reason(reason)).inc()

    def record_fragment_over_quota(self) -> None:
        """A PutFragment was refused: its uploader holds its per-identity quota."""
        self.fragments_refused_quota.inc()

    def record_steward_round(self) -> None:
        """A steward round ended (whatever it found)."""
        self.steward_rounds.inc()

    def record_repair(self, outcome: str) -> None:
        """A chunk repair ``started``, ``finished`` or ``failed``."""
        self.repairs.labels(outcome).inc()

    def record_repair_bytes(self, read: int, written: int) -> None:
        """Fragment bytes a repair fetched from survivors and stored on new holders."""
        self.repair_bytes.labels("read").inc(read)
        self.repair_bytes.labels("written").inc(written)

    def record_audit(self, outcome: str) -> None:
        """A storage audit was judged (``outcome``: one of :data:`AUDIT_OUTCOMES`)."""
        self.audits.labels(outcome if outcome in AUDIT_OUTCOMES else OTHER).inc()

    def record_refusal(self, reason: str) -> None:
        """A peer was refused under a bound; ``reason`` is one of :data:`REFUSAL_REASONS`."""
        self.refusals.labels(reason if reason in REFUSAL_REASONS else OTHER).inc()

    def observe_scrub(self, report: ScrubReport) -> None:
        """One scrub batch ran (the corrupt fragments it found show in the store's count)."""
        self.scrub_checked.inc(report.checked)
        self.scrub_bytes.inc(report.bytes_checked)
        self.scrub_progress.set(report.progress)
        if report.done:
            self.scrub_passes.inc()

    # -- levels, read at scrape time --------------------------------------------------------

    def watch_peers(self, connected: Callable[[], Mapping[str, int]]) -> None:
        """``connected()``: sessions open now, by peer role (``node``, ``client``)."""
        self._live.peers = connected

    def watch_routing_table(self, size: Callable[[], int]) -> None:
        """``size()``: contacts in the DHT routing table (the peers this node knows)."""
        self._live.routing = size

    def watch_records(self, held: Callable[[], tuple[int, int]]) -> None:
        """``held()``: (records, bytes) of DHT records this node holds for others."""
        self._live.records = held

    def watch_record_publishers(self, by_role: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        """``by_role()``: (records, bytes) held for node and for client publishers."""
        self._live.publishers = by_role

    def watch_joined(self, joined: Callable[[], bool]) -> None:
        """``joined()``: whether the node has joined the mesh's DHT."""
        self._live.joined = joined

    def watch_store(self, usage: Callable[[], StoreUsage]) -> None:
        """``usage()``: the fragment store's counts, quota and writability."""
        self._live.usage = usage

    def watch_audits(self, failures: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """``failures()``: (holder id, datacenter, failed audits) of the holders that failed
        one; the :data:`AUDIT_HOLDER_SERIES` with the most are exported."""
        self._live.audits = failures

    def watch_limits(self, levels: Callable[[], Mapping[str, float]]) -> None:
        """``levels()``: how full the node's bounds are now, by gauge name (see
        :class:`_LimitLevels`); several sources add up."""
        self._limits.sources.append(levels)

    # -- reading ----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """All metrics in Prometheus' text format (blocking: the store is asked its usage)."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's value, 0.0 if it has none yet (for tests and ``node status``)."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


class _LiveLevels:
    """A collector that asks the node's parts for their levels on every scrape."""

    def __init__(self) -> None:
        self.peers: Callable[[], Mapping[str, int]] | None = None
        self.routing: Callable[[], int] | None = None
        self.records: Callable[[], tuple[int, int]] | None = None
        self.publishers: Callable[[], Mapping[str, tuple[int, int]]] | None = None
        self.joined: Callable[[], bool] | None = None
        self.usage: Callable[[], StoreUsage] | None = None
        self.audits: Callable[[], Iterable[tuple[str, str, int]]] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.peers is not None:
            family = GaugeMetricFamily(
                "p2pstore_peers_connected", "Open sessions with peers, by role.", labels=["role"]
            )
            for role, count in sorted(self.peers().items()):
                family.add_metric([role], count)
            yield family
        if self.routing is not None:
            yield _gauge("p2pstore_peers_known", "Contacts in the routing table.", self.routing())
        if self.joined is not None:
            yield _gauge("p2pstore_joined", "1 once the node joined the mesh.", self.joined())
        if self.records is not None:
            count, size = self.records()
            yield _gauge("p2pstore_records_held", "DHT records held for the mesh.", count)
            yield _gauge("p2pstore_record_held_bytes", "Bytes of DHT records held.", size)
        if self.publishers is not None:
            yield from _publisher_levels(self.publishers())
        if self.usage is not None:
            yield from _store_levels(self.usage())
        if self.audits is not None:
            yield _holder_audit_failures(self.audits())


class _LimitLevels:
    """How full the node's bounds are, read on every scrape from the parts that hold them."""

    GAUGES: Final = {
        "requests_in_flight": "Peers' requests being handled now.",
        "limited_peers": "Peers (or addresses) refused under a bound in the last minute.",
        "receive_buffer_bytes": "Bytes of large frames being received, from the node's budget.",
        "handshakes_in_progress": "TLS handshakes in progress.",
    }

    def __init__(self) -> None:
        self.sources: list[Callable[[], Mapping[str, float]]] = []

    def collect(self) -> Iterable[Metric]:
        totals: dict[str, float] = {}
        for source in self.sources:
            for name, value in source().items():
                totals[name] = totals.get(name, 0.0) + value
        for name, documentation in self.GAUGES.items():
            if name in totals:
                yield _gauge(f"p2pstore_{name}", documentation, totals[name])


def _holder_audit_failures(failures: Iterable[tuple[str, str, int]]) -> Metric:
    family = CounterMetricFamily(
        "p2pstore_holder_audit_failures",
        f"Audits failed by a holder, as this node's steward judged them (the "
        f"{AUDIT_HOLDER_SERIES} holders with the most; decide on revocation with these).",
        labels=["holder", "datacenter"],
    )
    worst = sorted(failures, key=lambda entry: (-entry[2], entry[0]))[:AUDIT_HOLDER_SERIES]
    for holder, datacenter, failed in worst:
        family.add_metric([holder, datacenter], failed)
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _publisher_levels(by_role: Mapping[str, tuple[int, int]]) -> Iterable[Metric]:
    records = GaugeMetricFamily(
        "p2pstore_records_held_by_publisher_role",
        "DHT records held, by the role of their publisher's certificate (node, client).",
        labels=["role"],
    )
    size = GaugeMetricFamily(
        "p2pstore_record_held_bytes_by_publisher_role",
        "Bytes of DHT records held, by the role of their publisher's certificate.",
        labels=["role"],
    )
    for role, (count, held) in sorted(by_role.items()):
        records.add_metric([role], count)
        size.add_metric([role], held)
    yield records
    yield size


def _store_levels(usage: StoreUsage) -> Iterable[Metric]:
    yield _gauge("p2pstore_fragments_stored", "Fragments in the store.", usage.fragments)
    yield _gauge("p2pstore_fragment_stored_bytes", "Bytes of fragments stored.", usage.bytes_used)
    yield _gauge("p2pstore_store_quota_bytes", "The store's quota in bytes.", usage.quota_bytes)
    yield _gauge(
        "p2pstore_store_quota_used_ratio", "Share of the quota used.", usage.quota_fraction
    )
    yield _gauge(
        "p2pstore_store_writable",
        "1 if the disk accepts writes, 0 if it refused the last.",
        usage.writable,
    )
    yield CounterMetricFamily(
        "p2pstore_corrupt_fragments_found",
        "Fragments found corrupt or missing (by reads or "
        "scrubbing) since the node started; their stewards must repair them.",
        value=usage.corrupt_found,
    )


class MeteredLink:
    """A :class:`~p2pstore.net.link.FrameLink` that counts the bytes of the frames it carries."""

    def __init__(self, link: FrameLink, metrics: NodeMetrics) -> None:
        self._link = link
        self._metrics = metrics

    @property
    def peer(self) -> PeerIdentity:
        return self._link.peer

    @property
    def remote_address(self) -> str:
        return self._link.remote_address

    @property
    def outbound(self) -> bool:
        return self._link.outbound

    async def send_frame(self, payload: bytes) -> None:
        await self._link.send_frame(payload)
        self._metrics.record_frame_out(len(payload))

    async def receive_frame(self) -> bytes | None:
        payload = await self._link.receive_frame()
        if payload is not None:
            self._metrics.record_frame_in(len(payload))
        return payload

    async def aclose(self) -> None:
        await self._link.aclose()
