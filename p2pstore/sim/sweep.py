"""Sweeps: one base scenario, a grid of parameter values, several seeds, run in parallel and
merged into one table.

Strategy: a sweep is expanded into *points* before anything runs.  Each point is a complete
scenario file written to ``OUT/points/NNNN/scenario.toml``, and running it is one call of
:func:`~p2pstore.sim.runner.run_scenario_file` (two path strings in, a summary file out); the
list of those calls is also written to ``OUT/jobs.txt`` as ``p2pstore simulate`` command
lines.  Locally the points run in a ``ProcessPoolExecutor`` with the ``spawn`` start method
(only path strings cross the process boundary); on a Dask cluster (``engine="dask"``,
:mod:`p2pstore.sim.cluster`) each point's scenario text goes to a worker and its files come
back; on any other engine, run the lines of ``jobs.txt`` and call :func:`merge`, which builds
the table from the summaries on disk.

A sweep file::

    [sweep]
    scenario = "datacenter-churn.toml"     # relative to this file
    seeds = [1, 2, 3]
    [sweep.grid]
    "rule.name" = ["standard", "archive"]
    "repair.mode" = ["lazy", "eager"]

Grid keys are dotted paths into the scenario; a value replaces what is there (a whole
distribution table can be a value: ``"churn.sessions" = [{dist = "weibull", ...}, ...]``).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import multiprocessing
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pstore.errors import ConfigError, P2PStoreError
from p2pstore.sim.report import SUMMARY_FILE, read_summary
from p2pstore.sim.runner import run_scenario_file
from p2pstore.sim.scenario_file import scenario_from_dict

SWEEP_TABLE = "sweep.csv"
RUNS_TABLE = "runs.csv"
JOBS_FILE = "jobs.txt"


@dataclass(frozen=True, slots=True)
class Point:
    """One run of a sweep: its number, the grid values and seed, where it lives."""

    index: int
    params: tuple[tuple[str, Any], ...]
    seed: int
    scenario_file: Path
    out_dir: Path


@dataclass(frozen=True, slots=True)
class Sweep:
    """A base scenario (plain data), the grid and the seeds."""

    base: Mapping[str, Any]
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.seeds or any(not values for _, values in self.grid):
            raise ConfigError("a sweep needs at least one seed and one value per grid key")

    @property
    def size(self) -> int:
        """How many points (runs) the sweep has."""
        return math.prod(len(values) for _, values in self.grid) * len(self.seeds)


def is_sweep(data: Mapping[str, Any]) -> bool:
    """Whether parsed TOML is a sweep file rather than a scenario."""
    return "sweep" in data


def load_sweep(path: Path) -> Sweep:
    """Read a sweep file and its base scenario.  Raises :class:`ConfigError`."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        table = dict(data["sweep"])
        base_path = path.parent / str(table.pop("scenario"))
        base = tomllib.loads(base_path.read_text(encoding="utf-8"))
    except KeyError as error:
        raise ConfigError(f"sweep {path}: missing {error.args[0]!r} in [sweep]") from None
    except OSError as error:
        raise ConfigError(f"sweep {path}: cannot read {error.filename}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"sweep {path}: invalid TOML: {error}") from None
    grid = table.pop("grid", {})
    seeds = table.pop("seeds", [base.get("seed", 1)])
    if table:
        raise ConfigError(f"sweep {path}: unknown key(s) {', '.join(sorted(table))} in [sweep]")
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise ConfigError(f"sweep {path}: [sweep.grid] maps dotted keys to lists of values")
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"sweep {path}: seeds must be a list of integers")
    trace = base.get("churn", {}).get("trace")
    if isinstance(trace, str):  # points live elsewhere: anchor the trace to the base's folder
        base["churn"]["trace"] = str((base_path.parent / trace).resolve())
    return Sweep(base, tuple((k, tuple(v)) for k, v in grid.items()), tuple(seeds))


def override(data: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with ``dotted`` (e.g. ``"churn.sessions.mean"``) set.

    Raises :class:`ConfigError` if the path crosses a value that is not a table."""
    copy: dict[str, Any] = json.loads(json.dumps(data))
    keys = dotted.split(".")
    table = copy
    for key in keys[:-1]:
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"sweep key {dotted!r}: {key!r} is not a table in the scenario")
    table[keys[-1]] = value
    return copy


def expand(sweep: Sweep, out_dir: Path) -> list[Point]:
    """Write every point's scenario file and ``jobs.txt``; returns the points.

    Raises :class:`ConfigError` if a point's scenario is invalid (checked before any run)."""
    keys = [key for key, _ in sweep.grid]
    points = []
    combos = itertools.product(*(values for _, values in sweep.grid))
    for index, (values, seed) in enumerate(itertools.product(list(combos), sweep.seeds)):
        data: dict[str, Any] = dict(sweep.base)
        for key, value in zip(keys, values, strict=True):
            data = override(data, key, value)
        data = override(data, "seed", seed)
        data["name"] = f"{sweep.base.get('name', 'scenario')}-{index:04d}"
        try:
            scenario_from_dict(data)
        except ConfigError as error:
            raise ConfigError(
                f"sweep point {index} ({dict(zip(keys, values, strict=True))}): {error}"
            ) from error
        point_dir = out_dir / "points" / f"{index:04d}"
        point_dir.mkdir(parents=True, exist_ok=True)
        scenario_file = point_dir / "scenario.toml"
        scenario_file.write_text(dumps_toml(data), encoding="utf-8")
        points.append(
            Point(index, tuple(zip(keys, values, strict=True)), seed, scenario_file, point_dir)
        )
    lines = [
        f"p2pstore simulate {p.scenario_file.relative_to(out_dir)} "
        f"--out {p.out_dir.relative_to(out_dir)}"
        for p in points
    ]
    (out_dir / JOBS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return points


ENGINES = ("local", "dask")


def run_sweep(
    sweep: Sweep,
    out_dir: Path,
    *,
    workers: int = 1,
    plots: bool = True,
    done: Callable[[Point], None] | None = None,
    engine: str = "local",
    scheduler: str | None = None,
) -> Path:
    """Run every point -- in ``workers`` spawned processes (``local``) or on the Dask
    scheduler at ``scheduler`` (``dask``, :mod:`p2pstore.sim.cluster`) -- then :func:`merge`;
    returns the table's path.  Raises :class:`ConfigError` for a bad engine or scheduler,
    :class:`P2PStoreError` naming the points that failed."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown sweep engine {engine!r}; use one of {', '.join(ENGINES)}")
    if (engine == "dask") != (scheduler is not None):
        raise ConfigError("--scheduler ADDRESS goes with --engine dask, and only with it")
    out_dir.mkdir(parents=True, exist_ok=True)
    points = expand(sweep, out_dir)
    if scheduler is not None:
        from p2pstore.sim.cluster import run_on_dask

        failures = run_on_dask(points, scheduler, plots=plots, done=done)
    else:
        failures = _run_locally(points, workers, plots, done)
    if failures:
        raise P2PStoreError("sweep points failed:\n  " + "\n  ".join(failures))
    return merge(points, out_dir)


def _run_locally(
    points: Sequence[Point], workers: int, plots: bool, done: Callable[[Point], None] | None
) -> list[str]:
    failures: list[str] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
        futures = {
            pool.submit(run_scenario_file, str(p.scenario_file), str(p.out_dir), plots): p
            for p in points
        }
        for future in as_completed(futures):
            point = futures[future]
            try:
                future.result()
            except P2PStoreError as error:
                failures.append(f"point {point.index}: {error}")
            if done is not None:
                done(point)
    return failures


def merge(points: Sequence[Point], out_dir: Path) -> Path:
    """One CSV row per point: its number, grid values and seed, then its summary flattened
    (``sweep.csv``: results only, so the same sweep gives the same table on any engine);
    each point's wall time goes to ``runs.csv``."""
    rows = []
    runs = []
    for point in points:
        summary = dict(read_summary(point.out_dir / SUMMARY_FILE))
        run = summary.pop("run", {})
        row: dict[str, Any] = {"point": point.index, "seed": point.seed}
        row.update({key: _plain(value) for key, value in point.params})
        row.update(_flatten(summary))
        rows.append(row)
        runs.append({"point": point.index, **_flatten(run)})
    _write_csv(rows, out_dir / SWEEP_TABLE)
    _write_csv(runs, out_dir / RUNS_TABLE)
    return out_dir / SWEEP_TABLE


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = _plain(value)
    return flat


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return "+".join(map(str, value))
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return value


# -- writing TOML (plain data only) -------------------------------------------------------------


def dumps_toml(data: Mapping[str, Any]) -> str:
    """TOML text for plain data: top-level tables become sections, deeper tables inline.

    Raises :class:`ConfigError` for a value TOML cannot hold."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"\n[{_key(key)}]")
            lines.extend(f"{_key(k)} = {_value(v)}" for k, v in value.items())
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | str):
        text = json.dumps(value)
    elif isinstance(value, float):
        text = (
            repr(value)
            if math.isfinite(value)
            else {"nan": "nan", "inf": "inf"}.get(str(value), "-inf")
        )
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_value(item) for item in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    else:
        raise ConfigError(f"cannot write {type(value).__name__} {value!r:.40} as TOML")
    return text
