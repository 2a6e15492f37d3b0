"""What a run measures: counters, the time series, the summary, and the outcome to compare
with the real nodes.

Why counters are cumulative and rows take differences: a row is written every
``sample_every`` of simulated time, and a per-interval figure (repair bytes in the last hour,
gets that succeeded) is the difference of two cumulative counters, so nothing is counted twice
or lost between rows, and the last row's cumulative values are the summary's totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from p2pstore.errors import LocalProtocolError

COLUMNS: Final = (
    "time_s",
    "time_days",
    "peers",
    "live_peers",
    "objects",
    "objects_at_risk",
    "objects_unavailable",
    "objects_lost",
    "repairs_running",
    "fragments_rebuilt",
    "repair_bytes",
    "repair_bytes_step",
    "stored_bytes",
    "unique_bytes",
    "maintenance_messages_step",
    "gets_step",
    "get_availability_step",
    "lookups_step",
    "lookup_success_step",
    "lookup_hops_step",
)
"""Columns of ``timeseries.csv``; ``_step`` columns cover the interval since the last row."""

MAINTENANCE_KINDS: Final = (
    "dht_probes",
    "dht_refresh",
    "announcements",
    "record_republish",
    "holder_checks",
    "joins",
    "repair",
)


@dataclass(slots=True)
class Counters:
    """Cumulative counts of a run (the time series takes their differences)."""

    repair_jobs: int = 0
    repair_blocked: int = 0
    """Repairs that could not start: fewer than k sources reachable, or no room in the rule."""
    failed_stores: int = 0
    """Rebuilt fragments whose chosen holder was down or unreachable (placed again)."""
    fragments_rebuilt: int = 0
    repair_bytes: int = 0
    """Bytes repairs moved across the network (fetches from, stores to, other peers)."""
    repair_bytes_local: int = 0
    """Bytes repairs read from or wrote to the steward's own store (no network)."""
    placement_violations: int = 0
    """Repairs after which a chunk's holders broke its rule (must stay 0)."""
    repair_times: list[float] = field(default_factory=list)
    """Seconds from the start of each repair job that landed to its landing."""
    first_repair_at: float | None = None
    last_repair_at: float | None = None
    """When the first and the last repair job started (None before any)."""
    puts: int = 0
    puts_failed: int = 0
    gets: int = 0
    gets_ok: int = 0
    departures: int = 0
    joins: int = 0
    outages: int = 0
    maintenance: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(MAINTENANCE_KINDS, 0.0)
    )
    messages: dict[str, int] = field(default_factory=dict)
    """Requests sent, by wire message type, where the simulator sends discrete ones (a
    repair's fetches and stores to other peers), as the node's ``p2pstore_requests_sent``."""
    records: dict[str, int] = field(default_factory=dict)
    """``Store`` requests of records sent, by record kind (``MANIFEST``, ``PLACEMENT``): a
    client's at a put, a steward's when :class:`~p2pstore.core.steward_records.StewardRecords`
    says, each to the live peers among the k closest to the key."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """What had happened when the warm-up ended: summary figures count from here."""

    counters: Counters
    lost_objects: int
    lookups: tuple[int, int, int, int]
    """Sampled lookups, successes, exact ones, and how many hop counts were recorded."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The figures a conformance scenario compares with real nodes on the in-memory network:
    objects stored and lost, fragments rebuilt, chunks not back at n existing fragments, and
    chunks whose holders break the rule (``placement_violations`` counts it after every repair,
    ``chunks_outside_rule`` at the end), repair jobs (one per chunk repair) and when the first
    and the last one started."""

    objects_stored: int
    objects_lost: int
    fragments_rebuilt: int
    chunks: int
    chunks_below_n: int
    chunks_outside_rule: int
    placement_violations: int
    repair_blocked: int
    repair_jobs: int = 0
    first_repair_at: float | None = None
    last_repair_at: float | None = None

    def __post_init__(self) -> None:
        if (
            min(
                self.objects_stored,
                self.objects_lost,
                self.fragments_rebuilt,
                self.chunks_below_n,
                self.chunks_outside_rule,
            )
            < 0
            or self.objects_lost > self.objects_stored
        ):
            raise LocalProtocolError(f"inconsistent outcome {self}")


@dataclass(slots=True)
class Snapshot:
    """Cumulative values at the previous row, to difference against."""

    repair_bytes: int = 0
    maintenance: float = 0.0
    gets: int = 0
    gets_ok: int = 0
    lookups: int = 0
    lookup_success: int = 0
    hops: int = 0


def step_ratio(numerator: int, denominator: int) -> float | str:
    """A ratio for a row, or an empty cell when nothing happened in the interval."""
    return numerator / denominator if denominator else ""


def p99(values: list[int]) -> int | None:
    """Nearest-rank 99th percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
