"""A run's results on disk: ``timeseries.csv``, ``summary.json`` and the plots.

Why JSON and CSV with fixed columns: the sweep merges summaries into one table, and a
researcher's notebook (or a cluster's result collector) reads them without importing p2pstore.
Every figure is derived from the run's counters and rows; the wall-clock time, the only
figure that differs between two identical runs, is kept apart under ``"run"``.
"""

from __future__ import annotations

import csv
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

from p2pstore.sim.engine import Simulation
from p2pstore.sim.metrics import COLUMNS, MAINTENANCE_KINDS, mean, p99
from p2pstore.sim.units import DAY, MONTH

SUMMARY_FILE = "summary.json"
TIMESERIES_FILE = "timeseries.csv"


def time_weighted_mean(rows: list[dict[str, Any]], column: str) -> float:
    """The mean of ``column`` over simulated time (each row holds until the next)."""
    if not rows:
        return 0.0
    total = 0.0
    span = 0.0
    for row, following in pairwise(rows):
        width = float(following["time_s"]) - float(row["time_s"])
        total += float(row[column]) * width
        span += width
    return total / span if span > 0 else float(rows[-1][column])


def summarize(sim: Simulation) -> dict[str, Any]:
    """The summary of a finished run (plain data, ready for JSON)."""
    scenario = sim.scenario
    counters = sim.counters
    storage = sim.storage
    rows = sim.rows
    duration = sim.end
    stored_mean = time_weighted_mean(rows, "stored_bytes")
    per_month = counters.repair_bytes / (duration / MONTH) if duration > 0 else 0.0
    losses = [o.lost_at for o in storage.objects if o.lost_at is not None]
    stats = sim.dht.stats if sim.dht is not None else None
    outcome = sim.outcome()
    rule = scenario.rule
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "duration_days": duration / DAY,
        "peers": scenario.peers,
        "datacenters": len(scenario.mesh.datacenters),
        "regions": len(scenario.mesh.regions),
        "rule": {
            "name": rule.name,
            "k": rule.k,
            "n": rule.n,
            "repair_threshold": sim.rule.repair_threshold,
            "grace_period_s": rule.grace_period,
            "max_per_datacenter": rule.max_per_datacenter,
            "regions": sorted(rule.regions),
        },
        "repair_mode": scenario.repair.mode,
        "live_peers_mean": time_weighted_mean(rows, "live_peers"),
        "departures": counters.departures,
        "joins": counters.joins,
        "objects_stored": storage.stored_objects,
        "objects_lost": storage.lost_objects,
        "objects_lost_fraction": storage.lost_objects / storage.stored_objects
        if storage.stored_objects
        else 0.0,
        "first_loss_days": min(losses) / DAY if losses else None,
        "objects_at_risk_max": max((int(r["objects_at_risk"]) for r in rows), default=0),
        "objects_at_risk_mean": time_weighted_mean(rows, "objects_at_risk"),
        "objects_unavailable_max": max((int(r["objects_unavailable"]) for r in rows), default=0),
        "fragments_rebuilt": counters.fragments_rebuilt,
        "repair_jobs": counters.repair_jobs,
        "repair_blocked": counters.repair_blocked,
        "failed_stores": counters.failed_stores,
        "repair_bytes": counters.repair_bytes,
        "repair_bytes_per_month": per_month,
        "stored_bytes_mean": stored_mean,
        "user_bytes": storage.user_bytes,
        "repair_bytes_per_month_over_stored": per_month / stored_mean if stored_mean else None,
        "placement_violations": counters.placement_violations,
        "chunks_outside_rule": outcome.chunks_outside_rule,
        "chunks_below_n": outcome.chunks_below_n,
        "puts": counters.puts,
        "puts_failed": counters.puts_failed,
        "gets": counters.gets,
        "get_availability": counters.gets_ok / counters.gets if counters.gets else None,
        "maintenance_messages": sum(counters.maintenance.values()),
        "maintenance_by_kind": {kind: counters.maintenance[kind] for kind in MAINTENANCE_KINDS},
        "lookups_sampled": stats.sampled if stats else 0,
        "lookup_success": stats.success / stats.sampled if stats and stats.sampled else None,
        "lookup_exact": stats.exact / stats.sampled if stats and stats.sampled else None,
        "lookup_hops_mean": mean([float(h) for h in stats.hops]) if stats else None,
        "lookup_hops_p99": p99(stats.hops) if stats else None,
        "lookup_rpcs_mean": stats.rpcs_per_lookup if stats else None,
        "events": sim.queue.popped,
        "peer_days": scenario.peers * duration / DAY,
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
