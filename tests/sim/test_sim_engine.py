"""The churn engine: determinism, repair only after the grace period, repairs that restore
redundancy within the rule, partitions, traces, and the figures it reports."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from collections import Counter

import pytest

from p2pstore.core.store_plan import STORE_ATTEMPTS
from p2pstore.sim import Simulation, scenario_from_dict
from p2pstore.sim.metrics import COLUMNS
from p2pstore.sim.report import summarize
from p2pstore.sim.sweep import dumps_toml

HOUR = 3600.0


def scenario(**sections):
    """A small mesh: 48 peers in 12 datacenters over 2 regions, 40 objects of 2 chunks,
    standard 4-of-8 (repair below 6, grace 1 h), no churn unless given."""
    return scenario_from_dict(scenario_data(**sections))


def scenario_data(**sections):
    data = {
        "name": "t",
        "seed": 5,
        "duration": "1d",
        "sample_every": "1h",
        "mesh": {"peers": 48, "datacenters": 12, "regions": ["FR-GES", "FR-IDF"]},
        "workload": {"objects": 40, "object_size": "8MiB", "chunk_size": "4MiB"},
        "rule": {"name": "standard"},
        "repair": {"detection": "periodic", "check_interval": "10m"},
        "dht": {"bootstrap": "join", "lookup_sample": 0.5},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return copy.deepcopy(data)


def run(**sections) -> Simulation:
    simulation = Simulation(scenario(**sections))
    simulation.run()
    return simulation


def holders_by_datacenter(simulation: Simulation) -> list[Counter]:
    peers = simulation.peers
    return [
        Counter(peers.datacenter_names[peers.datacenter[h]] for h in chunk.holders)
        for chunk in simulation.storage.chunks
    ]


BUSY = {
    "churn": {
        "sessions": {"dist": "weibull", "shape": 0.7, "scale": "8h"},
        "downtimes": {"dist": "exponential", "mean": "2h"},
        "lifetime": {"dist": "pareto", "shape": 1.5, "scale": "2d"},
        "outages": [
            {
                "scope": "datacenter",
                "every": {"dist": "exponential", "mean": "1d"},
                "duration": {"dist": "exponential", "mean": "3h"},
            }
        ],
        "partitions": [{"groups": [["FR-GES"]], "at": "10h", "duration": "3h"}],
    },
    "workload": {"puts_per_hour": 4, "gets_per_hour": 30},
    "duration": "1d",
}


def test_same_scenario_and_seed_give_the_same_trace():
    first, second = run(**BUSY), run(**BUSY)
    assert first.queue.popped > 500  # a busy run: sessions, outages, repairs, puts, gets
    assert first.counters.fragments_rebuilt > 0 and first.counters.gets > 0
    assert first.dht is not None and first.dht.stats.sampled > 0
    assert first.digest() == second.digest()
    assert first.rows == second.rows
    other = run(**{**BUSY, "seed": 6})
    assert other.digest() != first.digest()


def test_the_trace_does_not_depend_on_the_hash_seed(tmp_path):
    """Iterating a set of bytes depends on PYTHONHASHSEED; nothing in a run may."""
    path = tmp_path / "busy.toml"
    path.write_text(dumps_toml(scenario_data(**BUSY)), encoding="utf-8")
    code = (
        "import sys; from p2pstore.sim import Simulation, load_scenario; "
        "s = Simulation(load_scenario(sys.argv[1])); s.run(); print(s.digest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code, str(path)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert digests == {run(**BUSY).digest()}


def test_every_peer_draws_its_own_churn():
    """Common random numbers: the DHT, the repair mode and the workload draw from their own
    streams, so changing them leaves every peer's history (and the outages) as it was."""
    churn = {**BUSY["churn"], "lifetime": {"dist": "exponential", "mean": "5d"}}
    base = run(churn=churn)
    variants = [
        run(churn=churn, dht={"enabled": False}, placement={"candidates": "sample"}),
        run(churn=churn, repair={"mode": "eager"}, workload={"gets_per_hour": 50}),
    ]
    for other in variants:
        assert [r["live_peers"] for r in other.rows] == [r["live_peers"] for r in base.rows]
        assert other.counters.departures == base.counters.departures > 0
        assert other.peers.node_id == base.peers.node_id
    assert variants[1].digest() != base.digest()


def test_an_outage_shorter_than_the_grace_period_repairs_nothing():
    three = ["dc-0", "dc-1", "dc-2"]
    short = run(
        churn={
            "outages": [{"scope": "datacenter", "targets": three, "at": "90m", "duration": "50m"}]
        }
    )
    assert short.counters.outages == 3
    at_two_hours = short.rows[2]
    assert at_two_hours["live_peers"] == 36  # three datacenters are down at 2 h...
    assert at_two_hours["objects_at_risk"] > 0  # ...leaving chunks below threshold
    assert short.counters.repair_jobs == 0
    assert short.counters.repair_bytes == 0
    assert short.outcome().chunks_below_n == 0
    long = run(
        churn={
            "outages": [{"scope": "datacenter", "targets": three, "at": "90m", "duration": "3h"}]
        }
    )
    assert long.counters.repair_jobs > 0  # the same outage past the grace period repairs


def test_killing_datacenters_repairs_exactly_the_chunks_below_threshold():
    """The conformance scenario: store objects, kill every holder in three datacenters, expect
    each chunk left below its threshold (8 - 3 < 6) rebuilt to n inside the rule."""
    killed = {"dc-0", "dc-1", "dc-2"}
    before = Simulation(scenario())
    before.run()
    expected_rebuilt = 0
    for counts in holders_by_datacenter(before):
        lost = sum(counts[dc] for dc in killed)
        if 8 - lost < 6:
            expected_rebuilt += lost
    assert expected_rebuilt > 0
    after = run(
        churn={
            "outages": [
                {"scope": "datacenter", "targets": sorted(killed), "at": "1h", "permanent": True}
            ],
            "replace_departed": False,
        }
    )
    outcome = after.outcome()
    assert outcome.objects_lost == 0
    assert outcome.fragments_rebuilt == expected_rebuilt
    assert outcome.placement_violations == 0 and outcome.chunks_outside_rule == 0
    pairs = zip(holders_by_datacenter(before), after.storage.chunks, strict=True)
    for counts, chunk in pairs:
        lost = sum(counts[dc] for dc in killed)
        if 8 - lost < 6:  # repaired: back to n fragments, none in a dead datacenter
            assert chunk.existing == 8
            assert (
                not {after.peers.datacenter_names[after.peers.datacenter[h]] for h in chunk.holders}
                & killed
            )
        else:  # lazy: a chunk still at or above its threshold is left alone
            assert chunk.existing == 8 - lost


def test_repairs_stay_inside_the_rules_regions():
    simulation = run(
        mesh={"peers": 60, "datacenters": 20, "regions": ["FR-GES", "FR-IDF", "DE-BY"]},
        rule={"name": "standard", "regions": ["FR-GES", "FR-IDF"]},
        churn={
            "sessions": {"dist": "exponential", "mean": "6h"},
            "downtimes": {"dist": "exponential", "mean": "3h"},
            "lifetime": {"dist": "exponential", "mean": "3d"},
        },
        duration="3d",
    )
    assert simulation.counters.fragments_rebuilt > 0
    peers = simulation.peers
    for chunk in simulation.storage.chunks:
        assert {peers.region_name(h) for h in chunk.holders} <= {"FR-GES", "FR-IDF"}
    assert simulation.outcome().chunks_outside_rule == 0


def test_eager_repair_rebuilds_one_at_a_time_and_lazy_in_batches():
    churn = {
        "sessions": {"dist": "exponential", "mean": "12h"},
        "downtimes": {"dist": "exponential", "mean": "4h"},
    }
    lazy = run(churn=churn, duration="2d")
    eager = run(churn=churn, duration="2d", repair={"mode": "eager"})
    # the same peers fail in both runs (common random numbers); eager starts far more jobs
    assert eager.counters.departures == lazy.counters.departures
    assert eager.counters.repair_jobs > 2 * lazy.counters.repair_jobs > 0
    assert lazy.counters.fragments_rebuilt / lazy.counters.repair_jobs >= 3 - 1e-9
    none = run(churn=churn, duration="2d", repair={"mode": "none"})
    assert none.counters.repair_jobs == 0 and none.counters.repair_bytes == 0


def test_a_partition_makes_gets_fail_across_it_and_heals():
    simulation = run(
        churn={"partitions": [{"groups": [["FR-GES"], ["FR-IDF"]], "at": "2h", "duration": "4h"}]},
        workload={"gets_per_hour": 200},
        rule={"name": "standard", "max_per_datacenter": 1},
    )
    during = [r for r in simulation.rows if 3 * HOUR <= r["time_s"] <= 6 * HOUR]
    after = [r for r in simulation.rows if r["time_s"] >= 10 * HOUR]
    # each side holds about half of every chunk's 8 fragments: many reads fail during it
    assert min(float(r["get_availability_step"]) for r in during) < 0.9
    assert all(float(r["get_availability_step"]) == 1.0 for r in after)
    assert simulation.outcome().objects_lost == 0
    assert simulation.outcome().chunks_outside_rule == 0


def test_a_trace_is_replayed(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("peer,up,down\n0,0,2h\n0,5h,1d\n1,3h,4h\n", encoding="utf-8")
    simulation = Simulation(scenario(churn={"trace": str(trace)}))
    simulation.run()
    live = {int(r["time_s"] // HOUR): r["live_peers"] for r in simulation.rows}
    assert live[1] == 47  # peer 0 up, peer 1 not yet
    assert live[2] == 46  # both down
    assert live[3] == 47  # peer 1 up
    assert live[4] == 46
    assert live[6] == 47


def test_the_time_series_and_dht_figures():
    simulation = run(**BUSY)
    rows = simulation.rows
    assert [set(r) for r in rows[:1]] == [set(COLUMNS)]
    assert rows[0]["time_s"] == 0 and rows[-1]["time_s"] == 86400
    assert all(a["time_s"] < b["time_s"] for a, b in itertools.pairwise(rows))
    assert rows[-1]["repair_bytes"] == sum(r["repair_bytes_step"] for r in rows)
    stats = simulation.dht.stats
    assert stats.success / stats.sampled > 0.9
    assert 1 <= sum(stats.hops) / stats.sampled <= 4
    maintenance = simulation.counters.maintenance
    assert all(maintenance[kind] > 0 for kind in ("dht_probes", "announcements", "holder_checks"))


def test_the_summary_covers_the_window_after_the_warmup():
    whole = run(**BUSY)
    warm = run(**BUSY, warmup="12h")
    assert warm.rows == whole.rows  # the warm-up changes what is summed, not the run
    everything, window = summarize(whole), summarize(warm)
    at_12h = next(r for r in whole.rows if r["time_s"] == 12 * HOUR)
    last = whole.rows[-1]
    assert everything["window_days"] == 1.0 and window["window_days"] == 0.5
    assert window["repair_bytes"] == last["repair_bytes"] - at_12h["repair_bytes"] > 0
    rebuilt = last["fragments_rebuilt"] - at_12h["fragments_rebuilt"]
    assert window["fragments_rebuilt"] == rebuilt > 0
    assert window["objects_lost"] == last["objects_lost"] - at_12h["objects_lost"]
    assert window["gets"] + summarize_gets_before(whole, 12 * HOUR) == everything["gets"]
    assert window["objects_at_risk_max"] == max(
        r["objects_at_risk"] for r in whole.rows if r["time_s"] >= 12 * HOUR
    )
    # the literature's figure: every byte a repair reads or writes, network and the steward's
    # own store, per 30-day month, over the mean unique (uncoded, not lost) bytes stored
    assert everything["repair_bytes_local"] > 0  # a steward often holds a share itself
    months = 0.5 / 30
    unique = window["unique_bytes_mean"]
    assert unique == pytest.approx(
        sum(
            a["unique_bytes"] * (b["time_s"] - a["time_s"])
            for a, b in itertools.pairwise(whole.rows)
            if a["time_s"] >= 12 * HOUR
        )
        / (12 * HOUR)
    )
    assert window["repair_bytes_per_month_per_unique_byte"] == pytest.approx(
        (window["repair_bytes"] + window["repair_bytes_local"]) / months / unique
    )
    # today's figure, next to it: network bytes over the coded (fragment) bytes stored
    assert window["repair_bytes_per_month_over_stored"] == pytest.approx(
        window["repair_bytes"] / months / window["stored_bytes_mean"]
    )
    assert window["stored_bytes_mean"] > 1.9 * unique  # 4-of-8 stores about twice the data


def summarize_gets_before(simulation: Simulation, at: float) -> int:
    return sum(int(r["gets_step"]) for r in simulation.rows if 0 < r["time_s"] <= at)


def test_full_disks_make_puts_fail_loudly():
    simulation = run(
        mesh={"peers": 48, "datacenters": 12, "regions": ["FR-GES"], "capacity": "4MiB"},
        workload={"objects": 60, "object_size": "8MiB", "chunk_size": "4MiB"},
    )
    assert simulation.counters.puts_failed > 0
    assert all(used <= 4 * 2**20 for used in simulation.peers.used)


def test_runs_once():
    simulation = run(duration="1h")
    with pytest.raises(Exception, match="runs once"):
        simulation.run()


def test_a_put_gives_a_fragment_up_after_the_clients_attempt_budget():
    """The node's client tries ``STORE_ATTEMPTS`` holders per fragment; so does a simulated put
    (it once retried until no candidate was left)."""
    wide = {"peers": 120, "datacenters": 40, "regions": ["FR-GES"]}
    simulation = Simulation(scenario(mesh=wide, placement={"candidates": "all"}))
    client = 0
    peers = simulation.peers
    peers.hold_down(client)  # a client node: not a candidate itself
    for peer in range(len(peers)):  # and cut off from every peer
        peers.group[peer] = 0 if peer == client else 1
    number = simulation.workload._new_object()
    assert simulation.workload._place(number, client) is None
    # every share refused on each of its holders: n shares times the budget, no more
    assert simulation.counters.failed_stores == simulation.rule.n * STORE_ATTEMPTS


def test_a_repair_places_the_rebuilt_fragments_that_fit():
    """Too few datacenters left for n: the steward rebuilds as many fragments as fit the rule,
    as the node's repairer does (the simulator once gave such a repair up)."""
    killed = {"dc-0", "dc-1", "dc-2", "dc-3"}
    sections = {
        "mesh": {"peers": 30, "datacenters": 10, "regions": ["FR-GES"]},
        "rule": {"name": "standard", "max_per_datacenter": 1},
    }
    before = Simulation(scenario(**sections))
    before.run()
    expected = 0
    for counts in holders_by_datacenter(before):
        lost = sum(counts[dc] for dc in killed)
        if 8 - lost < 6:  # below threshold; 6 live datacenters, 8 - lost of them taken
            expected += 6 - (8 - lost)
    assert expected > 0
    after = run(
        **sections,
        churn={
            "outages": [
                {"scope": "datacenter", "targets": sorted(killed), "at": "1h", "permanent": True}
            ],
            "replace_departed": False,
        },
    )
    assert after.counters.fragments_rebuilt == expected
    assert after.outcome().placement_violations == 0
