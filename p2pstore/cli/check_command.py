"""``p2pstore check CAP [--repair]``: verify an object's fragments, and repair it, with the
verify cap alone.

Why a command as well as stewards: an operator who has just lost a datacenter, or an owner
who wants proof that an object is whole, should not have to wait for the next steward round.
The command runs the steward's own check (one batched question per holder) from the client's
seat; with ``--repair`` it rebuilds what is below the rule's threshold at once, counting
unreachable holders as lost (the operator overrides the grace period), and publishes its own
placement record with the new holders' receipts as a steward would.  It never sees the read
key or plaintext.  Each holder that signs for a fragment is also audited once (one random leaf
of one of its fragments, checked against the fragment id): a holder that fails is named and
the fragment it failed on counts lost at once, so ``--repair`` rebuilds it elsewhere.  What
the object's stewards learnt from their own audits stays on their nodes (metrics, ``/status``,
the ``audit_failed`` log events); this command shows what it proved itself.
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
from p2pstore.core.audit import Evidence
from p2pstore.core.repair_plan import Verdict
from p2pstore.identity import short_id
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
    fragments it has, and audited once on one of them (a failure counts that fragment lost
    and names the holder).  Exit status: 0 every chunk healthy (after --repair, if given), 3 some
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
        for line in audit_lines(report):
            console.print(line, markup=False, highlight=False)
    sys.exit(exit_status(report))


async def _check(config: ClientConfig, cap: ReadCap | VerifyCap, repair: bool) -> RoundReport:
    async with connected_client(config) as client:
        manifest = await client.fetch_manifest(cap.object_id)
        steward = Steward(client.dht, config.rules, client_settings=client.settings)
        return await steward.check_objects(
            [Known.of(manifest)], repair=repair, grace_period=0.0 if repair else None, audit=True
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
        "audits": [audit_json(report, e) for e in report.audits],
        "audit_failures": [audit_json(report, e) for e in report.audits if e.verdict.failed],
        "exit_status": exit_status(report),
    }


def audit_json(report: RoundReport, evidence: Evidence) -> dict[str, object]:
    """One audit of ``check``: the holder, the object and position, the verdict and evidence."""
    challenge = evidence.challenge
    where = [
        (watched.object_id.hex(), index, entry.fragment_ids.index(challenge.fragment_id))
        for watched in report.objects
        for index, entry in enumerate(watched.manifest.chunks)
        if challenge.fragment_id in entry.fragment_ids
    ]
    holder = next(
        (
            h
            for watched in report.objects
            for h in watched.placement.holders()
            if h.node_id == challenge.holder
        ),
        None,
    )
    return {
        "node_id": challenge.holder.hex(),
        "datacenter": holder.datacenter if holder is not None else None,
        "fragments": [{"object": o, "chunk": c, "share": s} for o, c, s in where],
        **{k: v for k, v in evidence.log_fields().items() if k != "holder"},
    }


def audit_lines(report: RoundReport) -> list[str]:
    """Each failed audit, naming the holder; or that every holder audited passed."""
    failed = [e for e in report.audits if e.verdict.failed]
    if not failed:
        if not report.audits:
            return []
        return [f"audits: each of the {len(report.audits)} holders proved one of its fragments"]
    lines = []
    for evidence in failed:
        entry = audit_json(report, evidence)
        lines.append(
            f"✗ holder {short_id(evidence.challenge.holder)} ({entry['datacenter'] or '?'}) "
            f"failed an audit ({evidence.verdict.value}): {evidence.reason}; the fragment is "
            "counted lost (--repair rebuilds it elsewhere); consider revoking its certificate"
        )
    return lines
