"""The churn lab's speed: peer-days simulated per wall second, at the two target sizes.

Why: researchers run sweeps of many scenarios; the issue's targets, on one core, are 1,000
peers with their objects over 30 simulated days in under 5 minutes, and 10,000 peers over 7
simulated days in under 30 minutes.  This benchmark runs the two scenarios of ``simulations/``
that define those workloads (``bench-1000x30d.toml``, ``bench-10000x7d.toml``: datacenter churn
with heavy-tailed sessions, departures, datacenter outages, puts, gets, sampled lookups) and
reports, for each, the wall time split into setup (peers and their DHT tables) and the run
(placing the initial objects, then every event), events processed, and peer-days per wall
second -- then whether the target was met.  The figures of the run (objects lost, fragments
rebuilt, lookups) are printed too, so a speed-up that changed the results shows.

Run: ``python benchmarks/simulator.py`` (about 10 minutes), ``--quick`` for the same
scenarios cut down (200 peers x 30 days, 1,000 peers x 2 days; about a minute),
``--json`` for machine-readable rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from p2pstore.sim import Simulation, scenario_from_dict

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE.parent / "simulations"
DAY = 86400.0

TARGETS = (  # scenario file, wall-second budget
    ("bench-1000x30d.toml", 5 * 60.0),
    ("bench-10000x7d.toml", 30 * 60.0),
)
QUICK = {"bench-1000x30d.toml": (200, "30d"), "bench-10000x7d.toml": (1000, "2d")}


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    peers: int
    days: float
    setup_seconds: float
    run_seconds: float
    wall_seconds: float
    events: int
    peer_days_per_second: float
    budget_seconds: float | None
    met: bool | None
    objects: int
    objects_lost: int
    fragments_rebuilt: int
    lookup_success: float | None
    lookup_hops: float | None


def measure(name: str, budget: float, quick: bool) -> Row:
    data = tomllib.loads((SCENARIOS / name).read_text(encoding="utf-8"))
    if quick:
        peers, duration = QUICK[name]
        data["mesh"]["peers"] = peers
        data["mesh"]["datacenters"] = max(12, peers // 25)
        data["duration"] = duration
    scenario = scenario_from_dict(data, base_dir=SCENARIOS)
    started = time.perf_counter()
    simulation = Simulation(scenario)
    built = time.perf_counter()
    simulation.run()
    finished = time.perf_counter()
    wall = finished - started
    days = simulation.end / DAY
    stats = simulation.dht.stats if simulation.dht is not None else None
    return Row(
        scenario=scenario.name,
        peers=scenario.peers,
        days=days,
        setup_seconds=built - started,
        run_seconds=finished - built,
        wall_seconds=wall,
        events=simulation.queue.popped,
        peer_days_per_second=scenario.peers * days / wall,
        budget_seconds=None if quick else budget,
        met=None if quick else wall < budget,
        objects=simulation.storage.stored_objects,
        objects_lost=simulation.storage.lost_objects,
        fragments_rebuilt=simulation.counters.fragments_rebuilt,
        lookup_success=stats.success / stats.sampled if stats and stats.sampled else None,
        lookup_hops=sum(stats.hops) / stats.sampled if stats and stats.sampled else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    parser.add_argument(
        "--only", choices=[name for name, _ in TARGETS], help="run one of the two scenarios"
    )
    args = parser.parse_args()
    rows = []
    for name, budget in TARGETS:
        if args.only and name != args.only:
            continue
        rows.append(measure(name, budget, args.quick))
        if not args.json:
            print_row(rows[-1])
    if args.json:
        json.dump([asdict(row) for row in rows], sys.stdout, indent=2)
        print()


def print_row(row: Row) -> None:
    verdict = "" if row.met is None else ("  target met" if row.met else "  TARGET MISSED")
    budget = "" if row.budget_seconds is None else f" (budget {row.budget_seconds:.0f} s)"
    print(
        f"{row.scenario}: {row.peers} peers x {row.days:.0f} days\n"
        f"  wall {row.wall_seconds:.1f} s{budget} = setup {row.setup_seconds:.1f} s + "
        f"run {row.run_seconds:.1f} s; {row.events} events\n"
        f"  {row.peer_days_per_second:.0f} peer-days per wall second{verdict}\n"
        f"  {row.objects} objects, {row.objects_lost} lost, {row.fragments_rebuilt} fragments "
        f"rebuilt; sampled lookups: success {row.lookup_success}, hops {row.lookup_hops}",
        flush=True,
    )


if __name__ == "__main__":
    main()
