"""Sweeps on a Dask cluster: the same points as the local pool, the same merged table.

The cluster is a ``LocalCluster`` of two worker processes started by the test, on the
loopback; skipped when Dask distributed is not installed (the ``dev`` extra installs it)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from p2pstore.cli.main import cli
from p2pstore.sim.sweep import RUNS_TABLE, SWEEP_TABLE

distributed = pytest.importorskip("distributed")

SCENARIO = """
name = "tiny"
seed = 2
duration = "12h"
sample_every = "2h"
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
[dht]
lookup_sample = 0.5
"""

SWEEP = """
[sweep]
scenario = "tiny.toml"
seeds = [1, 2]
[sweep.grid]
"rule.name" = ["standard", "replica-3"]
"""


def simulate(*args: str) -> str:
    result = CliRunner().invoke(cli, ["simulate", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_sweep_on_two_dask_workers_merges_the_table_of_the_local_run(tmp_path):
    (tmp_path / "tiny.toml").write_text(SCENARIO, encoding="utf-8")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP, encoding="utf-8")
    local, remote = tmp_path / "local", tmp_path / "dask"
    simulate(str(sweep), "--out", str(local), "--workers", "2", "--no-plots", "--quiet")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        assert len(cluster.workers) == 2
        output = simulate(
            str(sweep), "--out", str(remote), "--engine", "dask",
            "--scheduler", cluster.scheduler_address,
        )  # fmt: skip
    assert "4 points merged" in output
    table = (remote / SWEEP_TABLE).read_text(encoding="utf-8")
    assert table == (local / SWEEP_TABLE).read_text(encoding="utf-8")
    assert len(table.splitlines()) == 5 and "trace_digest" in table
    assert "wall_seconds" in (remote / RUNS_TABLE).read_text(encoding="utf-8")
    for point in ("0000", "0003"):  # the worker's files came back, plots included
        files = {p.name for p in (remote / "points" / point).iterdir()}
        assert {"scenario.toml", "summary.json", "timeseries.csv", "durability.png"} <= files


def test_the_engine_options_are_checked(tmp_path):
    (tmp_path / "tiny.toml").write_text(SCENARIO, encoding="utf-8")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP, encoding="utf-8")
    runner = CliRunner()
    alone = runner.invoke(cli, ["simulate", str(sweep), "--out", str(tmp_path / "a"),
                                "--engine", "dask"])  # fmt: skip
    assert alone.exit_code != 0 and "--scheduler ADDRESS goes with --engine dask" in alone.output
    single = runner.invoke(cli, ["simulate", str(tmp_path / "tiny.toml"), "--out",
                                 str(tmp_path / "b"), "--engine", "dask"])  # fmt: skip
    assert single.exit_code != 0 and "is one scenario" in single.output
