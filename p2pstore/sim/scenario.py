"""Scenarios: everything one simulator run depends on, as frozen values read from TOML.

Why one value for all of it: a run must be reproducible from its scenario and seed alone, so
nothing the engine reads may come from anywhere else (no defaults hidden in the engine, no
environment).  A scenario is plain data: a sweep point, a cluster job or a test builds one from
a dict, and :func:`scenario_from_dict` refuses unknown keys, so a typo ("grace_perod") fails
loudly instead of silently running the default.  The file format is documented, with examples,
in ``simulations/README.md``; :mod:`p2pstore.sim.scenario_file` reads it (the churn section
with :mod:`p2pstore.sim.churn_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from p2pstore.core.protocol import CHECK_INTERVAL
from p2pstore.core.rules import CodingRule
from p2pstore.errors import ConfigError
from p2pstore.sim.churn_spec import ChurnSpec
from p2pstore.sim.distributions import Distribution
from p2pstore.sim.units import HOUR

REPAIR_MODES: Final = ("lazy", "eager", "none")
DETECTIONS: Final = ("periodic", "poisson", "instant")
CANDIDATE_SOURCES: Final = ("routing_table", "sample", "all")
SIXTEEN_MIB: Final = Distribution("fixed", 16 * 2**20)
BOOTSTRAPS: Final = ("join", "converged")


@dataclass(frozen=True, slots=True)
class DatacenterSpec:
    """A datacenter: its name, its region, how many peers it runs."""

    name: str
    region: str
    peers: int

    def __post_init__(self) -> None:
        if not self.name or not self.region or self.peers < 0:
            raise ConfigError(f"datacenter {self.name!r}: needs a name, a region and peers >= 0")


@dataclass(frozen=True, slots=True)
class MeshSpec:
    """Where the peers are; ``capacity`` is each peer's disk in bytes (None: unlimited, and
    placement weighs every peer alike, as when free space is not announced)."""

    datacenters: tuple[DatacenterSpec, ...]
    capacity: int | None = None

    def __post_init__(self) -> None:
        names = [dc.name for dc in self.datacenters]
        if len(set(names)) != len(names):
            raise ConfigError("mesh: datacenter names must be distinct")
        if self.peers < 1:
            raise ConfigError("mesh: a scenario needs at least one peer")

    @property
    def peers(self) -> int:
        return sum(dc.peers for dc in self.datacenters)

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(dc.region for dc in self.datacenters))


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """One-way latencies (seconds) inside a datacenter, inside a region and across regions;
    each peer's uplink and downlink, and a cap on one cross-region transfer (bytes/s)."""

    latency_datacenter: float = 0.0002
    latency_region: float = 0.002
    latency_wan: float = 0.015
    uplink: float = 125e6
    downlink: float = 125e6
    wan: float = 125e6


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Objects stored at time 0, their sizes, and the put and get rates over the mesh."""

    objects: int = 0
    object_size: Distribution = SIXTEEN_MIB
    chunk_size: int = 4 * 2**20
    puts_per_hour: float = 0.0
    gets_per_hour: float = 0.0

    def __post_init__(self) -> None:
        if self.objects < 0 or self.chunk_size < 1:
            raise ConfigError("workload: need objects >= 0 and chunk_size >= 1 byte")
        if self.puts_per_hour < 0 or self.gets_per_hour < 0:
            raise ConfigError("workload: put and get rates cannot be negative")


@dataclass(frozen=True, slots=True)
class RepairSpec:
    """How stewards repair.  ``mode``: lazy (the rule's threshold), eager (threshold n) or
    none.  ``detection``: when a steward notices a silent holder -- at the stewards' periodic
    rounds (every ``check_interval``, of one random phase; chunks are then assessed at rounds
    too, as the node's steward does), at Poisson checks (exponential delay of mean
    ``check_interval``) or at once.  ``retry_after``: wait before trying a repair again that
    could not run (None: one ``check_interval``, as the node's steward retries at its next
    round).  ``rebuild_rate``: bytes/s of zfec decoding.  ``time``: if given, each chunk
    repair takes a duration drawn from it (seconds) instead of what transfers and decoding
    cost, as in the Markov and Monte Carlo models (its bytes are still counted)."""

    mode: str = "lazy"
    detection: str = "periodic"
    check_interval: float = CHECK_INTERVAL
    retry_after: float | None = None
    rebuild_rate: float = 200e6
    time: Distribution | None = None

    def __post_init__(self) -> None:
        if self.mode not in REPAIR_MODES:
            raise ConfigError(f"repair.mode must be one of {', '.join(REPAIR_MODES)}")
        if self.detection not in DETECTIONS:
            raise ConfigError(f"repair.detection must be one of {', '.join(DETECTIONS)}")
        if self.check_interval <= 0 or self.retry_delay <= 0 or self.rebuild_rate <= 0:
            raise ConfigError("repair: check_interval, retry_after, rebuild_rate must be > 0")

    @property
    def retry_delay(self) -> float:
        """Seconds before a repair that could not start is tried again."""
        return self.check_interval if self.retry_after is None else self.retry_after


@dataclass(frozen=True, slots=True)
class PlacementSpec:
    """Whom a putter or steward may place on: its routing table's contacts (what the real
    client does), a random ``sample`` of live peers, or ``all`` live peers (global knowledge)."""

    candidates: str = "routing_table"
    sample: int = 64

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_SOURCES:
            raise ConfigError(f"placement.candidates must be one of {', '.join(CANDIDATE_SOURCES)}")
        if self.sample < 1:
            raise ConfigError("placement.sample must be at least 1")


@dataclass(frozen=True, slots=True)
class DhtSpec:
    """The Kademlia model: ``k``, ``alpha``; how routing tables start (``join``: every peer
    joins through a live one, as ``Dht.join``; ``converged``: each table filled as joins would
    leave it, much faster); the fraction of gets and puts whose lookup runs for real; whether a
    returning peer runs the self-lookup of a join; the probe and refresh period."""

    enabled: bool = True
    k: int = 20
    alpha: int = 3
    bootstrap: str = "join"
    lookup_sample: float = 0.05
    rejoin_lookup: bool = True
    refresh_interval: float = HOUR

    def __post_init__(self) -> None:
        if self.k < 1 or self.alpha < 1 or self.refresh_interval <= 0:
            raise ConfigError("dht: need k >= 1, alpha >= 1, refresh_interval > 0")
        if self.bootstrap not in BOOTSTRAPS:
            raise ConfigError(f"dht.bootstrap must be one of {', '.join(BOOTSTRAPS)}")
        if not 0 <= self.lookup_sample <= 1:
            raise ConfigError("dht.lookup_sample is a fraction in [0, 1]")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One simulator run.  ``rule`` is the coding rule as declared (a scenario file gives its
    threshold as ``repair_at``: repair when live falls to m, ``repair_threshold = m + 1``); its
    threshold defines "at risk" in the outputs, and :func:`applied_rule` is what stewards
    apply (eager repair raises the threshold to n).  Raises :class:`ConfigError` when
    inconsistent."""

    name: str
    seed: int
    duration: float
    mesh: MeshSpec
    rule: CodingRule
    sample_every: float = HOUR
    network: NetworkSpec = field(default_factory=NetworkSpec)
    churn: ChurnSpec = field(default_factory=ChurnSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    repair: RepairSpec = field(default_factory=RepairSpec)
    placement: PlacementSpec = field(default_factory=PlacementSpec)
    dht: DhtSpec = field(default_factory=DhtSpec)
    stop_when_all_lost: bool = False
    warmup: float = 0.0
    """Seconds at the start left out of every summary figure (the steady-state window is
    ``[warmup, duration]``); the time series still covers the whole run."""

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.sample_every <= 0:
            raise ConfigError("duration and sample_every must be positive")
        if not 0 <= self.warmup < self.duration:
            raise ConfigError("warmup must be at least 0 and shorter than the duration")
        if self.placement.candidates == "routing_table" and not self.dht.enabled:
            raise ConfigError(
                'placement.candidates = "routing_table" needs [dht] enabled = true; '
                'use "sample" or "all" without a DHT'
            )
        allowed = [dc for dc in self.mesh.datacenters if self.rule.allows_region(dc.region)]
        slots = sum(min(dc.peers, self.rule.max_per_datacenter) for dc in allowed)
        if slots < self.rule.n:
            raise ConfigError(
                f"rule {self.rule.name} needs {self.rule.datacenters_needed} datacenters in "
                f"{self.rule.describe_regions()}; the mesh has {len(allowed)} there"
            )
        peer_count = self.mesh.peers
        for outage in self.churn.outages:
            outage.check_targets(self.mesh.datacenters, peer_count)
        for partition in self.churn.partitions:
            partition.check_names(self.mesh.datacenters)
        if self.churn.trace and max(peer for peer, _, _ in self.churn.trace) >= peer_count:
            raise ConfigError(f"churn.trace names a peer beyond the mesh's {peer_count} peers")

    @property
    def peers(self) -> int:
        return self.mesh.peers


def applied_rule(scenario: Scenario) -> CodingRule:
    """The rule as stewards apply it: eager repair is the declared rule with threshold n."""
    rule = scenario.rule
    if scenario.repair.mode == "eager":
        return replace(rule, repair_threshold=rule.n)
    return rule
