"""The churn part of a scenario: sessions, departures, correlated outages, partitions, traces.

Why each: transient sessions (a peer reboots, a link flaps) are what the grace period exists
for; permanent departures (a datacenter leaves the mesh, a disk set dies) are what repair
exists for; correlated outages of a datacenter or a region are what placement over failure
domains exists for; partitions make a steward see live peers as silent; a recorded availability
trace lets a researcher replay a real system instead of a model.  This module only reads and
checks them; :mod:`p2pstore.sim.churn` turns them into events.

An availability trace is a CSV file with a header ``peer,up,down``: one row per interval during
which a peer (an index into the scenario's peers) is up, in seconds from the start of the run
(or durations such as ``"6h"``).  Peers named in the trace follow it and are down outside their
intervals; the other peers follow the session model.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from p2pstore.errors import ConfigError
from p2pstore.sim.distributions import Distribution, parse_distribution
from p2pstore.sim.units import HOUR, parse_duration

if TYPE_CHECKING:
    from p2pstore.sim.scenario import DatacenterSpec

SCOPES: Final = ("datacenter", "region", "peers")
ONE_HOUR: Final = Distribution("fixed", HOUR)
HOURLY_DOWNTIME: Final = Distribution("exponential", HOUR)

TraceRow = tuple[int, float, float]
"""(peer index, up at, down at) in seconds from the start of the run."""


@dataclass(frozen=True, slots=True)
class OutageSpec:
    """Correlated outages.  ``scope`` datacenter or region with ``targets`` (names; empty with
    ``every``: each datacenter or region of the mesh on its own), or ``peers`` (indexes).
    Scheduled once at ``at``, or recurring with gaps drawn from ``every`` (from ``at`` or 0).
    ``permanent``: the peers leave for good instead of coming back after ``duration``."""

    scope: str
    targets: tuple[str, ...] = ()
    peers: tuple[int, ...] = ()
    at: float | None = None
    every: Distribution | None = None
    duration: Distribution = ONE_HOUR
    permanent: bool = False

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"churn.outages: scope must be one of {', '.join(SCOPES)}")
        if self.at is None and self.every is None:
            raise ConfigError("churn.outages: give at (a scheduled outage) or every (recurring)")
        if self.every is None and not (self.targets or self.peers):
            raise ConfigError("churn.outages: a scheduled outage names its targets or peers")
        if (self.scope == "peers") != bool(self.peers) or (self.scope == "peers" and self.targets):
            raise ConfigError('churn.outages: use peers = [...] exactly with scope = "peers"')

    def check_targets(self, datacenters: Sequence[DatacenterSpec], peer_count: int) -> None:
        """Raise :class:`ConfigError` if a target is not in the mesh."""
        known = {dc.name for dc in datacenters} if self.scope == "datacenter" else set()
        if self.scope == "region":
            known = {dc.region for dc in datacenters}
        missing = [name for name in self.targets if name not in known]
        if missing:
            raise ConfigError(f"churn.outages: no {self.scope} named {', '.join(missing)}")
        if any(not 0 <= peer < peer_count for peer in self.peers):
            raise ConfigError(f"churn.outages: peers are indexes 0..{peer_count - 1}")


@dataclass(frozen=True, slots=True)
class PartitionSpec:
    """From ``at`` for ``duration`` seconds, peers in different ``groups`` (lists of
    datacenter or region names; peers in none form one more group) cannot reach each other."""

    groups: tuple[tuple[str, ...], ...]
    at: float
    duration: float

    def __post_init__(self) -> None:
        names = [name for group in self.groups for name in group]
        if not self.groups or not all(self.groups) or len(set(names)) != len(names):
            raise ConfigError("churn.partitions: groups are non-empty lists of distinct names")
        if self.duration <= 0:
            raise ConfigError("churn.partitions: duration must be positive")

    def check_names(self, datacenters: Sequence[DatacenterSpec]) -> None:
        """Raise :class:`ConfigError` if a name is neither a datacenter nor a region."""
        known = {dc.name for dc in datacenters} | {dc.region for dc in datacenters}
        missing = [name for group in self.groups for name in group if name not in known]
        if missing:
            raise ConfigError(f"churn.partitions: no datacenter or region named {missing}")


@dataclass(frozen=True, slots=True)
class ChurnSpec:
    """Sessions (None: peers stay up), downtimes between sessions, lifetimes before a
    permanent departure (None: nobody leaves), replacement of departed peers by empty ones in
    the same datacenter, the availability trace, outages and partitions."""

    sessions: Distribution | None = None
    downtimes: Distribution = HOURLY_DOWNTIME
    lifetime: Distribution | None = None
    replace_departed: bool = True
    replace_after: float = 0.0
    trace: tuple[TraceRow, ...] = ()
    outages: tuple[OutageSpec, ...] = ()
    partitions: tuple[PartitionSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.replace_after < 0:
            raise ConfigError("churn.replace_after cannot be negative")
        ordered = sorted(self.partitions, key=lambda p: p.at)
        for first, second in pairwise(ordered):
            if second.at < first.at + first.duration:
                raise ConfigError("churn.partitions: partitions may not overlap in time")


def parse_churn(raw: Mapping[str, Any], base_dir: Path | None) -> ChurnSpec:
    """A :class:`ChurnSpec` from the ``[churn]`` table.  Raises :class:`ConfigError`."""
    table = dict(raw)

    def take(name: str, default: Any = None) -> Any:
        return table.pop(name, default)

    def dist(name: str, value: Any) -> Distribution:
        return parse_distribution(value, f"churn.{name}", parse_duration)

    sessions = take("sessions")
    lifetime = take("lifetime")
    trace_path = take("trace")
    replace_departed = take("replace_departed", True)
    if not isinstance(replace_departed, bool):
        raise ConfigError("churn.replace_departed must be true or false")
    spec = ChurnSpec(
        sessions=None if sessions is None else dist("sessions", sessions),
        downtimes=dist("downtimes", take("downtimes", {"dist": "exponential", "mean": HOUR})),
        lifetime=None if lifetime is None else dist("lifetime", lifetime),
        replace_departed=replace_departed,
        replace_after=parse_duration(take("replace_after", 0.0), "churn.replace_after"),
        trace=() if trace_path is None else load_trace(_resolve(trace_path, base_dir)),
        outages=tuple(_outage(entry, i) for i, entry in enumerate(_list(take("outages", [])))),
        partitions=tuple(
            _partition(entry, i) for i, entry in enumerate(_list(take("partitions", [])))
        ),
    )
    if table:
        raise ConfigError(f"unknown key(s) in [churn]: {', '.join(sorted(table))}")
    return spec


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError("churn.outages and churn.partitions are arrays of tables ([[...]])")
    return value


def _resolve(path: Any, base_dir: Path | None) -> Path:
    if not isinstance(path, str):
        raise ConfigError("churn.trace must be a file path")
    resolved = Path(path)
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    return resolved


def _outage(raw: Any, index: int) -> OutageSpec:
    where = f"churn.outages[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    table = dict(raw)
    scope = table.pop("scope", "datacenter")
    targets = table.pop("targets", [])
    peers = table.pop("peers", [])
    at = table.pop("at", None)
    every = table.pop("every", None)
    permanent = table.pop("permanent", False)
    duration = table.pop("duration", HOUR)
    if table:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(table))}")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ConfigError(f"{where}.targets must be a list of names")
    if not isinstance(peers, list) or not all(isinstance(p, int) for p in peers):
        raise ConfigError(f"{where}.peers must be a list of peer indexes")
    if not isinstance(permanent, bool) or not isinstance(scope, str):
        raise ConfigError(f"{where}: scope is a string and permanent true or false")
    return OutageSpec(
        scope=scope,
        targets=tuple(targets),
        peers=tuple(peers),
        at=None if at is None else parse_duration(at, f"{where}.at"),
        every=None
        if every is None
        else parse_distribution(every, f"{where}.every", parse_duration),
        duration=parse_distribution(duration, f"{where}.duration", parse_duration),
        permanent=permanent,
    )


def _partition(raw: Any, index: int) -> PartitionSpec:
    where = f"churn.partitions[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    table = dict(raw)
    groups = table.pop("groups", None)
    at = parse_duration(table.pop("at", None), f"{where}.at")
    duration = parse_duration(table.pop("duration", None), f"{where}.duration")
    if table:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(table))}")
    if not isinstance(groups, list) or not all(
        isinstance(g, list) and all(isinstance(n, str) for n in g) for g in groups
    ):
        raise ConfigError(f"{where}.groups must be a list of lists of names")
    return PartitionSpec(tuple(tuple(g) for g in groups), at, duration)


def load_trace(path: Path) -> tuple[TraceRow, ...]:
    """Read an availability trace (``peer,up,down`` rows, see the module docstring), sorted
    by peer then time.  Raises :class:`ConfigError` naming the file and row."""
    rows: list[TraceRow] = []
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames is None or not {"peer", "up", "down"} <= set(reader.fieldnames):
                raise ConfigError(f"trace {path}: the header must name peer, up and down")
            for line, row in enumerate(reader, start=2):
                where = f"trace {path} line {line}"
                try:
                    peer = int(row["peer"])
                except ValueError:
                    raise ConfigError(
                        f"{where}: peer must be an index, got {row['peer']!r}"
                    ) from None
                up = parse_duration(_number_or_text(row["up"]), f"{where} up")
                down = parse_duration(_number_or_text(row["down"]), f"{where} down")
                if peer < 0 or down <= up:
                    raise ConfigError(f"{where}: need peer >= 0 and down > up")
                rows.append((peer, up, down))
    except OSError as error:
        raise ConfigError(f"cannot read trace {path}: {error.strerror}") from error
    rows.sort()
    for (peer_a, _, down_a), (peer_b, up_b, _) in pairwise(rows):
        if peer_a == peer_b and up_b < down_a:
            raise ConfigError(f"trace {path}: peer {peer_a} has overlapping intervals")
    return tuple(rows)


def _number_or_text(text: str | None) -> float | str:
    value = (text or "").strip()
    try:
        return float(value)
    except ValueError:
        return value
