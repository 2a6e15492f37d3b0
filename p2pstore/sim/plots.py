"""PNG plots of a run's main series, drawn with matplotlib's object API, fit for a paper.

Why ``Figure`` and not ``pyplot``: pyplot keeps global state (current figure, backend, open
windows); a sweep draws hundreds of runs in worker processes and tests draw in the same
process as everything else.  A ``Figure`` rendered by the Agg canvas needs no display, leaks
nothing and is closed by the garbage collector.

What makes a plot citable here: every series stays visible even when two coincide or sit at
zero (distinct line styles and markers, a symmetric-log axis for small shares, one panel per
quantity instead of twin axes), every axis says its unit and every rate its interval, outages
and partitions are shaded, and every title names the scenario, the rule and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from p2pstore.sim.units import DAY

GIB = 2**30
SHADES = {"partition": ("tab:purple", "//"), "outage": ("0.55", None)}


@dataclass(frozen=True, slots=True)
class PlotInfo:
    """What every plot says about its run: a title line (scenario, rule, seed), the sampling
    interval (the unit of per-interval series), and the outages and partitions to shade."""

    title: str
    interval: float
    end: float
    disruptions: tuple[tuple[float, float | None, str], ...] = ()


def _interval(seconds: float) -> str:
    """``3600`` -> ``"1 h"``, ``86400`` -> ``"1 day"``; other lengths in seconds."""
    for unit, name in ((DAY, "day"), (3600.0, "h"), (60.0, "min")):
        count = seconds / unit
        if count >= 1 and count == round(count):
            plural = "s" if name == "day" and count != 1 else ""
            return f"{count:g} {name}{plural}"
    return f"{seconds:g} s"


def _series(rows: Sequence[dict[str, Any]], column: str) -> list[float]:
    return [float(row[column]) if row[column] != "" else float("nan") for row in rows]


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


def _figure(info: PlotInfo, what: str, panels: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(8, 3.4 + 1.9 * (panels - 1)), layout="constrained")
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0].tolist()
    figure.suptitle(f"{what}\n{info.title}", fontsize=10)
    axes[-1].set_xlabel("simulated time (days)")
    return figure, axes


def _shade(axes: Axes, info: PlotInfo) -> list[Patch]:
    """Shade outages and partitions; returns legend handles for the kinds present."""
    seen: dict[str, Patch] = {}
    for start, end, what in info.disruptions:
        kind = "partition" if what == "partition" else "outage"
        color, hatch = SHADES[kind]
        stop = info.end if end is None else end
        if stop <= start:  # for good: a line
            axes.axvline(start / DAY, color=color, linewidth=0.8, linestyle=":")
        else:
            axes.axvspan(start / DAY, stop / DAY, color=color, alpha=0.18, hatch=hatch, linewidth=0)
        label = "partition" if kind == "partition" else "outage (shaded)"
        seen.setdefault(label, Patch(color=color, alpha=0.3, hatch=hatch, label=label))
    return list(seen.values())


def _legend(axes: Axes, extra: list[Patch]) -> None:
    handles, _ = axes.get_legend_handles_labels()
    axes.legend(handles=[*handles, *extra], loc="best", fontsize=8, framealpha=0.85)


def draw_plots(rows: Sequence[dict[str, Any]], out_dir: Path, info: PlotInfo) -> list[Path]:
    """Draw ``peers.png``, ``durability.png``, ``repair.png`` and ``service.png`` from the
    time-series rows into ``out_dir``; returns their paths."""
    days = _series(rows, "time_days")
    every = _interval(info.interval)
    return [
        _peers(rows, days, out_dir, info),
        _durability(rows, days, out_dir, info),
        _repair(rows, days, out_dir, info, every),
        _service(rows, days, out_dir, info, every),
    ]


def _peers(rows: Sequence[dict[str, Any]], days: list[float], out: Path, info: PlotInfo) -> Path:
    figure, (axes,) = _figure(info, "Peers")
    marks = _shade(axes, info)
    axes.plot(days, _series(rows, "peers"), color="tab:blue", label="peers (not departed)")
    axes.plot(
        days, _series(rows, "live_peers"), color="tab:orange", linewidth=1, label="live peers"
    )
    axes.set_ylabel("peers")
    axes.margins(y=0.15)  # autoscaled, not from 0: dips stay visible
    _legend(axes, marks)
    return _save(figure, out / "peers.png")


def _durability(
    rows: Sequence[dict[str, Any]], days: list[float], out: Path, info: PlotInfo
) -> Path:
    figure, panels = _figure(info, "Durability: objects as a share of those stored so far", 3)
    objects, lost = _series(rows, "objects"), _series(rows, "objects_lost")
    stored = [alive + gone for alive, gone in zip(objects, lost, strict=True)]
    one = min((100 / s for s in stored if s), default=1.0)  # one object, in %
    series = (
        ("objects_at_risk", "at risk: some chunk at or below m live fragments", "tab:orange"),
        ("objects_unavailable", "unavailable: some chunk below k live fragments", "tab:red"),
        ("objects_lost", "lost for good (cumulative)", "black"),
    )
    for axes, (column, label, color) in zip(panels, series, strict=True):
        marks = _shade(axes, info)
        counts = _series(rows, column)
        shares = [100 * v / s if s else 0.0 for v, s in zip(counts, stored, strict=True)]
        peak = max(counts, default=0.0)
        axes.plot(days, shares, color=color, linewidth=1.2, label=f"{label}; peak {peak:.0f}")
        hits = [(d, v) for d, v in zip(days, shares, strict=True) if v > 0]
        if len(hits) < len(days) / 4:  # rare events: mark each, so one object shows
            x, y = [d for d, _ in hits], [v for _, v in hits]
            axes.plot(x, y, linestyle="none", marker="o", color=color, markersize=4)
        axes.set_yscale("symlog", linthresh=max(one, 1e-6), linscale=0.6)
        top = max(max(shares, default=0.0) * 8, 3 * one)  # symlog: room for the legend
        axes.set_ylim(-0.15 * one, top)  # a series at 0 stays off the frame, visible
        axes.set_ylabel("% of objects")
        _legend(axes, marks)
    panels[0].set_title("symlog axes: linear below one object's share", fontsize=8, loc="right")
    return _save(figure, out / "durability.png")


def _repair(
    rows: Sequence[dict[str, Any]], days: list[float], out: Path, info: PlotInfo, every: str
) -> Path:
    figure, (traffic, rebuilt) = _figure(info, "Repair", panels=2)
    marks = _shade(traffic, info)
    _shade(rebuilt, info)
    traffic.step(
        days,
        [v / GIB for v in _series(rows, "repair_bytes_step")],
        where="pre",
        color="tab:blue",
        label=f"repair traffic over the network, per {every}",
    )
    traffic.set_ylabel(f"GiB per {every}")
    _legend(traffic, marks)
    rebuilt.plot(
        days, _series(rows, "fragments_rebuilt"), color="tab:red", label="fragments rebuilt"
    )
    rebuilt.set_ylabel("fragments (cumulative)")
    _legend(rebuilt, [])
    return _save(figure, out / "repair.png")


def _service(
    rows: Sequence[dict[str, Any]], days: list[float], out: Path, info: PlotInfo, every: str
) -> Path:
    figure, panels = _figure(info, f"Service, per {every}", panels=2)
    series = (
        ("get_availability_step", "gets that read every chunk", "tab:green", "."),
        ("lookup_success_step", "sampled lookups finding the closest live peer", "tab:blue", "x"),
    )
    for axes, (column, label, color, marker) in zip(panels, series, strict=True):
        marks = _shade(axes, info)
        values = _series(rows, column)
        shown = [v for v in values if not math.isnan(v)]
        worst = min(shown, default=1.0)
        axes.plot(
            days,
            [100 * v for v in values],
            linestyle="-",
            linewidth=0.6,
            marker=marker,
            markersize=3,
            color=color,
            label=f"{label}; lowest {100 * worst:.2f}%" if shown else f"{label}: none sampled",
        )
        low = 100 * worst
        pad = max(0.5, (100 - low) * 0.15)
        axes.set_ylim(low - pad, 100 + pad / 8)
        axes.set_ylabel("% of requests")
        _legend(axes, marks)
    return _save(figure, out / "service.png")
