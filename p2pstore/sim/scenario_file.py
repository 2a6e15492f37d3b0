"""Reading scenario files: TOML (or the same plain data) into a :class:`Scenario`.

Why strict: every key is read through :class:`_Table`, which refuses the keys nobody read, so
"grace_perod = 60" is an error naming ``rule.grace_perod`` instead of a run with the default
grace period.  Quantities go through :mod:`p2pstore.sim.units`, distributions through
:mod:`p2pstore.sim.distributions`; the checks that need the whole scenario run when the
:class:`Scenario` is built.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from p2pstore.core.rules import SHIPPED_RULES, CodingRule, find_rule
from p2pstore.errors import ConfigError
from p2pstore.sim.churn_spec import parse_churn
from p2pstore.sim.distributions import parse_distribution
from p2pstore.sim.scenario import (
    DatacenterSpec,
    DhtSpec,
    MeshSpec,
    NetworkSpec,
    PlacementSpec,
    RepairSpec,
    Scenario,
    WorkloadSpec,
)
from p2pstore.sim.units import HOUR, parse_bandwidth, parse_duration, parse_size


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario TOML file (relative paths inside it are relative to the file).

    Raises :class:`ConfigError` naming the file and what is wrong."""
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read scenario {source}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"scenario {source} is not valid TOML: {error}") from error
    try:
        return scenario_from_dict(data, base_dir=source.parent)
    except ConfigError as error:
        raise ConfigError(f"scenario {source}: {error}") from error


def scenario_from_dict(data: Mapping[str, Any], *, base_dir: Path | None = None) -> Scenario:
    """A :class:`Scenario` from parsed TOML (see ``simulations/README.md`` for the keys).

    Raises :class:`ConfigError` naming the first bad key."""
    top = _Table(data, "")
    name = top.text("name", "scenario")
    seed = top.integer("seed", 1)
    duration = parse_duration(top.required("duration"), "duration")
    sample_every = parse_duration(top.get("sample_every", HOUR), "sample_every")
    stop = top.flag("stop_when_all_lost", False)
    warmup = parse_duration(top.get("warmup", 0), "warmup")
    mesh = _mesh(top.table("mesh", required=True))
    network = _network(top.table("network"))
    churn = parse_churn(top.table("churn").raw, base_dir)
    workload = _workload(top.table("workload"), mesh.peers)
    repair = _repair(top.table("repair"))
    rule = _rule(top.table("rule"))
    dht = _dht(top.table("dht"))
    placement = _placement(top.table("placement"), dht.enabled)
    top.done()
    return Scenario(
        name=name,
        seed=seed,
        duration=duration,
        mesh=mesh,
        rule=rule,
        sample_every=sample_every,
        network=network,
        churn=churn,
        workload=workload,
        repair=repair,
        placement=placement,
        dht=dht,
        stop_when_all_lost=stop,
        warmup=warmup,
    )


class _Table:
    """A TOML table read key by key; :meth:`done` refuses keys nobody read."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where or 'the scenario'} must be a table")
        self.raw = dict(raw)
        self.where = where
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        return self.raw.get(name, default)

    def required(self, name: str) -> Any:
        if name not in self.raw:
            raise ConfigError(f"{self.key(name)} is required")
        return self.get(name)

    def table(self, name: str, *, required: bool = False) -> _Table:
        if required:
            self.required(name)
        return _Table(self.get(name, {}), self.key(name))

    def text(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self.key(name)} must be a string")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key(name)} must be an integer")
        return value

    def number(self, name: str, default: float) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.key(name)} must be a number")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)} must be true or false")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self._read)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(map(self.key, unknown))}")


def _mesh(table: _Table) -> MeshSpec:
    capacity_raw = table.get("capacity")
    capacity = None if capacity_raw is None else parse_size(capacity_raw, table.key("capacity"))
    datacenters = table.get("datacenters", 1)
    if isinstance(datacenters, list):
        table.done()
        specs = []
        for i, entry in enumerate(datacenters):
            dc = _Table(entry, table.key(f"datacenters[{i}]"))
            specs.append(
                DatacenterSpec(dc.text("name", ""), dc.text("region", ""), dc.integer("peers", 0))
            )
            dc.done()
        return MeshSpec(tuple(specs), capacity)
    peers = table.integer("peers", 0)
    regions = table.get("regions", ["SIM"])
    if isinstance(datacenters, bool) or not isinstance(datacenters, int) or datacenters < 1:
        raise ConfigError(f"{table.key('datacenters')}: a positive count or a list of tables")
    if not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions):
        raise ConfigError(f"{table.key('regions')} must be a non-empty list of region names")
    table.done()
    specs = [
        DatacenterSpec(
            f"dc-{i}",
            regions[i % len(regions)],
            peers // datacenters + (1 if i < peers % datacenters else 0),
        )
        for i in range(datacenters)
    ]
    return MeshSpec(tuple(specs), capacity)


def _network(table: _Table) -> NetworkSpec:
    default = NetworkSpec()
    latency = table.table("latency")
    bandwidth = table.table("bandwidth")
    table.done()

    def seconds(t: _Table, name: str, fallback: float) -> float:
        return parse_duration(t.get(name, fallback), t.key(name))

    def rate(t: _Table, name: str, fallback: float) -> float:
        return parse_bandwidth(t.get(name, fallback), t.key(name))

    spec = NetworkSpec(
        latency_datacenter=seconds(latency, "datacenter", default.latency_datacenter),
        latency_region=seconds(latency, "region", default.latency_region),
        latency_wan=seconds(latency, "wan", default.latency_wan),
        uplink=rate(bandwidth, "up", default.uplink),
        downlink=rate(bandwidth, "down", default.downlink),
        wan=rate(bandwidth, "wan", default.wan),
    )
    latency.done()
    bandwidth.done()
    return spec


def _workload(table: _Table, peers: int) -> WorkloadSpec:
    if "objects" in table.raw and "objects_per_peer" in table.raw:
        raise ConfigError("workload: give objects or objects_per_peer, not both")
    objects = table.integer("objects", 0)
    per_peer = table.number("objects_per_peer", 0.0)
    if per_peer:
        objects = round(per_peer * peers)
    size = parse_distribution(
        table.get("object_size", 16 * 2**20), table.key("object_size"), _size_as_float
    )
    spec = WorkloadSpec(
        objects=objects,
        object_size=size,
        chunk_size=parse_size(table.get("chunk_size", 4 * 2**20), table.key("chunk_size")),
        puts_per_hour=table.number("puts_per_hour", 0.0),
        gets_per_hour=table.number("gets_per_hour", 0.0),
    )
    table.done()
    return spec


def _size_as_float(value: object, key: str) -> float:
    return float(parse_size(value, key))


def _repair(table: _Table) -> RepairSpec:
    default = RepairSpec()
    spec = RepairSpec(
        mode=table.text("mode", default.mode),
        detection=table.text("detection", default.detection),
        check_interval=parse_duration(
            table.get("check_interval", default.check_interval), table.key("check_interval")
        ),
        retry_after=(
            None
            if table.get("retry_after") is None
            else parse_duration(table.get("retry_after"), table.key("retry_after"))
        ),
        rebuild_rate=parse_bandwidth(
            table.get("rebuild_rate", default.rebuild_rate), table.key("rebuild_rate")
        ),
        time=(
            None
            if table.get("time") is None
            else parse_distribution(table.get("time"), table.key("time"), parse_duration)
        ),
    )
    table.done()
    return spec


def _rule(table: _Table) -> CodingRule:
    """The shipped rule named ``name`` (default standard) with any field overridden.

    ``repair_at = m`` is the papers' m: repair when a chunk's live fragments fall to m (the
    rule's ``repair_threshold`` is m + 1, "repair when fewer than m + 1 are live").  The old
    key ``repair_threshold`` is refused with the value to write instead: read as m it ran
    every repair one fragment late, silently."""
    base = find_rule(table.text("name", "standard"), SHIPPED_RULES)
    if "repair_threshold" in table.raw:
        old = table.raw["repair_threshold"]
        hint = f"repair_at = {old - 1}" if isinstance(old, int) else "repair_at = m"
        raise ConfigError(
            f'{table.key("repair_threshold")} is no longer read: it meant "repair when fewer '
            f"than this many fragments are live\", one more than the papers' m; write {hint} "
            "(repair when live fragments fall to m)"
        )
    k = table.integer("k", base.k)
    n = table.integer("n", base.n)
    if (k, n) != (base.k, base.n) and "repair_at" not in table.raw:
        raise ConfigError(
            f"{table.key('repair_at')} is required when k or n differ from rule "
            f"{base.name}'s {base.k}-of-{base.n}"
        )
    repair_at = table.integer("repair_at", base.repair_threshold - 1)
    if not k - 1 <= repair_at < n:
        raise ConfigError(
            f"{table.key('repair_at')} = {repair_at}: a {k}-of-{n} chunk is repaired when its "
            f"live fragments fall to m, with {k - 1} <= m <= {n - 1}"
        )
    regions = table.get("regions", sorted(base.regions))
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise ConfigError(f"{table.key('regions')} must be a list of region names")
    grace = parse_duration(table.get("grace_period", base.grace_period), table.key("grace_period"))
    rule = CodingRule(
        base.name,
        k=k,
        n=n,
        repair_threshold=repair_at + 1,
        regions=frozenset(regions),
        max_per_datacenter=table.integer("max_per_datacenter", base.max_per_datacenter),
        grace_period=grace,
    )
    table.done()
    return rule


def _placement(table: _Table, dht_enabled: bool) -> PlacementSpec:
    default_source = "routing_table" if dht_enabled else "sample"
    spec = PlacementSpec(
        candidates=table.text("candidates", default_source),
        sample=table.integer("sample", PlacementSpec().sample),
    )
    table.done()
    return spec


def _dht(table: _Table) -> DhtSpec:
    default = DhtSpec()
    spec = DhtSpec(
        enabled=table.flag("enabled", default.enabled),
        k=table.integer("k", default.k),
        alpha=table.integer("alpha", default.alpha),
        bootstrap=table.text("bootstrap", default.bootstrap),
        lookup_sample=table.number("lookup_sample", default.lookup_sample),
        rejoin_lookup=table.flag("rejoin_lookup", default.rejoin_lookup),
        refresh_interval=parse_duration(
            table.get("refresh_interval", default.refresh_interval),
            table.key("refresh_interval"),
        ),
    )
    table.done()
    return spec
