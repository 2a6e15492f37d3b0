"""What ``floods.py`` measures in each window, how each figure is judged, and the report.

Why a module of its own: the harness (``floods.py``) drives processes; this says what a figure
is and what it must reach, so the table, the JSON and the verdicts cannot drift apart.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from repair import http_get

from p2pstore.cli.local_mesh import LOCAL_RULES

MiB = 1024 * 1024
RULE = LOCAL_RULES["standard"]
"""The honest client's rule (the nodes declare the local mesh's rules)."""

FLOODS = {
    "ping": "300,000 Pings pipelined by a client that never reads its replies",
    "handshake": "200 TCP connections that never start TLS, reopened when closed",
    "partial": "24 connections of one client certificate, each holding a 16 MiB frame open",
    "findnode": "FindNode pipelined by one client, 10,000 kept in flight",
}
RSS_TARGET = 100 * MiB
LATENCY_TARGET = 5.0
THROUGHPUT_TARGET = 0.5
ROUNDS_SLACK = 0.1

REQUEST_TIMEOUT = 5.0
"""Seconds an honest request may take; a failed one counts as this long."""
CONNECT_TIMEOUT = 10.0
"""Seconds a new honest connection (TCP, TLS, Hello, Ping) may take; likewise."""


@dataclass(frozen=True)
class Options:
    """The run's settings (the command line's)."""

    floods: tuple[str, ...]
    nodes: int
    duration: float
    size: int
    ops: int
    op_timeout: float
    check_interval: float
    scrub_interval: float
    rss_limit: int
    keep: bool
    progress: Callable[[str], None]


# --- what is read from the target -------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes, or None if the process is gone."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    found[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        return None
    if "VmRSS" not in found:
        return None  # a zombie
    return found["VmRSS"], found.get("VmHWM", found["VmRSS"])


@dataclass(frozen=True)
class Scrape:
    """One poll of the target's /metrics."""

    at: float
    seconds: float
    steward_rounds: float
    scrub_passes: float


async def scrape(admin: str) -> Scrape | None:
    started = time.monotonic()
    body = await http_get(admin, "/metrics")
    if body is None:
        return None
    rounds = passes = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "p2pstore_steward_rounds_total":
                rounds += sample.value
            elif sample.name == "p2pstore_scrub_passes_total":
                passes += sample.value
    return Scrape(time.time(), time.monotonic() - started, rounds, passes)


def log_summary(path: Path, start: float, end: float) -> dict[str, int]:
    """Lines the node logged in [start, end]: all, error-level or worse, internal errors."""
    summary = {"lines": 0, "errors": 0, "internal_errors": 0}
    if not path.exists():
        return summary
    with path.open(encoding="utf-8", errors="replace") as log_file:
        for line in log_file:
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["time"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if start <= at <= end:
                summary["lines"] += 1
                summary["errors"] += entry.get("level") in ("error", "critical")
                summary["internal_errors"] += entry.get("event") == "internal_error"
    return summary


def json_lines(path: Path) -> list[dict[str, object]]:
    """The JSON objects among a child's output lines (tracebacks are skipped)."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Latency:
    """Probes of one kind in one window; a failed probe counts as its timeout."""

    count: int = 0
    failed: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan

    @classmethod
    def of(cls, probes: Sequence[dict[str, object]], timeout: float) -> Latency:
        values = [float(str(p["ms"])) if p["ms"] is not None else timeout * 1000 for p in probes]
        if not values:
            return cls()
        failed = sum(1 for p in probes if p["ms"] is None)
        return cls(len(values), failed, percentile(values, 0.5), percentile(values, 0.99))


@dataclass
class Op:
    """One put or get: seconds spent, bytes done (0 if it failed), why it failed."""

    seconds: float
    bytes: int
    error: str | None = None


def rate(ops: Sequence[Op]) -> float | None:
    """MiB/s over the operations: bytes done over time spent (None: no operation ran)."""
    spent = sum(op.seconds for op in ops)
    return sum(op.bytes for op in ops) / MiB / spent if spent > 0 else None


@dataclass
class Window:
    """What one window (without or with the flood) measured."""

    flooded: bool
    start: float = 0.0
    end: float = 0.0
    idle_rss: int = 0
    peak_rss: int = 0
    after_rss: int | None = None
    rss_limit_hit: bool = False
    requests: Latency = field(default_factory=Latency)
    connects: Latency = field(default_factory=Latency)
    join_seconds: float | None = None
    join_error: str | None = None
    puts: list[Op] = field(default_factory=list)
    gets: list[Op] = field(default_factory=list)
    steward_rounds: float = 0.0
    scrub_passes: float = 0.0
    scrape_span: float = 0.0
    scrapes_ok: int = 0
    scrapes_failed: int = 0
    admin_p99_ms: float = math.nan
    cpu_seconds: float = math.nan
    """CPU time the target used in the window (user + system)."""
    attacker_cpu_seconds: float = math.nan
    """CPU time the attacker's process used in the window: taken from the same cores."""
    exited: int | None = None
    log: dict[str, int] = field(default_factory=dict)
    attacker: dict[str, object] = field(default_factory=dict)

    @property
    def put_rate(self) -> float | None:
        return rate(self.puts)

    @property
    def get_rate(self) -> float | None:
        return rate(self.gets)


# --- the results ------------------------------------------------------------------------------


@dataclass
class FloodResult:
    flood: str
    without: Window
    flooded: Window


@dataclass
class Ceilings:
    """The machine's own figures, measured in the same run."""

    tcp_rtt_p50_ms: float
    tcp_rtt_p99_ms: float
    put_mib_s: float
    get_mib_s: float


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdicts:
    rss: bool
    latency: bool
    connect: bool
    put: bool
    get: bool
    steward: bool | None
    scrub: bool | None
    node: bool


def expected(without: float, result: FloodResult) -> float:
    """Rounds the flooded window should have seen: the window without, scaled to its length."""
    base, flooded = result.without.scrape_span, result.flooded.scrape_span
    return without * flooded / base if base > 0 else 0.0


def steward_rounds(result: FloodResult) -> tuple[float, float]:
    """(rounds with the flood, rounds expected), from ``p2pstore_steward_rounds_total``."""
    return result.flooded.steward_rounds, expected(result.without.steward_rounds, result)


def kept(seen: float, wanted: float) -> bool | None:
    """None when the window without the flood saw no round: nothing to compare with."""
    if wanted <= 0:
        return None
    return seen >= wanted - max(1.0, ROUNDS_SLACK * wanted)


def at_least_half(without: float | None, flooded: float | None) -> bool:
    return bool(without) and (flooded or 0.0) >= THROUGHPUT_TARGET * (without or 0.0)


def verdicts(result: FloodResult) -> Verdicts:
    without, flooded = result.without, result.flooded
    rounds, wanted = steward_rounds(result)
    return Verdicts(
        rss=flooded.peak_rss - flooded.idle_rss < RSS_TARGET and flooded.exited is None,
        latency=flooded.requests.p99_ms <= LATENCY_TARGET * without.requests.p99_ms,
        connect=flooded.connects.p99_ms <= LATENCY_TARGET * without.connects.p99_ms,
        put=at_least_half(without.put_rate, flooded.put_rate),
        get=at_least_half(without.get_rate, flooded.get_rate),
        steward=kept(rounds, wanted),
        scrub=kept(flooded.scrub_passes, expected(without.scrub_passes, result)),
        node=flooded.exited is None
        and flooded.log.get("internal_errors", 0) == 0
        and flooded.log.get("errors", 0) == 0,
    )


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "**FAIL**"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MiB:,.0f}"


def ms(latency: Latency) -> str:
    if latency.count == 0:
        return "-"
    failed = f" ({latency.failed} failed)" if latency.failed else ""
    return f"{latency.p50_ms:,.1f} / {latency.p99_ms:,.0f}{failed}"


def speed(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary(result: FloodResult, options: Options) -> str:
    """One flood in one line (so a later failure does not lose it)."""
    without, flooded = result.without, result.flooded
    return (
        f"{result.flood}: RSS {mib(flooded.idle_rss)} -> {mib(flooded.peak_rss)} MiB; p99 "
        f"{without.requests.p99_ms:.0f} -> {flooded.requests.p99_ms:.0f} ms, new connection "
        f"{without.connects.p99_ms:.0f} -> {flooded.connects.p99_ms:.0f} ms; put "
        f"{speed(without.put_rate)} -> {speed(flooded.put_rate)}, get {speed(without.get_rate)}"
        f" -> {speed(flooded.get_rate)} MiB/s; scrub passes {without.scrub_passes:.0f} -> "
        f"{flooded.scrub_passes:.0f}; target CPU {without.cpu_seconds:.1f} -> "
        f"{flooded.cpu_seconds:.1f} s (attacker {flooded.attacker_cpu_seconds:.1f} s)"
    )


def print_report(
    results: list[FloodResult], ceilings: Ceilings, setup: dict[str, object], options: Options
) -> None:
    print(
        f"p2pstore floods: {options.nodes} node processes (mutual TLS on loopback, one "
        f"datacenter each), target {setup['target']}; windows of {options.duration:g} s without "
        f"and with each flood; {setup['cores']} cores shared by the nodes, the attacker, the "
        "prober and this client"
    )
    print(
        f"honest put/get: {options.ops} x {options.size / MiB:g} MiB per window, rule "
        f"{RULE.name} {RULE.k}-of-{RULE.n}, a fresh client joined through node-1; steward "
        f"rounds every {options.check_interval:g} s, scrub passes every "
        f"{options.scrub_interval:g} s"
    )
    print()
    head = [
        "flood", "idle RSS MiB", "peak without", "peak with", "Δ (< +100 MiB)", "after",
        "p50 / p99 ms without", "p50 / p99 ms with", "p99 (≤ 5x)",
        "new conn. p50 / p99 ms without → with (≤ 5x)",
        "put MiB/s without → with (≥ 50%)", "get MiB/s without → with (≥ 50%)",
        "steward rounds with / expected", "scrub passes with / expected",
        "target CPU s without → with (attacker)", "node under flood",
    ]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for result in results:
        without, flooded = result.without, result.flooded
        ok = verdicts(result)
        rounds, wanted = steward_rounds(result)
        passes_wanted = expected(without.scrub_passes, result)
        growth = flooded.peak_rss - flooded.idle_rss
        limit = " (stopped at --rss-limit)" if flooded.rss_limit_hit else ""
        ratio = flooded.requests.p99_ms / without.requests.p99_ms
        node = (
            f"exited ({flooded.exited})"
            if flooded.exited is not None
            else f"up; {flooded.log.get('errors', 0)} errors, "
            f"{flooded.log.get('internal_errors', 0)} internal; "
            f"{flooded.log.get('lines', 0):,} log lines; admin p99 {flooded.admin_p99_ms:,.0f} ms"
        )
        cells = [
            result.flood,
            mib(flooded.idle_rss),
            mib(without.peak_rss),
            mib(flooded.peak_rss),
            f"{growth / MiB:+,.0f}{limit} {mark(ok.rss)}",
            mib(flooded.after_rss),
            ms(without.requests),
            ms(flooded.requests),
            f"{ratio:,.1f}x {mark(ok.latency)}",
            f"{ms(without.connects)} → {ms(flooded.connects)} {mark(ok.connect)}",
            f"{speed(without.put_rate)} → {speed(flooded.put_rate)} {mark(ok.put)}",
            f"{speed(without.get_rate)} → {speed(flooded.get_rate)} {mark(ok.get)}",
            f"{rounds:.0f} / {wanted:.1f} {mark(ok.steward)}",
            f"{flooded.scrub_passes:.0f} / {passes_wanted:.1f} {mark(ok.scrub)}",
            f"{without.cpu_seconds:.1f} → {flooded.cpu_seconds:.1f} "
            f"({flooded.attacker_cpu_seconds:.1f})",
            f"{node} {mark(ok.node)}",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        f"machine ceiling, same run: raw loopback TCP round trip (64 B, two processes) p50 "
        f"{ceilings.tcp_rtt_p50_ms:.3f} ms, p99 {ceilings.tcp_rtt_p99_ms:.3f} ms; 1-core "
        f"pipeline of a {options.size / MiB:g} MiB {RULE.k}-of-{RULE.n} put "
        f"{ceilings.put_mib_s:.0f} MiB/s, get {ceilings.get_mib_s:.0f} MiB/s"
    )
    print(
        "latency: an honest client's Ping/FindNode on its session every 50 ms, and a new "
        f"connection (TCP + TLS + Hello + Ping) every 1 s; failed probes count as their timeout "
        f"({REQUEST_TIMEOUT:g} s, {CONNECT_TIMEOUT:g} s)"
    )
    for result in results:
        flooded = result.flooded
        attack = ", ".join(
            f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}"
            for key, value in flooded.attacker.items()
            if key not in ("event", "flood") and value
        )
        failures = [op.error for op in (*flooded.puts, *flooded.gets) if op.error]
        print(
            f"  {result.flood}: {FLOODS[result.flood]}; attacker: {attack or 'no report'}"
            + (f"; honest ops failed: {failures[0]}" if failures else "")
            + (f"; join failed: {flooded.join_error}" if flooded.join_error else "")
        )


def as_json(
    results: list[FloodResult], ceilings: Ceilings, setup: dict[str, object], options: Options
) -> object:
    """Every window's figures, the verdicts and the ceilings, as JSON values."""

    def window(w: Window) -> dict[str, object]:
        return {**asdict(w), "put_mib_s": w.put_rate, "get_mib_s": w.get_rate}

    rows = []
    for result in results:
        rounds, wanted = steward_rounds(result)
        rows.append(
            {
                "flood": result.flood,
                "description": FLOODS[result.flood],
                "without": window(result.without),
                "with": window(result.flooded),
                "steward_rounds": {"with": rounds, "expected": wanted},
                "scrub_passes": {
                    "with": result.flooded.scrub_passes,
                    "expected": expected(result.without.scrub_passes, result),
                },
                "pass": asdict(verdicts(result)),
            }
        )
    settings = {k: v for k, v in asdict(options).items() if k != "progress"}
    return finite({"setup": {**setup, **settings}, "ceilings": asdict(ceilings), "floods": rows})


def finite(value: object) -> object:
    """``value`` with NaN (a figure nothing measured) as None, so the JSON is strict."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
