"""Scenario files: quantities with units, distributions, strict keys, traces, and the examples
shipped in simulations/ all load."""

from __future__ import annotations

import math
import random
import statistics
import tomllib
from pathlib import Path

import pytest

from p2pstore.errors import ConfigError
from p2pstore.sim import load_scenario, scenario_from_dict
from p2pstore.sim.distributions import Distribution, parse_distribution
from p2pstore.sim.scenario import applied_rule
from p2pstore.sim.sweep import dumps_toml, is_sweep, load_sweep
from p2pstore.sim.units import parse_bandwidth, parse_duration, parse_size

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
MINIMAL = {"duration": "1d", "mesh": {"peers": 16, "datacenters": 8}}


def test_quantities_read_with_their_units():
    assert parse_duration("90s", "k") == 90
    assert parse_duration("6h", "k") == 6 * 3600
    assert parse_duration("2w", "k") == 14 * 86400
    assert parse_duration(1.5, "k") == 1.5
    assert parse_size("64MiB", "k") == 64 * 2**20
    assert parse_size("2TB", "k") == 2 * 10**12
    assert parse_bandwidth("1Gbit/s", "k") == 125e6
    assert parse_bandwidth("100MiB/s", "k") == 100 * 2**20
    for bad, parse in (("6 parsecs", parse_duration), ("-1", parse_size), ("1GB", parse_bandwidth)):
        with pytest.raises(ConfigError, match="k"):
            parse(bad, "k")


@pytest.mark.parametrize(
    ("table", "mean"),
    [
        ({"dist": "exponential", "mean": "1h"}, 3600.0),
        ({"dist": "weibull", "shape": 0.5, "scale": "1h"}, 3600.0 * math.gamma(3)),
        ({"dist": "pareto", "shape": 3.0, "scale": "1h"}, 1.5 * 3600.0),
        ({"dist": "uniform", "low": "1h", "high": "3h"}, 7200.0),
        ("30m", 1800.0),
    ],
)
def test_distributions_draw_what_they_say(table, mean):
    distribution = parse_distribution(table, "k", parse_duration)
    assert distribution.mean == pytest.approx(mean)
    rng = random.Random(1)
    draws = [distribution.sample(rng) for _ in range(20000)]
    spread = statistics.stdev(draws) / math.sqrt(len(draws)) if len(set(draws)) > 1 else 0
    assert abs(statistics.fmean(draws) - mean) <= 5 * spread + 1e-9
    assert min(draws) >= 0


def test_distribution_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"churn\.sessions: a weibull distribution needs 'scale'"):
        parse_distribution({"dist": "weibull", "shape": 1}, "churn.sessions", parse_duration)
    with pytest.raises(ConfigError, match="unknown distribution"):
        parse_distribution({"dist": "gaussian"}, "k", parse_duration)
    assert Distribution("pareto", 1.0, 2.0).mean == math.inf


def test_unknown_keys_and_bad_rules_are_refused():
    with pytest.raises(ConfigError, match=r"rule\.grace_perod"):
        scenario_from_dict({**MINIMAL, "rule": {"grace_perod": "1h"}})
    with pytest.raises(ConfigError, match="repair_at is required"):
        scenario_from_dict({**MINIMAL, "rule": {"k": 2, "n": 4}})
    with pytest.raises(ConfigError, match="needs 8 datacenters in FR-GES"):
        scenario_from_dict(
            {
                **MINIMAL,
                "mesh": {"peers": 16, "datacenters": 8, "regions": ["FR-GES", "FR-IDF"]},
                "rule": {"regions": ["FR-GES"]},
            }
        )
    with pytest.raises(ConfigError, match="no datacenter named dc-99"):
        scenario_from_dict({**MINIMAL, "churn": {"outages": [{"targets": ["dc-99"], "at": "1h"}]}})
    with pytest.raises(ConfigError, match="needs \\[dht\\] enabled"):
        scenario_from_dict(
            {**MINIMAL, "dht": {"enabled": False}, "placement": {"candidates": "routing_table"}}
        )


def test_repair_at_is_the_papers_m_and_the_old_threshold_key_is_refused():
    rule = scenario_from_dict({**MINIMAL, "rule": {"k": 4, "n": 8, "repair_at": 5}}).rule
    assert rule.repair_threshold == 6  # repaired when live falls to 5: fewer than 6 live
    with pytest.raises(
        ConfigError, match=r"rule\.repair_threshold is no longer read.*repair_at = 5"
    ):
        scenario_from_dict({**MINIMAL, "rule": {"repair_threshold": 6}})
    for m in (2, 8):
        with pytest.raises(ConfigError, match=r"with 3 <= m <= 7"):
            scenario_from_dict({**MINIMAL, "rule": {"repair_at": m}})
    warm = scenario_from_dict({**MINIMAL, "duration": "10d", "warmup": "2d"})
    assert warm.warmup == 2 * 86400
    with pytest.raises(ConfigError, match="warmup"):
        scenario_from_dict({**MINIMAL, "duration": "1d", "warmup": "1d"})


def test_defaults_and_eager_mode():
    scenario = scenario_from_dict({**MINIMAL, "repair": {"mode": "eager"}})
    assert scenario.peers == 16 and scenario.rule.name == "standard"
    assert scenario.rule.repair_threshold == 6  # as declared: "at risk" means below 6
    assert applied_rule(scenario).repair_threshold == 8  # as stewards apply it
    explicit = scenario_from_dict(
        {
            "duration": 10,
            "mesh": {
                "datacenters": [
                    {"name": "a", "region": "FR-GES", "peers": 3},
                    {"name": "b", "region": "FR-IDF", "peers": 2},
                    {"name": "c", "region": "FR-IDF", "peers": 1},
                ]
            },
            "rule": {"name": "replica-3"},
        }
    )
    assert explicit.peers == 6 and explicit.mesh.regions == ("FR-GES", "FR-IDF")


def test_traces_are_read_and_checked(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("peer,up,down\n1,0,1h\n0,10,20\n1,2h,3h\n", encoding="utf-8")
    scenario = scenario_from_dict({**MINIMAL, "churn": {"trace": "good.csv"}}, base_dir=tmp_path)
    assert scenario.churn.trace == ((0, 10.0, 20.0), (1, 0.0, 3600.0), (1, 7200.0, 10800.0))
    overlapping = tmp_path / "bad.csv"
    overlapping.write_text("peer,up,down\n0,0,20\n0,10,30\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="overlapping"):
        scenario_from_dict({**MINIMAL, "churn": {"trace": str(overlapping)}})
    with pytest.raises(ConfigError, match="cannot read trace"):
        scenario_from_dict({**MINIMAL, "churn": {"trace": "missing.csv"}}, base_dir=tmp_path)


def test_written_toml_reads_back_the_same():
    data = {
        "name": 'x "quoted"',
        "seed": 3,
        "duration": "1d",
        "mesh": {"peers": 16, "datacenters": 8, "regions": ["FR-GES"]},
        "churn": {
            "sessions": {"dist": "weibull", "shape": 0.5, "scale": "2d"},
            "outages": [{"scope": "datacenter", "targets": ["dc-1"], "at": 3600.5}],
        },
        "rule": {"name": "replica-3", "regions": []},
    }
    assert tomllib.loads(dumps_toml(data)) == data
    assert scenario_from_dict(tomllib.loads(dumps_toml(data))).rule.name == "replica-3"


def test_every_example_in_simulations_loads():
    files = sorted(SIMULATIONS.glob("*.toml"))
    assert len(files) >= 6
    for path in files:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        if is_sweep(data):
            assert load_sweep(path).size > 1
        else:
            assert load_scenario(path).duration > 0
