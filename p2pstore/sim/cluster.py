"""Sweep points on a Dask cluster: ``p2pstore simulate SWEEP --engine dask --scheduler ADDR``.

Why Dask distributed: it is pure Python, installs from PyPI with pip (the ``cluster`` extra),
and its futures are the local pool's API, so a sweep runs the same calls on a laptop's
``LocalCluster``, a few machines running ``dask worker``, or an HPC batch system through
``dask-jobqueue`` (SLURM, PBS, SGE) or Kubernetes through ``dask-kubernetes``, without a
broker or a service to run.  Ray would bring a large binary runtime and its own object
store, Celery a message broker, Parsl a workflow language; a sweep needs none of that.

What crosses the cluster: each point's scenario as TOML text, and back every file the run
wrote, as bytes (:func:`~p2pstore.sim.runner.run_scenario_text`), which the client writes into
the point's folder; the workers need p2pstore installed (the same version: the summary
records it) but no file system shared with the client.  The table is then merged exactly as
after a local sweep.  Dask moves tasks with pickle: a scheduler runs whatever its clients
send, so run it on a private network (the examples bind it to the loopback).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from p2pstore.errors import ConfigError, P2PStoreError
from p2pstore.sim.runner import run_scenario_text

if TYPE_CHECKING:
    from p2pstore.sim.sweep import Point

CONNECT_TIMEOUT = 30.0
"""Seconds to reach the scheduler before the sweep gives up."""


def run_on_dask(
    points: Sequence[Point],
    scheduler: str,
    *,
    plots: bool,
    done: Callable[[Point], None] | None = None,
) -> list[str]:
    """Run every point on the Dask scheduler at ``scheduler`` (e.g. ``tcp://host:8786``) and
    write each one's files into its folder; returns a line per point that failed.

    Raises :class:`ConfigError` when Dask is not installed or the scheduler cannot be
    reached."""
    try:
        from distributed import Client, KilledWorker, as_completed
    except ImportError as error:
        raise ConfigError(
            "--engine dask needs Dask distributed: pip install 'p2pstore[cluster]'"
        ) from error
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as error:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from error
    failures: list[str] = []
    with client:
        futures = {
            client.submit(
                run_scenario_text,
                point.scenario_file.read_text(encoding="utf-8"),
                plots,
                pure=False,  # a fresh key per submission: never another sweep's result
            ): point
            for point in points
        }
        for future in as_completed(futures):
            point = futures[future]
            try:
                files: dict[str, bytes] = future.result()
            except P2PStoreError as error:
                failures.append(f"point {point.index}: {error}")
            except KilledWorker as error:
                failures.append(f"point {point.index}: its worker died ({error})")
            else:
                for name, content in files.items():
                    if Path(name).name != name or name in {"", ".", ".."}:
                        raise P2PStoreError(f"point {point.index}: a worker sent file {name!r}")
                    (point.out_dir / name).write_bytes(content)
            if done is not None:
                done(point)
    return failures
