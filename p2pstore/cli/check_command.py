"""``p2pstore check CAP [--repair]``: verify an object's fragments, and repair it, with the
verify cap alone.

Why a command as well as stewards: an operator who has just lost a datacenter, or an owner
who wants proof that an object is whole, should not have to wait for the next steward round.
The command runs the steward's own check (one batched question per holder) from the client's
seat; with ``--repair`` it rebuilds what is below the rule's threshold at once, counting
unreachable holders as lost (the operator overrides the grace period), and publishes its own
placement record with the new holders' receipts as a steward would.  It never sees the read
key or plaintext.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import trio
from rich.console import Console
from rich.table import Table

from p2pstore.cli.client_config import ClientConfig, connected_client, load_client_config
from p2pstore.cli.object_commands import config_option, json_option
from p2pstore.codec import ReadCap, VerifyCap
from p2pstore.codec.capability import CapabilityError, parse_capability
from p2pstore.core.repair_plan import Verdict
from p2pstore.net.repairer import Known
from p2pstore.net.steward import RoundReport, Steward

EXIT_DEGRADED = 3
EXIT_UNREADABLE = 4

_WORDS = {
    Verdict.HEALTHY: "healthy",
    Verdict.AT_RISK: "below threshold, waiting for grace",
    Verdict.NEEDS_REPAIR: "repair due",
    Verdict.LOST: "UNREADABLE (fewer than k)",
}


def _capability(ctx: click.Context, param: click.Parameter, value: str) -> ReadCap | VerifyCap:
    try:
        return parse_capability(value)
    except CapabilityError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.argument("cap", callback=_capability, metavar="CAP")
@config_option
@click.option(
    "--repair",
    is_flag=True,
    help="Rebuild chunks below the rule's repair threshold now, counting holders that do not "
    "answer as lost (no grace period).",
)
@json_option
def check(cap: ReadCap | VerifyCap, config_path: Path, repair: bool, as_json: bool) -> None:
    """Verify that every fragment of CAP's object is held, chunk by chunk.

    A verify cap is enough: nothing is decrypted.  Each holder is asked once which of its
    fragments it has.  Exit status: 0 every chunk healthy (after --repair, if given), 3 some
    chunk below its repair threshold but readable, 4 some chunk has fewer than k fragments
    (unreadable), 1 the check itself failed.
    """
    config = load_client_config(config_path)
    report = trio.run(_check, config, cap, repair)
    if as_json:
        json.dump(report_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        console = Console()
        console.print(report_table(report))
        for failure in report.failures:
            console.print(f"[yellow]![/yellow] {failure}", markup=True, highlight=False)
    sys.exit(exit_status(report))


async def _check(config: ClientConfig, cap: ReadCap | VerifyCap, repair: bool) -> RoundReport:
    async with connected_client(config) as client:
        manifest = await client.fetch_manifest(cap.object_id)
        steward = Steward(client.dht, config.rules, client_settings=client.settings)
        return await steward.check_objects(
            [Known.of(manifest)], repair=repair, grace_period=0.0 if repair else None
        )


def final_verdicts(report: RoundReport) -> list[Verdict]:
    """Each chunk's verdict once the check's repairs are counted (a repaired chunk is whole)."""
    repaired = {(r.object_id, r.chunk) for r in report.repairs}
    verdicts: list[Verdict] = []
    for watched in report.objects:
        for index, assessment in enumerate(watched.assessments):
            done = (watched.object_id, index) in repaired
            verdicts.append(Verdict.HEALTHY if done else assessment.verdict)
    return verdicts


def exit_status(report: RoundReport) -> int:
    """0 healthy, 3 degraded but readable, 4 unreadable (1 if the object was not checked)."""
    verdicts = final_verdicts(report)
    if not report.objects:
        return 1
    if Verdict.LOST in verdicts:
        return EXIT_UNREADABLE
    if any(v is not Verdict.HEALTHY for v in verdicts):
        return EXIT_DEGRADED
    return 0


def report_table(report: RoundReport) -> Table:
    """Per chunk: live, silent and lost fragments against k, threshold and n, and repairs."""
    table = Table(title="object check")
    for column in ("chunk", "live", "silent", "lost", "rule", "state", "repaired"):
        table.add_column(
            column, justify="right" if column in {"live", "silent", "lost"} else "left"
        )
    repairs = {(r.object_id, r.chunk): r for r in report.repairs}
    for watched in report.objects:
        rule = watched.rule
        for index, assessment in enumerate(watched.assessments):
            done = repairs.get((watched.object_id, index))
            moved = (
                ", ".join(
                    f"{share}→{holder.datacenter}"
                    for share, holder in zip(done.shares, done.holders, strict=True)
                )
                if done
                else ""
            )
            table.add_row(
                str(index),
                str(len(assessment.live)),
                str(len(assessment.silent)),
                str(len(assessment.lost)),
                f"{rule.name}: k={rule.k}, repair below {rule.repair_threshold}, n={rule.n}",
                "repaired" if done else _WORDS[assessment.verdict],
                moved,
            )
    return table


def report_json(report: RoundReport) -> dict[str, object]:
    """The report as plain data for ``--json``."""
    repairs = {(r.object_id, r.chunk): r for r in report.repairs}
    objects = []
    for watched in report.objects:
        rule = watched.rule
        chunks = []
        for index, assessment in enumerate(watched.assessments):
            done = repairs.get((watched.object_id, index))
            chunks.append(
                {
                    "chunk": index,
                    "live": list(assessment.live),
                    "silent": list(assessment.silent),
                    "lost": list(assessment.lost),
                    "verdict": assessment.verdict.value,
                    "repaired": [
                        {"share": s, "node": h.node_id.hex(), "datacenter": h.datacenter}
                        for s, h in zip(done.shares, done.holders, strict=True)
                    ]
                    if done
                    else [],
                }
            )
        objects.append(
            {
                "object": watched.object_id.hex(),
                "rule": rule.name,
                "k": rule.k,
                "n": rule.n,
                "repair_threshold": rule.repair_threshold,
                "chunks": chunks,
            }
        )
    return {
        "objects": objects,
        "queries": report.queries,
        "failures": report.failures,
        "exit_status": exit_status(report),
    }
