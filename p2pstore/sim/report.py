"""A run's results on disk: ``timeseries.csv``, ``summary.json`` and the plots.

Why JSON and CSV with fixed columns: the sweep merges summaries into one table, and a
researcher's notebook (or a cluster's result collector) reads them without importing p2pstore.
Every figure is derived from the run's counters and rows, over the steady-state window (after
the scenario's ``warmup``); the wall-clock time, the only figure that differs between two
identical runs, is kept apart under ``"run"``.  ``simulations/README.md`` defines each figure
and the convention it follows.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

from p2pstore import __version__
from p2pstore.sim.engine import Simulation
from p2pstore.sim.metrics import COLUMNS, MAINTENANCE_KINDS, mean, p99
from p2pstore.sim.scenario import Scenario
from p2pstore.sim.units import DAY, MONTH

SUMMARY_FILE = "summary.json"
TIMESERIES_FILE = "timeseries.csv"


def time_weighted_mean(rows: list[dict[str, Any]], column: str, start: float = 0.0) -> float:
    """The mean of ``column`` over simulated time from ``start`` (each row holds until the
    next)."""
    if not rows:
        return 0.0
    total = 0.0
    span = 0.0
    for row, following in pairwise(rows):
        width = float(following["time_s"]) - max(float(row["time_s"]), start)
        if width > 0:
            total += float(row[column]) * width
            span += width
    return total / span if span > 0 else float(rows[-1][column])


def scenario_digest(scenario: Scenario) -> str:
    """BLAKE2b of the scenario as applied (every value the run read, in a canonical JSON):
    two summaries with the same digest and seed come from the same run."""
    plain = json.dumps(
        dataclasses.asdict(scenario), sort_keys=True, default=_canonical, allow_nan=True
    )
    return hashlib.blake2b(plain.encode(), digest_size=16).hexdigest()


def _canonical(value: object) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"cannot digest {type(value).__name__}")


def _quantile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(sim: Simulation) -> dict[str, Any]:
    """The summary of a finished run (plain data, ready for JSON).  Every figure covers the
    steady-state window ``[warmup, end]``: counts are differences from the end of the
    warm-up, means and maxima are taken over the window's time."""
    scenario = sim.scenario
    counters = sim.counters
    base = sim.baseline
    before = base.counters
    storage = sim.storage
    warmup = scenario.warmup
    rows = sim.rows
    window_rows = [row for row in rows if float(row["time_s"]) >= warmup]
    window = sim.end - warmup
    months = window / MONTH
    stored_mean = time_weighted_mean(rows, "stored_bytes", warmup)
    unique_mean = time_weighted_mean(rows, "unique_bytes", warmup)
    repair_bytes = counters.repair_bytes - before.repair_bytes
    repair_local = counters.repair_bytes_local - before.repair_bytes_local
    per_month = repair_bytes / months if months > 0 else 0.0
    all_per_month = (repair_bytes + repair_local) / months if months > 0 else 0.0
    losses = [o.lost_at for o in storage.objects if o.lost_at is not None and o.lost_at >= warmup]
    lost = storage.lost_objects - base.lost_objects
    at_stake = storage.stored_objects - base.lost_objects
    times = sorted(counters.repair_times[len(before.repair_times) :])
    gets = counters.gets - before.gets
    stats = sim.dht.stats if sim.dht is not None else None
    sampled, success, exact, hops_before = base.lookups
    hops = stats.hops[hops_before:] if stats else []
    lookups = stats.sampled - sampled if stats else 0
    maintenance = {
        kind: counters.maintenance[kind] - before.maintenance[kind] for kind in MAINTENANCE_KINDS
    }
    outcome = sim.outcome()
    rule = scenario.rule
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "p2pstore_version": __version__,
        "scenario_digest": scenario_digest(scenario),
        "duration_days": sim.end / DAY,
        "warmup_days": warmup / DAY,
        "window_days": window / DAY,
        "peers": scenario.peers,
        "datacenters": len(scenario.mesh.datacenters),
        "regions": len(scenario.mesh.regions),
        "rule": {
            "name": rule.name,
            "k": rule.k,
            "n": rule.n,
            "repair_at": sim.rule.repair_threshold - 1,
            "repair_threshold": sim.rule.repair_threshold,
            "grace_period_s": rule.grace_period,
            "max_per_datacenter": rule.max_per_datacenter,
            "regions": sorted(rule.regions),
        },
        "repair_mode": scenario.repair.mode,
        "detection": scenario.repair.detection,
        "live_peers_mean": time_weighted_mean(rows, "live_peers", warmup),
        "departures": counters.departures - before.departures,
        "joins": counters.joins - before.joins,
        "objects_stored": storage.stored_objects,
        "objects_in_window": at_stake,
        "objects_lost": lost,
        "objects_lost_fraction": lost / at_stake if at_stake else 0.0,
        "first_loss_days": min(losses) / DAY if losses else None,
        "objects_at_risk_max": max((int(r["objects_at_risk"]) for r in window_rows), default=0),
        "objects_at_risk_mean": time_weighted_mean(rows, "objects_at_risk", warmup),
        "objects_unavailable_max": max(
            (int(r["objects_unavailable"]) for r in window_rows), default=0
        ),
        "objects_unavailable_mean": time_weighted_mean(rows, "objects_unavailable", warmup),
        "fragments_rebuilt": counters.fragments_rebuilt - before.fragments_rebuilt,
        "repair_jobs": counters.repair_jobs - before.repair_jobs,
        "repair_blocked": counters.repair_blocked - before.repair_blocked,
        "failed_stores": counters.failed_stores - before.failed_stores,
        "repair_time_mean_s": sum(times) / len(times) if times else None,
        "repair_time_p50_s": _quantile(times, 0.5),
        "repair_time_p90_s": _quantile(times, 0.9),
        "repair_time_max_s": times[-1] if times else None,
        "repair_bytes": repair_bytes,
        "repair_bytes_local": repair_local,
        "repair_bytes_per_month": per_month,
        "stored_bytes_mean": stored_mean,
        "unique_bytes_mean": unique_mean,
        "user_bytes": storage.user_bytes,
        "repair_bytes_per_month_over_stored": per_month / stored_mean if stored_mean else None,
        "repair_bytes_per_month_per_unique_byte": all_per_month / unique_mean
        if unique_mean
        else None,
        "placement_violations": counters.placement_violations - before.placement_violations,
        "chunks_outside_rule": outcome.chunks_outside_rule,
        "chunks_below_n": outcome.chunks_below_n,
        "puts": counters.puts - before.puts,
        "puts_failed": counters.puts_failed - before.puts_failed,
        "gets": gets,
        "get_availability": (counters.gets_ok - before.gets_ok) / gets if gets else None,
        "maintenance_messages": sum(maintenance.values()),
        "maintenance_by_kind": maintenance,
        "lookups_sampled": lookups,
        "lookup_success": (stats.success - success) / lookups if stats and lookups else None,
        "lookup_exact": (stats.exact - exact) / lookups if stats and lookups else None,
        "lookup_hops_mean": mean([float(h) for h in hops]) if stats else None,
        "lookup_hops_p99": p99(hops) if stats else None,
        "lookup_rpcs_mean": stats.rpcs_per_lookup if stats else None,
        "events": sim.queue.popped,
        "peer_days": scenario.peers * sim.end / DAY,
        "trace_digest": sim.digest(),
    }


def write_timeseries(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the rows as CSV with the columns of :data:`COLUMNS`."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row[key]) for key in COLUMNS})


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def write_summary(summary: dict[str, Any], path: Path) -> None:
    """Write the summary as indented JSON."""
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_summary(path: Path) -> dict[str, Any]:
    """Read a ``summary.json`` back."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
