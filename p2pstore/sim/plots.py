"""PNG plots of a run's main series, drawn with matplotlib's object API.

Why ``Figure`` and not ``pyplot``: pyplot keeps global state (current figure, backend, open
windows); a sweep draws hundreds of runs in worker processes and tests draw in the same
process as everything else.  A ``Figure`` rendered by the Agg canvas needs no display, leaks
nothing and is closed by the garbage collector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MIB = 2**20


def _series(rows: Sequence[dict[str, Any]], column: str) -> list[float]:
    return [float(row[column]) if row[column] != "" else float("nan") for row in rows]


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def draw_plots(rows: Sequence[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """Draw ``peers.png``, ``durability.png``, ``repair.png`` and ``service.png`` from the
    time-series rows into ``out_dir``; returns their paths."""
    days = _series(rows, "time_days")
    written = []

    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    axes.plot(days, _series(rows, "peers"), label="peers (not departed)")
    axes.plot(days, _series(rows, "live_peers"), label="live peers")
    axes.set(xlabel="simulated days", ylabel="peers", title=f"{title}: peers")
    axes.legend(loc="lower left")
    axes.set_ylim(bottom=0)
    written.append(_save(figure, out_dir / "peers.png"))

    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    axes.plot(days, _series(rows, "objects_at_risk"), label="at risk (below threshold)")
    axes.plot(days, _series(rows, "objects_unavailable"), label="unavailable (below k)")
    axes.plot(days, _series(rows, "objects_lost"), label="lost (cumulative)", linewidth=2)
    axes.set(xlabel="simulated days", ylabel="objects", title=f"{title}: durability")
    axes.legend(loc="upper left")
    written.append(_save(figure, out_dir / "durability.png"))

    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    axes.plot(days, [v / MIB for v in _series(rows, "repair_bytes_step")], label="repair")
    axes.set(xlabel="simulated days", ylabel="MiB per interval", title=f"{title}: repair traffic")
    twin = axes.twinx()
    twin.plot(days, _series(rows, "fragments_rebuilt"), color="tab:red", label="rebuilt")
    twin.set_ylabel("fragments rebuilt (cumulative)")
    written.append(_save(figure, out_dir / "repair.png"))

    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    axes.plot(days, _series(rows, "get_availability_step"), ".", label="get availability")
    axes.plot(days, _series(rows, "lookup_success_step"), "x", label="lookup success")
    axes.set(xlabel="simulated days", ylabel="fraction per interval", title=f"{title}: service")
    axes.set_ylim(-0.02, 1.02)
    axes.legend(loc="lower left")
    written.append(_save(figure, out_dir / "service.png"))
    return written
