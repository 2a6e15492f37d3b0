"""The data-path and repair benchmarks on this tree and on older revisions, side by side in one run.

Why: what a feature costs is a ratio, and on a shared machine only figures taken in the same
hour, alternating, compare.  Issue 13's target: receipts and audits cost under 5% of put and get
throughput, measured with ``datapath.py`` and ``repair.py``.

Each ``--baseline REV`` is exported with ``git archive`` into a temporary directory (the
repository is not touched: no worktree, no checkout).  Variants: every baseline, this tree,
and with ``--audits-per-hour N`` this tree with every node auditing at N challenges per
holder per hour (the default floor is 4: at the default rate a run of minutes sees almost no
audit, so this shows what audits cost when they do run).  Each run takes every variant in
turn, in an order rotated from run to run:

- ``datapath.py --json --repeat 1`` from this tree, with ``PYTHONPATH`` set to the variant's
  tree (the script's imports are the same on every revision since the Merkle ids; the node
  processes inherit ``PYTHONPATH``): put and get of the standard 4-of-8 and 3-of-10 rules,
  MiB/s, the client's and the nodes' CPU ms per MiB, and the 1-core ceiling measured beside it;
- ``repair.py --json`` of the variant's own tree (its metric names changed with the receipts):
  repair MiB/s and noticed -> full, ``--repair-mode`` delete by default (no grace wait;
  ``--no-repair`` skips it); a repair run that fails is counted and reported, not fatal.

The report gives, per figure, each variant's median [min-max] and the median of the per-run
ratios to the first variant (the run's own pair, so slow periods of the machine cancel out).

Run: ``python benchmarks/versus.py --baseline 5bf6d34 --runs 3`` (about 8 min per run with two
variants and repair); ``--size``, ``--repair-size``, ``--json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
MiB = 1024 * 1024


@dataclass
class Variant:
    name: str
    tree: Path
    extra: tuple[str, ...] = ()
    datapath: list[dict[str, list[float]]] = field(default_factory=list)
    repair: list[list[dict[str, object]]] = field(default_factory=list)
    failures: int = 0
    """Repair runs that failed (the report says how many)."""


def export(revision: str, into: Path) -> Path:
    """The revision's files under ``into/revision`` (``git archive``, no repository change)."""
    archive = subprocess.run(
        ["git", "-C", str(TREE), "archive", revision], check=True, capture_output=True
    ).stdout
    target = into / revision
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def run_json(argv: list[str], tree: Path, *, required: bool = True) -> object:
    """Run a benchmark script with ``tree`` first on PYTHONPATH; its JSON stdout (None if it
    failed and is not ``required``)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    print("  $ PYTHONPATH=" + str(tree) + " " + " ".join(argv[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, check=False)
    if done.returncode != 0 and not required:
        print(f"  {argv[1]} failed (exit {done.returncode}): counted", file=sys.stderr)
        return None
    if done.returncode != 0:
        raise SystemExit(f"{argv[1]} failed (exit {done.returncode}) on {tree}")
    return json.loads(done.stdout)


def one_run(variant: Variant, args: argparse.Namespace) -> None:
    size = f"{args.size}MiB"
    datapath = [sys.executable, str(HERE / "datapath.py"), "--json", "--repeat", "1"]
    result = run_json([*datapath, "--size", size, *variant.extra], variant.tree)
    assert isinstance(result, dict)
    variant.datapath.append(result["samples"])
    if args.repair and not variant.extra:  # the audit rate is a datapath.py option
        repair = [sys.executable, str(variant.tree / "benchmarks" / "repair.py"), "--json"]
        rows = run_json(
            [
                *repair,
                "--size",
                f"{args.repair_size}MiB",
                "--mode",
                args.repair_mode,
                "--timeout",
                "120",
            ],
            variant.tree,
            required=False,
        )
        if rows is None:
            variant.failures += 1
        else:
            assert isinstance(rows, list)
            variant.repair.append(rows)


def figures(variant: Variant) -> dict[str, list[float]]:
    """Per figure name, one value per run."""
    out: dict[str, list[float]] = {}
    for samples in variant.datapath:
        for name, values in samples.items():
            if name.endswith((" put", " get")):
                out.setdefault(f"{name} MiB/s", []).append(values[0])
                rel = values[0] / samples[f"{name} ceiling"][0]
                out.setdefault(f"{name} of ceiling", []).append(rel)
            if " ms/MiB " in name:
                out.setdefault(name, []).append(values[0])
        for op in {n.rsplit(" ms/MiB ", 1)[0] for n in samples if " ms/MiB " in n}:
            total = samples[f"{op} ms/MiB client"][0] + samples[f"{op} ms/MiB nodes"][0]
            out.setdefault(f"{op} ms/MiB client+nodes", []).append(total)
    for rows in variant.repair:
        for row in rows:
            out.setdefault(f"repair {row['mode']} MiB/s", []).append(float(str(row["rate"])))
            noticed = float(str(row["noticed_to_full"]))
            out.setdefault(f"repair {row['mode']} noticed->full s", []).append(noticed)
    return out


def report(variants: list[Variant], runs: int) -> dict[str, object]:
    base = figures(variants[0])
    table = {v.name: figures(v) for v in variants}
    names = list(base)
    print(
        f"median of {runs} alternating run(s) [min-max]; ratio: median of the per-run ratios "
        f"to {variants[0].name}"
    )
    width = max(len(n) for n in names) + 1
    head = f"{'figure':{width}}" + "".join(
        f"{v.name:>24}" + ("" if v is variants[0] else f"{'ratio':>8}") for v in variants
    )
    print(head)
    print("-" * len(head))
    out: dict[str, object] = {}
    for name in names:
        cells = []
        for v in variants:
            values = table[v.name].get(name, [])
            if not values:
                cells.append(f"{'-':>24}" + ("" if v is variants[0] else f"{'':8}"))
                continue
            spec = ".1%" if name.endswith("of ceiling") else ".1f"

            def fmt(x: float, spec: str = spec) -> str:
                return format(x, spec)

            cell = f"{fmt(statistics.median(values))} [{fmt(min(values))}-{fmt(max(values))}]"
            cells.append(f"{cell:>24}")
            if v is not variants[0]:
                pairs = zip(values, base[name], strict=False)
                ratio = statistics.median(a / b for a, b in pairs if b)
                cells.append(f"{ratio:8.3f}")
                out.setdefault(name, {})[v.name] = {"values": values, "ratio": ratio}  # type: ignore[index]
            else:
                out.setdefault(name, {})[v.name] = {"values": values}  # type: ignore[index]
        print(f"{name:{width}}" + "".join(cells))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="append", required=True, metavar="REV")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="datapath object, MiB (128)")
    parser.add_argument("--repair-size", type=int, default=64, help="repair object, MiB (64)")
    parser.add_argument("--no-repair", dest="repair", action="store_false")
    parser.add_argument("--repair-mode", choices=("kill", "delete", "both"), default="delete")
    parser.add_argument("--audits-per-hour", type=float, metavar="N")
    parser.add_argument("--json", action="store_true", help="also print every value as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pstore-versus-") as tmp:
        variants = [Variant(rev, export(rev, Path(tmp))) for rev in args.baseline]
        variants.append(Variant("this tree", TREE))
        if args.audits_per_hour is not None:
            extra = ("--audits-per-hour", repr(args.audits_per_hour))
            variants.append(Variant(f"audits {args.audits_per_hour:g}/h", TREE, extra))
        for run in range(args.runs):
            turn = variants[run % len(variants) :] + variants[: run % len(variants)]
            for variant in turn:
                print(f"run {run + 1}/{args.runs}: {variant.name}", file=sys.stderr, flush=True)
                one_run(variant, args)
        print(
            f"datapath.py {args.size} MiB, 1 repetition per run; "
            + (
                f"repair.py {args.repair_size} MiB, mode {args.repair_mode}; "
                if args.repair
                else ""
            )
            + f"{os.cpu_count()} cores"
        )
        out = report(variants, args.runs)
        for variant in variants:
            if variant.failures:
                print(f"{variant.name}: {variant.failures} repair run(s) failed (not counted)")
        if args.json:
            json.dump(out, sys.stdout, indent=1)
            print()


if __name__ == "__main__":
    main()
