"""``p2pstore bucket create|ls|rm|info``, ``cp``, ``ls``, ``rm`` and ``stat bucket/key``.

A remote object is written ``BUCKET/KEY``; ``cp`` copies a local file (or ``-``, stdin) to one,
or one to a local file (or ``-``, stdout).  A source that is ``-`` or an existing file is local,
anything else names an object.  ``stat`` keeps taking a capability too (``p2ps:...``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import click
import trio

from p2pstore.cli.client_config import ClientConfig, connected_client, load_client_config
from p2pstore.cli.object_commands import config_option, json_option
from p2pstore.cli.object_commands import stat as stat_cap
from p2pstore.codec import parse_capability
from p2pstore.codec.capability import CapabilityError
from p2pstore.core.rules import find_rule
from p2pstore.errors import ConfigError
from p2pstore.net.bucket_client import BucketInfo, ObjectInfo, TenantBuckets


@asynccontextmanager
async def tenant_buckets(config: ClientConfig) -> AsyncIterator[TenantBuckets]:
    """A connected client's :class:`TenantBuckets` (the config's tenant key)."""
    tenant_key = config.read_tenant_key()
    async with connected_client(config) as client:
        yield TenantBuckets(client, tenant_key)


def split_target(target: str) -> tuple[str, str]:
    """``BUCKET/KEY`` (or ``BUCKET`` alone, key empty).  Raises :class:`click.BadParameter`."""
    bucket, _, key = target.partition("/")
    if not bucket:
        raise click.BadParameter(f"{target!r} is not BUCKET/KEY")
    return bucket, key


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def bucket() -> None:
    """Create, list, inspect and remove the tenant's buckets."""


@bucket.command("create")
@click.argument("name")
@config_option
@click.option("--rule", default=None, help="Coding rule of its objects [default: the client's].")
@click.option("--versioning", is_flag=True, help="Keep older versions on overwrite and delete.")
@click.option(
    "--retention-days",
    type=click.IntRange(0, 36500),
    default=0,
    show_default=True,
    help="Compliance retention of every version written (cannot be shortened).",
)
def bucket_create(
    name: str, config_path: Path, rule: str | None, versioning: bool, retention_days: int
) -> None:
    """Create bucket NAME."""
    config = load_client_config(config_path)
    rule_name = find_rule(rule, config.rules).name if rule else config.rule.name

    async def run() -> BucketInfo:
        async with tenant_buckets(config) as buckets:
            return await buckets.create(
                name, rule=rule_name, versioning=versioning, retention_days=retention_days
            )

    info = trio.run(run)
    click.echo(f"created bucket {info.name} (rule {info.rule})")


@bucket.command("ls")
@config_option
@json_option
def bucket_ls(config_path: Path, as_json: bool) -> None:
    """List the tenant's buckets."""
    config = load_client_config(config_path)

    async def run() -> list[BucketInfo]:
        async with tenant_buckets(config) as buckets:
            return await buckets.buckets()

    found = trio.run(run)
    if as_json:
        click.echo(json.dumps([asdict(b) for b in found], indent=2))
        return
    for info in found:
        click.echo(f"{_when(info.created_ms)}  {info.name}")


@bucket.command("rm")
@click.argument("name")
@config_option
def bucket_rm(name: str, config_path: Path) -> None:
    """Remove bucket NAME, which must be empty."""
    config = load_client_config(config_path)

    async def run() -> None:
        async with tenant_buckets(config) as buckets:
            await buckets.remove_bucket(name)

    trio.run(run)
    click.echo(f"removed bucket {name}")


@bucket.command("info")
@click.argument("name")
@config_option
@json_option
def bucket_info(name: str, config_path: Path, as_json: bool) -> None:
    """Show bucket NAME's settings, and counts from its replicas."""
    config = load_client_config(config_path)

    async def run() -> tuple[BucketInfo, dict[str, int]]:
        async with tenant_buckets(config) as buckets:
            return await buckets.bucket(name), await buckets.stats(name)

    info, stats = trio.run(run)
    summary: dict[str, Any] = {**asdict(info), **stats}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for field, value in summary.items():
        click.echo(f"{field + ':':16}{value}")


@click.command()
@click.argument("source")
@click.argument("destination")
@config_option
def cp(source: str, destination: str, config_path: Path) -> None:
    """Copy SOURCE to DESTINATION: a local file or '-' to BUCKET/KEY, or back."""
    config = load_client_config(config_path)
    if source == "-" or Path(source).is_file():
        bucket_name, key = split_target(destination)
        if not key or key.endswith("/"):
            if source == "-":
                raise click.BadParameter("copying stdin needs a full BUCKET/KEY destination")
            key += Path(source).name
        with _open_source(source) as spool:
            info = trio.run(_upload, config, spool, bucket_name, key)
        click.echo(f"{source} -> {bucket_name}/{key} ({info.size} bytes)", err=True)
        return
    bucket_name, key = split_target(source)
    if not key:
        raise click.BadParameter(f"{source!r}: name an object, BUCKET/KEY")
    if destination == "-":
        size = trio.run(_download, config, bucket_name, key, sys.stdout.buffer)
    else:
        with _atomic_output(Path(destination)) as sink:
            size = trio.run(_download, config, bucket_name, key, sink)
    click.echo(f"{bucket_name}/{key} -> {destination} ({size} bytes)", err=True)


def _open_source(source: str) -> BinaryIO:
    """The file to upload; stdin is spooled to a temporary file first (a put needs the size,
    and a convergent key reads the data twice)."""
    if source == "-":
        spool: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
        shutil.copyfileobj(sys.stdin.buffer, spool)
        spool.seek(0)
        return spool
    try:
        return Path(source).open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from exc


@contextmanager
def _atomic_output(destination: Path) -> Iterator[BinaryIO]:
    """A temporary file beside ``destination``, renamed over it only when complete."""
    handle, name = tempfile.mkstemp(dir=destination.resolve().parent, prefix=".p2pstore-")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as sink:
            yield sink
        temporary.replace(destination)
    finally:
        temporary.unlink(missing_ok=True)


async def _upload(config: ClientConfig, spool: BinaryIO, bucket_name: str, key: str) -> ObjectInfo:
    secret = config.read_secret()
    size = os.fstat(spool.fileno()).st_size
    async with tenant_buckets(config) as buckets:
        info = await buckets.bucket(bucket_name)
        rule = find_rule(info.rule, config.rules) if info.rule else config.rule
        return await buckets.put(
            bucket_name, key, spool, size, rule=rule, convergence_secret=secret
        )


async def _download(config: ClientConfig, bucket_name: str, key: str, sink: BinaryIO) -> int:
    written = 0

    async def write(data: bytes) -> None:
        nonlocal written
        await trio.to_thread.run_sync(sink.write, data)
        written += len(data)

    async with tenant_buckets(config) as buckets:
        await buckets.get(bucket_name, key, write)
    await trio.to_thread.run_sync(sink.flush)
    return written


@click.command("ls")
@click.argument("target", required=False, default="")
@config_option
@json_option
def ls(target: str, config_path: Path, as_json: bool) -> None:
    """List BUCKET/PREFIX's objects (or the buckets, without TARGET)."""
    config = load_client_config(config_path)
    if not target:
        bucket_ls.callback(config_path=config_path, as_json=as_json)  # type: ignore[misc]
        return
    bucket_name, prefix = split_target(target)

    async def run() -> list[ObjectInfo]:
        async with tenant_buckets(config) as buckets:
            return await buckets.objects(bucket_name, prefix)

    found = trio.run(run)
    if as_json:
        click.echo(json.dumps([asdict(o) for o in found], indent=2))
        return
    for info in found:
        click.echo(f"{_when(info.mtime_ms)}  {info.size:>12}  {info.key}")


@click.command("rm")
@click.argument("target")
@config_option
def rm(target: str, config_path: Path) -> None:
    """Delete BUCKET/KEY (older versions stay if the bucket keeps versions)."""
    config = load_client_config(config_path)
    bucket_name, key = split_target(target)
    if not key:
        raise click.BadParameter("name an object, BUCKET/KEY ('bucket rm' removes a bucket)")

    async def run() -> None:
        async with tenant_buckets(config) as buckets:
            await buckets.remove(bucket_name, key)

    trio.run(run)
    click.echo(f"deleted {bucket_name}/{key}")


@click.command("stat")
@click.argument("target", metavar="CAP|BUCKET/KEY")
@config_option
@json_option
@click.pass_context
def stat(ctx: click.Context, target: str, config_path: Path, as_json: bool) -> None:
    """Show BUCKET/KEY's current version, or (for a capability) where an object lives; see
    'p2pstore stat --help' of a capability for the health columns."""
    if target.strip().lower().startswith("p2ps:"):
        try:
            cap = parse_capability(target)
        except CapabilityError as exc:
            raise click.BadParameter(str(exc)) from exc
        ctx.invoke(stat_cap, cap=cap, config_path=config_path, as_json=as_json)
        return
    config = load_client_config(config_path)
    bucket_name, key = split_target(target)

    async def run() -> ObjectInfo:
        async with tenant_buckets(config) as buckets:
            return await buckets.stat(bucket_name, key)

    info = trio.run(run)
    summary = asdict(info)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for field, value in summary.items():
        click.echo(f"{field + ':':14}{value}")
