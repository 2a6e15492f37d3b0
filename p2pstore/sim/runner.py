"""Run one scenario into one output directory: the unit of work of the CLI, sweeps and clusters.

Why a function of two paths: a sweep point, a cluster job and ``p2pstore simulate`` all do the
same thing -- read a scenario file, run it, write ``timeseries.csv``, ``summary.json`` and the
plots into a directory -- so :func:`run_scenario_file` takes and returns plain strings and can
run in a fresh process (``spawn``), on another machine, or under any job scheduler.
"""

from __future__ import annotations

import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from p2pstore.errors import ConfigError
from p2pstore.sim.engine import Progress, Simulation
from p2pstore.sim.report import (
    SUMMARY_FILE,
    TIMESERIES_FILE,
    summarize,
    write_summary,
    write_timeseries,
)
from p2pstore.sim.scenario import Scenario
from p2pstore.sim.scenario_file import load_scenario, scenario_from_dict


def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run ``scenario`` and write its results into ``out_dir`` (created if needed); returns
    the summary.  The wall-clock time (setup included) goes under ``summary["run"]``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    simulation = Simulation(scenario)
    simulation.run(progress)
    wall = time.perf_counter() - started
    summary = summarize(simulation)
    summary["run"] = {
        "wall_seconds": wall,
        "peer_days_per_wall_second": summary["peer_days"] / wall if wall > 0 else None,
    }
    write_timeseries(simulation.rows, out_dir / TIMESERIES_FILE)
    write_summary(summary, out_dir / SUMMARY_FILE)
    if plots:
        from p2pstore.sim.plots import PlotInfo, draw_plots  # matplotlib is slow to import

        info = PlotInfo(
            title=plot_title(simulation),
            interval=scenario.sample_every,
            end=simulation.end,
            disruptions=tuple(simulation.churn.disruptions),
        )
        draw_plots(simulation.rows, out_dir, info)
    return summary


def plot_title(simulation: Simulation) -> str:
    """The line every plot carries: scenario, rule as applied, repair mode, seed."""
    scenario = simulation.scenario
    rule = simulation.rule
    return (
        f"{scenario.name}: rule {rule.name} {rule.k}-of-{rule.n}, repaired at "
        f"{rule.repair_threshold - 1} live ({scenario.repair.mode}), seed {scenario.seed}"
    )


def run_scenario_text(text: str, plots: bool = True) -> dict[str, bytes]:
    """Run a scenario given as TOML text in a temporary directory; returns every file it
    wrote (name -> bytes).  What a cluster worker runs: only strings and bytes cross, and the
    worker needs no file system shared with the client (a trace file, if the scenario names
    one, must be at the same absolute path).  Raises :class:`ConfigError` for a bad scenario."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"scenario is not valid TOML: {error}") from error
    with tempfile.TemporaryDirectory(prefix="p2pstore-point-") as scratch:
        folder = Path(scratch)
        run_scenario(scenario_from_dict(data), folder, plots=plots)
        return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def run_scenario_file(scenario_path: str, out_dir: str, plots: bool = True) -> str:
    """Run the scenario file into ``out_dir``; returns the path of its ``summary.json``.

    Raises :class:`ConfigError` for a bad scenario."""
    target = Path(out_dir)
    run_scenario(load_scenario(scenario_path), target, plots=plots)
    return str(target / SUMMARY_FILE)
