"""``p2pstore simulate``: run a churn scenario (or a sweep of them) and write its results.

Why one command for both: a sweep file is a scenario file with a ``[sweep]`` table, and what a
researcher wants from either is a directory of results; the command looks at the file and does
the right thing.  The progress bar counts simulated time (a run's wall time is not known in
advance, its simulated duration is); for a sweep it counts finished points.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import click

from p2pstore.errors import ConfigError


@click.command()
@click.argument(
    "scenario", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for timeseries.csv, summary.json and the plots (created if needed).",
)
@click.option("--seed", type=int, default=None, help="Run with this seed instead of the file's.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Sweeps: points run in this many processes at once.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Sweeps: run points in local processes, or on a Dask cluster (needs --scheduler).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Sweeps with --engine dask: the scheduler's address, e.g. tcp://127.0.0.1:8786.",
)
@click.option("--no-plots", is_flag=True, help="Write the CSV and JSON only.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary lines.")
def simulate(
    scenario: Path,
    out_dir: Path,
    seed: int | None,
    workers: int,
    engine: str,
    scheduler: str | None,
    no_plots: bool,
    quiet: bool,
) -> None:
    """Run the churn scenario SCENARIO (a TOML file) and write its results to --out.

    \b
    Examples (scenario files are described in simulations/README.md):
      p2pstore simulate simulations/datacenter-churn.toml --out results/dc
      p2pstore simulate simulations/sweep-rules.toml --out results/sweep --workers 2
      p2pstore simulate simulations/sweep-rules.toml --out results/sweep \\
          --engine dask --scheduler tcp://127.0.0.1:8786
    """
    try:
        data = tomllib.loads(scenario.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{scenario} is not valid TOML: {error}") from error
    from p2pstore.sim.sweep import is_sweep

    if is_sweep(data):
        if seed is not None:
            raise ConfigError(f"{scenario} is a sweep: list its seeds in [sweep] seeds = [...]")
        _sweep(scenario, out_dir, workers, engine, scheduler, not no_plots, quiet)
    else:
        if engine != "local" or scheduler is not None:
            raise ConfigError(f"{scenario} is one scenario: --engine, --scheduler are for sweeps")
        _single(scenario, data, out_dir, seed, not no_plots, quiet)


def _single(
    path: Path, data: dict[str, object], out_dir: Path, seed: int | None, plots: bool, quiet: bool
) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from p2pstore.sim.runner import run_scenario
    from p2pstore.sim.scenario_file import scenario_from_dict
    from p2pstore.sim.units import DAY

    if seed is not None:
        data = {**data, "seed": seed}
    try:
        scenario = scenario_from_dict(data, base_dir=path.parent)
    except ConfigError as error:
        raise ConfigError(f"scenario {path}: {error}") from error
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[days]:.1f} / {task.fields[total_days]:.1f} simulated days"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=quiet, transient=False) as bar:
        task = bar.add_task(
            scenario.name, total=scenario.duration, days=0.0, total_days=scenario.duration / DAY
        )

        def progress(now: float) -> None:
            bar.update(task, completed=now, days=now / DAY)

        summary = run_scenario(scenario, out_dir, progress=progress, plots=plots)
    if not quiet:
        availability = summary["get_availability"]
        click.echo(
            f"{summary['objects_lost']} of {summary['objects_stored']} objects lost, "
            f"{summary['fragments_rebuilt']} fragments rebuilt, "
            f"get availability {'-' if availability is None else f'{availability:.4f}'}, "
            f"{summary['run']['wall_seconds']:.1f} s wall"
        )
        click.echo(f"results in {out_dir}")


def _sweep(
    path: Path,
    out_dir: Path,
    workers: int,
    engine: str,
    scheduler: str | None,
    plots: bool,
    quiet: bool,
) -> None:
    from rich.progress import Progress

    from p2pstore.sim.sweep import Point, load_sweep, run_sweep

    sweep = load_sweep(path)
    total = sweep.size
    with Progress(disable=quiet) as bar:
        task = bar.add_task(f"sweep of {total} points", total=total)

        def done(_: Point) -> None:
            bar.advance(task)

        table = run_sweep(
            sweep,
            out_dir,
            workers=workers,
            plots=plots,
            done=done,
            engine=engine,
            scheduler=scheduler,
        )
    if not quiet:
        click.echo(f"{total} points merged into {table}")
