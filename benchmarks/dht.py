"""Kademlia lookups at 100, 1,000 and 5,000 simulated peers, beside log2(N).

Why: a lookup's cost should grow with log2(N) and it should find the true k closest peers.  This
benchmark builds a mesh with ``p2pstore.sim.SimulatedDht`` -- the real ``RoutingTable`` and
``Lookup`` of the core, driven synchronously in virtual time, every peer joining through peer 0
as ``Dht.join`` does (a lookup of its own id, then one per bucket) -- and then runs lookups from
random peers to random targets.  For each N it reports the wall time to build the mesh, the mean
and p99 hops and RPCs (FIND_NODE queries sent) per lookup, and the success rate: a lookup
succeeds when its k closest are exactly the true k closest other live peers (an oracle sorts
every other peer id by XOR distance to the target).

``--kill F`` adds a churn row per N: F of the peers die at once, nobody is told, and the same
number of lookups run again (queries to dead peers time out and count as RPCs).

Run: ``python benchmarks/dht.py`` (about 2-3 minutes on one core, mostly building 5,000
peers), ``--sizes 100,1000`` for less, ``--json`` for machine-readable rows.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass

from p2pstore.sim import SimulatedDht


@dataclass(frozen=True, slots=True)
class Row:
    peers: int
    dead: int
    log2_n: float
    build_seconds: float
    join_rpcs_per_peer: float
    lookups: int
    hops_mean: float
    hops_p99: int
    rpcs_mean: float
    rpcs_p99: int
    failed_rpcs_mean: float
    success: float
    lookup_seconds: float


def p99(values: list[int]) -> int:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def measure(
    sim: SimulatedDht, lookups: int, rng: random.Random, build: float, join_rpcs: int
) -> Row:
    """Run ``lookups`` lookups from random live peers to random targets and sum them up."""
    live = sim.live_peers()
    hops: list[int] = []
    rpcs: list[int] = []
    failed: list[int] = []
    exact = 0
    start = time.perf_counter()
    for _ in range(lookups):
        asker = rng.choice(live)
        result = sim.lookup(asker, rng.randbytes(20))
        hops.append(result.hops)
        rpcs.append(result.queried)
        failed.append(result.failed)
        exact += sim.is_exact(asker, result)
    elapsed = time.perf_counter() - start
    return Row(
        peers=sim.n,
        dead=sim.n - len(live),
        log2_n=math.log2(sim.n),
        build_seconds=build,
        join_rpcs_per_peer=join_rpcs / sim.n,
        lookups=lookups,
        hops_mean=statistics.fmean(hops),
        hops_p99=p99(hops),
        rpcs_mean=statistics.fmean(rpcs),
        rpcs_p99=p99(rpcs),
        failed_rpcs_mean=statistics.fmean(failed),
        success=exact / lookups,
        lookup_seconds=elapsed,
    )


def run(sizes: list[int], lookups: int, seed: int, kill: float, k: int, alpha: int) -> list[Row]:
    rows: list[Row] = []
    for size in sizes:
        print(f"building {size} peers ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        sim = SimulatedDht(size, k=k, alpha=alpha, seed=seed)
        build = time.perf_counter() - start
        join_rpcs = sim.rpcs
        rng = random.Random(seed + size)
        rows.append(measure(sim, lookups, rng, build, join_rpcs))
        if kill > 0:
            sim.kill(kill, rng)
            rows.append(measure(sim, lookups, rng, build, join_rpcs))
    return rows


def print_table(rows: list[Row], k: int, alpha: int) -> None:
    print(
        f"k={k}, alpha={alpha}; every peer joins through peer 0; lookups from random live "
        "peers to random targets; success = the exact true k closest live peers"
    )
    header = (
        f"{'N':>6} {'dead':>5} {'log2 N':>6} {'build s':>8} {'join RPC/peer':>13} "
        f"{'hops mean':>9} {'p99':>4} {'RPCs mean':>9} {'p99':>4} {'failed':>6} {'success':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.peers:>6} {row.dead:>5} {row.log2_n:>6.2f} {row.build_seconds:>8.1f} "
            f"{row.join_rpcs_per_peer:>13.1f} {row.hops_mean:>9.2f} {row.hops_p99:>4} "
            f"{row.rpcs_mean:>9.1f} {row.rpcs_p99:>4} {row.failed_rpcs_mean:>6.1f} "
            f"{row.success:>8.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="100,1000,5000",
        help="comma-separated peer counts (default 100,1000,5000)",
    )
    parser.add_argument("--lookups", type=int, default=500, help="lookups per size")
    parser.add_argument("--seed", type=int, default=1, help="seed of ids, joins and lookups")
    parser.add_argument("--kill", type=float, default=0.0, help="also measure after F die")
    parser.add_argument("--k", type=int, default=20, help="bucket size and lookup width")
    parser.add_argument("--alpha", type=int, default=3, help="queries in flight per lookup")
    parser.add_argument("--json", action="store_true", help="print machine-readable rows")
    args = parser.parse_args()
    try:
        sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--sizes takes comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 2 or args.lookups < 1 or not 0 <= args.kill < 1:
        parser.error("need sizes >= 2, --lookups >= 1 and 0 <= --kill < 1")
    rows = run(sizes, args.lookups, args.seed, args.kill, args.k, args.alpha)
    if args.json:
        document = {
            "seed": args.seed,
            "k": args.k,
            "alpha": args.alpha,
            "rows": [asdict(row) for row in rows],
        }
        print(json.dumps(document, indent=2))
    else:
        print_table(rows, args.k, args.alpha)


if __name__ == "__main__":
    main()
