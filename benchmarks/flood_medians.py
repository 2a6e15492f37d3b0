"""Medians of several ``floods.py --json`` runs, one row per flood, as a markdown table.

Why: on a shared machine one window's figures swing by 2-5x with whatever else runs, so a
verdict is read from the median of the per-run ratios (each measured side by side, minutes
apart), with their range and how many runs met the target.

  python benchmarks/flood_medians.py run-1.json run-2.json run-3.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from flood_report import (
    LATENCY_TARGET,
    ROUNDS_SLACK,
    RSS_TARGET,
    THROUGHPUT_TARGET,
    FloodResult,
    Latency,
    MiB,
    Op,
    Window,
    expected,
    steward_rounds,
    verdicts,
)


def window_of(document: dict[str, object]) -> Window:
    """A :class:`Window` back from its JSON (NaN where the JSON has null)."""
    values = {f.name: document[f.name] for f in fields(Window) if f.name in document}
    for name in ("requests", "connects"):
        latency = dict(values[name])  # type: ignore[call-overload]
        values[name] = Latency(**{k: math.nan if v is None else v for k, v in latency.items()})
    for name in ("puts", "gets"):
        values[name] = [Op(**op) for op in values[name]]  # type: ignore[attr-defined]
    for name in ("admin_p99_ms", "cpu_seconds", "attacker_cpu_seconds"):
        if values.get(name) is None:
            values[name] = math.nan
    return Window(**values)  # type: ignore[arg-type]


def load(path: Path) -> list[FloodResult]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [
        FloodResult(row["flood"], window_of(row["without"]), window_of(row["with"]))
        for row in document["floods"]
    ]


@dataclass
class Figure:
    """One figure of one flood over the runs: its values and whether each met the target."""

    values: list[float]
    met: list[bool]

    def cell(self, text: Callable[[float], str]) -> str:
        finite = [v for v in self.values if not math.isnan(v)]
        if not finite:
            return "-"
        middle = statistics.median(finite)
        spread = f" [{text(min(finite))}-{text(max(finite))}]" if len(finite) > 1 else ""
        ok = sum(self.met)
        verdict = "PASS" if ok * 2 > len(self.met) else "**FAIL**"
        return f"{text(middle)}{spread} {verdict} {ok}/{len(self.met)}"


def ratio(flooded: float | None, without: float | None) -> float:
    if not without or flooded is None:
        return math.nan
    return flooded / without


def table(runs: Sequence[list[FloodResult]]) -> list[str]:
    by_flood: dict[str, list[FloodResult]] = {}
    for run in runs:
        for result in run:
            by_flood.setdefault(result.flood, []).append(result)
    head = [
        "flood", "runs", "idle RSS MiB", "peak Δ MiB (< +100)",
        "p50 / p99 ms without → with", "p99 ratio (≤ 5x)",
        "new conn. p99 ms without → with", "ratio (≤ 5x)",
        "put MiB/s without → with", "ratio (≥ 0.5)",
        "get MiB/s without → with", "ratio (≥ 0.5)",
        "steward rounds with / expected", "scrub passes with / expected",
        "target CPU s without → with (attacker)", "node: exited, errors, internal errors",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for flood, results in by_flood.items():
        ok = [verdicts(r) for r in results]
        med = statistics.median

        growth = Figure([(r.flooded.peak_rss - r.flooded.idle_rss) / MiB for r in results],
                        [v.rss for v in ok])  # fmt: skip
        p99 = Figure([ratio(r.flooded.requests.p99_ms, r.without.requests.p99_ms) for r in results],
                     [v.latency for v in ok])  # fmt: skip
        connect = Figure(
            [ratio(r.flooded.connects.p99_ms, r.without.connects.p99_ms) for r in results],
            [v.connect for v in ok],
        )
        put = Figure([ratio(r.flooded.put_rate, r.without.put_rate) for r in results],
                     [v.put for v in ok])  # fmt: skip
        get = Figure([ratio(r.flooded.get_rate, r.without.get_rate) for r in results],
                     [v.get for v in ok])  # fmt: skip
        rounds = [steward_rounds(r) for r in results]
        passes = [(r.flooded.scrub_passes, expected(r.without.scrub_passes, r)) for r in results]
        node = [
            (r.flooded.exited is not None, r.flooded.log.get("errors", 0),
             r.flooded.log.get("internal_errors", 0))
            for r in results
        ]  # fmt: skip
        cells = [
            flood,
            str(len(results)),
            f"{med([r.flooded.idle_rss / MiB for r in results]):,.0f}",
            growth.cell(lambda v: f"{v:+,.0f}"),
            latencies(results),
            p99.cell(lambda v: f"{v:.1f}x"),
            medians(results, lambda w: w.connects.p99_ms, "{:,.0f}"),
            connect.cell(lambda v: f"{v:.1f}x"),
            medians(results, lambda w: w.put_rate, "{:.1f}"),
            put.cell(lambda v: f"{v:.2f}"),
            medians(results, lambda w: w.get_rate, "{:.1f}"),
            get.cell(lambda v: f"{v:.2f}"),
            kept_cell(rounds, [v.steward for v in ok]),
            kept_cell(passes, [v.scrub for v in ok]),
            medians(results, lambda w: w.cpu_seconds, "{:.1f}")
            + f" ({statistics.median(r.flooded.attacker_cpu_seconds for r in results):.1f})",
            f"{sum(e for e, _, _ in node)} exited, {sum(e for _, e, _ in node)} errors, "
            f"{sum(i for _, _, i in node)} internal"
            + (" PASS" if not any(any(n) for n in node) else " **FAIL**"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def medians(
    results: Sequence[FloodResult], get: Callable[[Window], float | None], text: str
) -> str:
    """The median of a figure without → with the flood."""
    without = [v for r in results if (v := get(r.without)) is not None] or [math.nan]
    flooded = [v for r in results if (v := get(r.flooded)) is not None] or [math.nan]
    return f"{text.format(statistics.median(without))} → {text.format(statistics.median(flooded))}"


def latencies(results: Sequence[FloodResult]) -> str:
    """Median p50 / p99 of the honest requests, without → with the flood."""

    def of(windows: list[Window]) -> str:
        p50 = statistics.median(w.requests.p50_ms for w in windows)
        p99 = statistics.median(w.requests.p99_ms for w in windows)
        return f"{p50:,.1f} / {p99:,.0f}"

    return f"{of([r.without for r in results])} → {of([r.flooded for r in results])}"


def kept_cell(pairs: list[tuple[float, float]], met: list[bool | None]) -> str:
    """Every run's (seen / expected), and how many kept their schedule."""
    runs = ", ".join(f"{seen:.0f}/{wanted:.1f}" for seen, wanted in pairs)
    judged = [m for m in met if m is not None]
    ok = sum(1 for m in judged if m)
    verdict = "PASS" if judged and ok * 2 > len(judged) else "**FAIL**" if judged else "n/a"
    return f"{runs} {verdict} {ok}/{len(judged)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="outputs of floods.py --json")
    args = parser.parse_args()
    runs = [load(path) for path in args.runs]
    print("\n".join(table(runs)))
    print()
    print(
        f"median [min-max] over {len(runs)} run(s) of each figure's ratio with/without the "
        f"flood (each run measures both, minutes apart); PASS when most runs met the target "
        f"(k/N: runs that met it): peak RSS under idle + {RSS_TARGET / MiB:.0f} MiB, p99 within "
        f"{LATENCY_TARGET:g}x, put and get at least {THROUGHPUT_TARGET:.0%} of their speed, "
        f"rounds and passes at least those without scaled to the window, less "
        f"{ROUNDS_SLACK:.0%} (at least one)"
    )


if __name__ == "__main__":
    main()
