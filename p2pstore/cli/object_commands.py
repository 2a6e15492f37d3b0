"""``p2pstore put / get / stat``: store a file in the mesh, read it back, see where it lives."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import click
import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from p2pstore.cli.client_config import (
    CONFIG_ENV,
    ClientConfig,
    connected_client,
    load_client_config,
)
from p2pstore.cli.object_status import stat_summary, status_table
from p2pstore.codec import ReadCap, VerifyCap, parse_capability
from p2pstore.codec.capability import CapabilityError
from p2pstore.core.rules import CodingRule, find_rule
from p2pstore.errors import ConfigError
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
