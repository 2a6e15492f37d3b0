"""How ``p2pstore stat`` (and the demo) shows an object: each chunk's state against its rule,
who holds what and signs for it, what an audit found; as a table for people and as JSON for
scripts.  Rendering only: the status itself comes from :meth:`Client.stat`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.table import Table

from p2pstore.codec import Manifest
from p2pstore.core.audit import Evidence
from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.identity import short_id
from p2pstore.net.status import ObjectStatus

HEALTHY = "healthy"
DEGRADED = "degraded"
UNREADABLE = "unreadable"
_WORST_FIRST = (UNREADABLE, DEGRADED, HEALTHY)


def manifest_rule(
    manifest: Manifest, rules: Mapping[str, CodingRule]
) -> tuple[CodingRule | None, str | None]:
    """The rule named in ``manifest`` as ``rules`` declare it, or None and why it is unknown
    (not declared, or declared with another k and n, as a steward would refuse it)."""
    rule = rules.get(manifest.rule)
    if rule is None:
        return None, (
            f"rule {manifest.rule!r} is unknown to this client: declare the mesh's "
            f"[rules.{manifest.rule}] in the client's config to see its repair threshold"
        )
    if (rule.k, rule.n) != (manifest.k, manifest.n):
        return None, (
            f"rule {manifest.rule!r} is {rule.k}-of-{rule.n} in this client's config, but the "
            f"object was stored {manifest.k}-of-{manifest.n}: the configs disagree with the mesh's"
        )
    return rule, None


def chunk_state(live: int, k: int, n: int, threshold: int | None) -> str:
    """healthy (live >= threshold), degraded (k <= live < threshold: repair due) or
    unreadable (live < k).  With no known threshold, only ``n`` live is healthy."""
    if live < k:
        return UNREADABLE
    return HEALTHY if live >= (n if threshold is None else threshold) else DEGRADED


def chunk_states(status: ObjectStatus, rules: Mapping[str, CodingRule]) -> list[str]:
    """Each chunk's state under the manifest's rule as ``rules`` know it."""
    manifest = status.manifest
    rule, _problem = manifest_rule(manifest, rules)
    threshold = rule.repair_threshold if rule else None
    return [
        chunk_state(status.live(index), manifest.k, manifest.n, threshold)
        for index in range(len(status.present))
    ]


def health(status: ObjectStatus, rules: Mapping[str, CodingRule] = SHIPPED_RULES) -> str:
    """The object's state: its worst chunk's (see :func:`chunk_state`)."""
    states = set(chunk_states(status, rules))
    return next((state for state in _WORST_FIRST if state in states), HEALTHY)


def stat_summary(
    status: ObjectStatus, rules: Mapping[str, CodingRule] = SHIPPED_RULES
) -> dict[str, Any]:
    """What ``stat --json`` prints."""
    manifest = status.manifest
    rule, problem = manifest_rule(manifest, rules)
    threshold = rule.repair_threshold if rule else None
    states = chunk_states(status, rules)
    chunks = []
    for index, row in enumerate(status.placement.chunks):
        shares = []
        for share, holder in enumerate(row):
            shares.append(
                {
                    "share": share,
                    "fragment_id": manifest.chunks[index].fragment_ids[share].hex(),
                    "node_id": holder.node_id.hex() if holder else None,
                    "datacenter": holder.datacenter if holder else None,
                    "region": holder.region if holder else None,
                    "present": status.present[index][share],
                    "leaving": holder is not None and holder.node_id in status.leaving,
                    "receipt": receipt_json(status, index, share, holder.node_id)
                    if holder
                    else None,
                    "holders": [
                        {
                            "node_id": h.node_id.hex(),
                            "datacenter": h.datacenter,
                            "region": h.region,
                            "present": status.answer(index, share, h.node_id),
                            "leaving": h.node_id in status.leaving,
                            "receipt": receipt_json(status, index, share, h.node_id),
                        }
                        for h in status.placement.holders_of(index, share)
                    ],
                }
            )
        chunks.append(
            {
                "chunk": index,
                "live": status.live(index),
                "k": manifest.k,
                "repair_threshold": threshold,
                "n": manifest.n,
                "state": states[index],
                "fragments": shares,
            }
        )
    return {
        "size": manifest.plaintext_size,
        "rule": manifest.rule,
        "k": manifest.k,
        "n": manifest.n,
        "repair_threshold": threshold,
        "grace_period": rule.grace_period if rule else None,
        "rule_known": rule is not None,
        "rule_problem": problem,
        "chunk_size": manifest.chunk_size,
        "state": health(status, rules),
        "chunks": chunks,
        "audits": [audit_json(status, evidence) for _, evidence in sorted(status.audits.items())],
        "audit_failures": [audit_json(status, evidence) for evidence in status.audit_failures()],
    }


def audit_json(status: ObjectStatus, evidence: Evidence) -> dict[str, Any]:
    """One holder's audit in ``stat --json``: who, which fragment, the verdict and evidence."""
    challenge = evidence.challenge
    holder = next(
        (h for h in status.placement.holders() if h.node_id == challenge.holder), None
    )
    chunk, share = fragment_position(status.manifest, challenge.fragment_id)
    return {
        "node_id": challenge.holder.hex(),
        "datacenter": holder.datacenter if holder else None,
        "chunk": chunk,
        "share": share,
        **{k: v for k, v in evidence.log_fields().items() if k != "holder"},
    }


def fragment_position(manifest: Manifest, fragment_id: bytes) -> tuple[int | None, int | None]:
    """(chunk, share) of ``fragment_id`` in ``manifest`` ((None, None) if not in it)."""
    for index, chunk in enumerate(manifest.chunks):
        if fragment_id in chunk.fragment_ids:
            return index, chunk.fragment_ids.index(fragment_id)
    return None, None


def audit_lines(status: ObjectStatus) -> list[str]:
    """What ``stat`` says of its audits: each failure by holder, or that every holder passed."""
    failures = status.audit_failures()
    if not failures:
        if not status.audits:
            return []
        return [f"audits: each of the {len(status.audits)} holders proved one of its fragments"]
    lines = []
    for evidence in failures:
        entry = audit_json(status, evidence)
        lines.append(
            f"holder {short_id(evidence.challenge.holder)} ({entry['datacenter'] or '?'}) "
            f"failed an audit of chunk {entry['chunk']} share {entry['share']} "
            f"({evidence.verdict.value}): {evidence.reason}; it signs for fragments it cannot "
            "prove: consider revoking its certificate"
        )
    return lines


def live_text(live: int, k: int, n: int, threshold: int | None) -> str:
    """E.g. ``6/8 live (k=4, repair below 6)``."""
    against = f"repair below {threshold}" if threshold is not None else "rule unknown"
    return f"{live}/{n} live (k={k}, {against})"


def duration_text(seconds: float) -> str:
    """``3600`` -> ``1h``, ``90`` -> ``90s``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_COLOURS = {HEALTHY: "green", DEGRADED: "yellow", UNREADABLE: "red"}


def age_text(seconds: float) -> str:
    """``7300`` -> ``2h``: the largest whole unit (``0s`` for a clock slightly behind)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def receipt_text(status: ObjectStatus, chunk: int, share: int, holder: bytes) -> str:
    """How old the holder's published receipt is, in yellow once stale (stewards stopped
    renewing it)."""
    receipt = status.receipt(chunk, share, holder)
    if receipt is None:
        return "[red]no receipt[/]"
    age = age_text(status.checked_at - receipt.issued_ms / 1000)
    if receipt.fresh(status.checked_at):
        return f"receipt {age}"
    return f"[yellow]receipt stale {age}[/]"


def receipt_json(
    status: ObjectStatus, chunk: int, share: int, holder: bytes
) -> dict[str, Any] | None:
    """A holder's published receipt for ``stat --json``: when issued and expiring, fresh."""
    receipt = status.receipt(chunk, share, holder)
    if receipt is None:
        return None
    return {
        "issued_at": receipt.issued_ms / 1000,
        "expires_at": receipt.expires_ms / 1000,
        "fresh": receipt.fresh(status.checked_at),
    }


def status_table(status: ObjectStatus, rules: Mapping[str, CodingRule] = SHIPPED_RULES) -> Table:
    """One row per chunk: live fragments against k, the repair threshold and n, the chunk's
    state, then each share's holder."""
    manifest = status.manifest
    rule, problem = manifest_rule(manifest, rules)
    threshold = rule.repair_threshold if rule else None
    states = chunk_states(status, rules)
    marks = {True: "[green]✓[/]", False: "[red]✗ missing[/]", None: "[red]✗ silent[/]"}
    coding = f"{manifest.k}-of-{manifest.n}"
    if rule is not None:
        coding += f", repair below {threshold}, grace {duration_text(rule.grace_period)}"
    table = Table(
        title=(
            f"{manifest.plaintext_size} bytes, rule {escape(manifest.rule)} ({coding}), "
            f"{manifest.chunk_count} chunk(s): [bold]{health(status, rules)}[/]"
        ),
        title_justify="left",
        caption=escape(
            problem
            or "healthy: live >= repair threshold; degraded: repair due (stewards rebuild the "
            "lost fragments once their holders' grace period is over); unreadable: fewer than "
            "k live"
            + (
                "; leaving: the holder is being drained, stewards are moving its fragments"
                if status.leaving
                else ""
            )
            + "; receipt: age of the holder's signed receipt in the placement (renewed by "
            "stewards; stale when not renewed for a day and a half)"
        )
        + "".join(
            f"\n[{'green' if line.startswith('audits:') else 'red'}]{escape(line)}[/]"
            for line in audit_lines(status)
        ),
        caption_justify="left",
    )
    table.add_column("chunk", justify="right")
    table.add_column("live", justify="right")
    table.add_column("state")
    for share in range(manifest.n):
        table.add_column(str(share))
    for index, row in enumerate(status.placement.chunks):
        state = states[index]
        colour = _COLOURS[state]
        live = live_text(status.live(index), manifest.k, manifest.n, threshold)
        verdict = "degraded: repair due" if state == DEGRADED and rule is not None else state
        cells = []
        for share, holder in enumerate(row):
            if holder is None:
                cells.append("?")
                continue
            present = status.present[index][share]
            leaving = present is None and holder.node_id in status.leaving
            mark = "[yellow]↗ leaving[/]" if leaving else marks[present]
            cell = f"{short_id(holder.node_id)[:6]} {escape(holder.datacenter)}\n{mark}"
            cell += "\n" + receipt_text(status, index, share, holder.node_id)
            extra = len(status.placement.holders_of(index, share)) - 1
            if extra:
                cell += f"\n+{extra} more holder" + ("s" if extra > 1 else "")
            cells.append(cell)
        table.add_row(str(index), f"[{colour}]{live}[/]", f"[{colour}]{verdict}[/]", *cells)
    return table
