"""What a researcher gets: the CSV, the JSON summary and the plots of a run, through the
library and through ``p2pstore simulate``, and a sweep merged into one table."""

from __future__ import annotations

import csv
import json
import sys

from click.testing import CliRunner

import p2pstore
from p2pstore.cli.main import cli
from p2pstore.sim import load_scenario, run_scenario
from p2pstore.sim.metrics import COLUMNS
from p2pstore.sim.report import scenario_digest
from p2pstore.sim.sweep import JOBS_FILE, SWEEP_TABLE

SCENARIO = """
name = "tiny"
seed = 2
duration = "12h"
sample_every = "1h"
[mesh]
peers = 30
datacenters = 10
regions = ["FR-GES", "FR-IDF"]
[churn]
sessions = { dist = "exponential", mean = "6h" }
downtimes = { dist = "exponential", mean = "2h" }
[workload]
objects = 20
object_size = "1MiB"
gets_per_hour = 40
[rule]
name = "standard"
[dht]
lookup_sample = 0.5
"""


def write(tmp_path, text=SCENARIO, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_run_writes_csv_json_and_plots(tmp_path):
    pyplot_before = "matplotlib.pyplot" in sys.modules
    out = tmp_path / "out"
    summary = run_scenario(load_scenario(write(tmp_path)), out)
    with (out / "timeseries.csv").open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == 13  # every hour from 0 to 12 h
    assert float(rows[-1]["time_days"]) == 0.5
    saved = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(summary))
    assert saved["objects_stored"] == 20 and saved["gets"] > 0
    assert saved["peer_days"] == 15.0 and saved["run"]["wall_seconds"] > 0
    assert 0 <= saved["get_availability"] <= 1
    assert set(saved["maintenance_by_kind"]) >= {"dht_probes", "holder_checks", "repair"}
    assert saved["p2pstore_version"] == p2pstore.__version__
    assert saved["window_days"] == 0.5 and saved["rule"]["repair_at"] == 5
    other = load_scenario(write(tmp_path, SCENARIO.replace("objects = 20", "objects = 21"), "b"))
    assert saved["scenario_digest"] == scenario_digest(load_scenario(write(tmp_path)))
    assert saved["scenario_digest"] != scenario_digest(other)
    for name in ("peers", "durability", "repair", "service"):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    if not pyplot_before:
        assert "matplotlib.pyplot" not in sys.modules  # no global pyplot state


def test_the_cli_runs_a_scenario_and_honours_the_seed(tmp_path):
    path = write(tmp_path)
    runner = CliRunner()
    first = runner.invoke(cli, ["simulate", str(path), "--out", str(tmp_path / "a"), "--no-plots"])
    assert first.exit_code == 0, first.output
    assert "objects lost" in first.output and "simulated days" in first.output
    assert not (tmp_path / "a" / "peers.png").exists()
    again = runner.invoke(
        cli, ["simulate", str(path), "--out", str(tmp_path / "b"), "--no-plots", "--quiet"]
    )
    other = runner.invoke(
        cli,
        [
            "simulate",
            str(path),
            "--out",
            str(tmp_path / "c"),
            "--no-plots",
            "--quiet",
            "--seed",
            "9",
        ],
    )
    assert again.exit_code == other.exit_code == 0 and again.output == ""
    digests = [
        json.loads((tmp_path / d / "summary.json").read_text(encoding="utf-8"))["trace_digest"]
        for d in "abc"
    ]
    assert digests[0] == digests[1] != digests[2]


def test_the_cli_names_what_is_wrong(tmp_path):
    path = write(tmp_path, SCENARIO.replace("[rule]", "[rule]\ngrace = 5"))
    result = CliRunner().invoke(cli, ["simulate", str(path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "rule.grace" in result.output and "tiny.toml" in result.output


def test_a_sweep_runs_points_in_processes_and_merges_them(tmp_path):
    write(tmp_path)
    sweep = write(
        tmp_path,
        '[sweep]\nscenario = "tiny.toml"\nseeds = [1]\n'
        '[sweep.grid]\n"rule.name" = ["standard", "replica-3"]\n',
        name="sweep.toml",
    )
    out = tmp_path / "sweep-out"
    result = CliRunner().invoke(
        cli, ["simulate", str(sweep), "--out", str(out), "--workers", "2", "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    with (out / SWEEP_TABLE).open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["rule.name"] for row in rows] == ["standard", "replica-3"]
    assert [row["rule.k"] for row in rows] == ["4", "1"]  # the point's summary, not the grid
    assert all(row["objects_stored"] == "20" for row in rows)
    jobs = (out / JOBS_FILE).read_text(encoding="utf-8").splitlines()
    assert jobs[1] == "p2pstore simulate points/0001/scenario.toml --out points/0001"
    # a point is a plain scenario file: the same job run again gives the same trace
    rerun = CliRunner().invoke(
        cli,
        [
            "simulate",
            str(out / "points/0001/scenario.toml"),
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--no-plots",
        ],
    )
    assert rerun.exit_code == 0
    digest = json.loads((tmp_path / "r/summary.json").read_text(encoding="utf-8"))["trace_digest"]
    assert digest == rows[1]["trace_digest"]
