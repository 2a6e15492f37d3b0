"""``p2pstore put / get / stat``: store a file in the mesh, read it back, see where it lives."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import click
import trio
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from p2pstore.cli.client_config import (
    CONFIG_ENV,
    ClientConfig,
    connected_client,
    load_client_config,
)
from p2pstore.codec import Manifest, ReadCap, VerifyCap, parse_capability
from p2pstore.codec.capability import CapabilityError
from p2pstore.core.audit import Evidence
from p2pstore.core.rules import SHIPPED_RULES, CodingRule, find_rule
from p2pstore.errors import ConfigError
from p2pstore.identity import short_id
from p2pstore.net.client import PutResult
from p2pstore.net.references import keep
from p2pstore.net.status import ObjectStatus

config_option = click.option(
    "--config",
    "config_path",
    envvar=CONFIG_ENV,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The client's TOML file [env: {CONFIG_ENV}; `p2pstore devnet` writes one].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def _cap_argument(ctx: click.Context, param: click.Parameter, value: str) -> ReadCap | VerifyCap:
    try:
        return parse_capability(value)
    except CapabilityError as exc:
        raise click.BadParameter(str(exc)) from exc


@contextmanager
def transfer_bar(total: int, label: str, *, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (nothing when ``quiet`` or stderr is not a terminal); yields
    the function to call with each finished byte count."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda _done: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.advance(task, done)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@click.option(
    "--rule",
    metavar="NAME",
    help="Coding rule: a shipped one (standard, archive, replica-3) or one declared in the "
    "config's [rules.NAME] [default: the config's [client] rule, else standard].",
)
@click.option("--random-key", is_flag=True, help="Encrypt with a fresh random key, not convergent.")
@json_option
def put(file: Path, config_path: Path, rule: str | None, random_key: bool, as_json: bool) -> None:
    """Encrypt FILE, code it into fragments, spread them over the mesh; print its capabilities.

    The read cap (p2ps:read:...) decrypts the file: keep it secret.  The verify cap
    (p2ps:verify:...) lets anyone check and repair the object, never read it.  By default the
    key is convergent (the same file put twice with the same client secret is stored once).
    """
    config = load_client_config(config_path)
    try:
        coding_rule = config.rule if rule is None else find_rule(rule, config.rules)
    except ConfigError as exc:
        raise ConfigError(f"--rule: {exc} (in {config.path})") from exc
    result = trio.run(
        functools.partial(
            _put, config, file, rule=coding_rule, random_key=random_key, quiet=as_json
        )
    )
    size = file.stat().st_size
    if as_json:
        click.echo(json.dumps(put_summary(result, file, size), indent=2))
        return
    manifest = result.manifest
    holders = result.placement.holders()
    click.echo(
        f"stored {file.name} ({size} bytes) in {manifest.chunk_count} chunk(s), rule "
        f"{manifest.rule} ({manifest.k}-of-{manifest.n}), on {len(holders)} nodes in "
        f"{len({h.datacenter for h in holders})} datacenters"
    )
    click.echo(f"read cap:   {result.read_cap.to_string()}")
    click.echo("            (keep it secret: it decrypts the file)")
    click.echo(f"verify cap: {result.verify_cap.to_string()}")


def put_summary(result: PutResult, file: Path, size: int) -> dict[str, Any]:
    """What ``put --json`` prints."""
    manifest = result.manifest
    return {
        "file": str(file),
        "size": size,
        "object_id": result.read_cap.object_id.hex(),
        "read_cap": result.read_cap.to_string(),
        "verify_cap": result.verify_cap.to_string(),
        "rule": manifest.rule,
        "k": manifest.k,
        "n": manifest.n,
        "chunks": manifest.chunk_count,
        "holders": len(result.placement.holders()),
        "manifest_copies": result.record_copies,
    }


async def _put(
    config: ClientConfig, file: Path, *, rule: CodingRule, random_key: bool, quiet: bool
) -> PutResult:
    secret = None if random_key else config.read_secret()
    try:
        source: BinaryIO = file.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from exc
    with source:
        size = os.fstat(source.fileno()).st_size
        async with connected_client(config, storing_under=rule) as client:
            with transfer_bar(size, f"put {file.name}", quiet=quiet) as progress:
                put = await client.put(
                    source, size, rule, convergence_secret=secret, progress=progress
                )
            await keep(client.dht, put.read_cap.object_id, now=time.time())  # no name keeps it
            return put


@click.command()
@click.argument("cap", callback=_cap_argument, metavar="READ_CAP")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the file ('-' for standard output).",
)
@config_option
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def get(cap: ReadCap | VerifyCap, output: Path, config_path: Path, force: bool) -> None:
    """Fetch, check, decode and decrypt an object into OUTPUT.

    Nothing is written under OUTPUT's name unless every chunk was fetched and authenticated:
    the bytes go to a temporary file beside it, renamed at the end.
    """
    if not isinstance(cap, ReadCap):
        raise click.BadParameter("a verify cap cannot read: give the read cap (p2ps:read:...)")
    config = load_client_config(config_path)
    if str(output) == "-":
        trio.run(functools.partial(_get, config, cap, sys.stdout.buffer, quiet=True))
        sys.stdout.flush()
        return
    if output.exists() and not force:
        raise click.BadParameter(f"{output} exists (use --force to overwrite)", param_hint="-o")
    directory = output.resolve().parent
    fd, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as sink:
            size = trio.run(functools.partial(_get, config, cap, sink, quiet=False))
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    click.echo(f"wrote {size} bytes to {output}", err=True)


async def _get(config: ClientConfig, cap: ReadCap, sink: BinaryIO, *, quiet: bool) -> int:
    async with connected_client(config) as client:
        manifest = await client.fetch_manifest(cap.object_id)

        async def write(data: bytes) -> None:
            await trio.to_thread.run_sync(sink.write, data)

        with transfer_bar(manifest.plaintext_size, "get", quiet=quiet) as progress:
            await client.get(cap, write, progress=progress)
        return manifest.plaintext_size


@click.command()
@click.argument("cap", callback=_cap_argument, metavar="CAP")
@config_option
@json_option
def stat(cap: ReadCap | VerifyCap, config_path: Path, as_json: bool) -> None:
    """Show an object's size and rule, and per chunk its live fragments against k, the rule's
    repair threshold and n, its state, and which node in which datacenter holds each fragment,
    whether it signs for it now, and how fresh its published receipt is (a verify cap is
    enough).  Each holder is also audited on one fragment it signs for (a random leaf checked
    against the fragment id); one that fails is named, and that fragment does not count.

    \b
    healthy     live >= repair threshold
    degraded    k <= live < threshold: repair due (stewards rebuild it after the grace period)
    unreadable  live < k: not readable now
    """
    config = load_client_config(config_path)
    status = trio.run(_stat, config, cap)
    if as_json:
        click.echo(json.dumps(stat_summary(status, config.rules), indent=2))
        return
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(status_table(status, config.rules))


async def _stat(config: ClientConfig, cap: ReadCap | VerifyCap) -> ObjectStatus:
    async with connected_client(config) as client:
        return await client.stat(cap)


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
    holder = next((h for h in status.placement.holders() if h.node_id == challenge.holder), None)
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
