"""``p2pstore gateway``: serve the mesh as an S3 endpoint, and manage its access keys.

The gateway runs on the institution's side with the institution's client identity and tenant
key: objects, names and metadata are encrypted before they leave, and buckets are the tenant's
bucket indexes in the mesh, the ones ``p2pstore bucket``/``cp``/``ls`` use.  Its
``gateway.toml`` names where to listen, the client config it reaches the mesh with (which names
the tenant key), and two SQLite files it keeps (mode 0600): the access keys, and the multipart
uploads in progress, whose parts wait in a spool directory (mode 0700) until completed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import trio

from p2pstore.cli.client_config import ClientConfig, connected_client, load_client_config
from p2pstore.cli.config import ConfigReader, read_toml
from p2pstore.cli.config_sections import parse_size
from p2pstore.core.rules import CodingRule, find_rule
from p2pstore.errors import ConfigError
from p2pstore.gateway.keys import ENTROPY_BYTES, AccessKeyStore, new_key
from p2pstore.gateway.uploads import SPOOL_LIMIT

if TYPE_CHECKING:
    from p2pstore.gateway.app import S3App
    from p2pstore.net.admin import AdminServer

CONFIG_ENV = "P2PSTORE_GATEWAY_CONFIG"

_SCHEMA: dict[str, dict[str, bool]] = {
    "gateway": {
        "listen": True,
        "client": True,
        "admin": False,
        "region": False,
        "domains": False,
        "keys": False,
        "uploads": False,
        "spool": False,
        "spool_limit": False,
        "rule": False,
    },
}

EXAMPLE = """\
[gateway]
listen = "127.0.0.1:9000"        # where S3 clients connect (put TLS in front for a network)
client = "client/client.toml"    # the identity (and tenant_key) it reaches the mesh with
# admin = "127.0.0.1:9001"       # /metrics for Prometheus (requests, bytes, latency)
# region = "us-east-1"           # the region clients sign for
# domains = ["s3.example.org"]   # BUCKET.s3.example.org addresses a bucket (virtual-host style)
# keys = "gateway-keys.sqlite"   # access keys (p2pstore gateway key create)
# uploads = "gateway-uploads.sqlite" # multipart uploads in progress (names live in the mesh)
# spool = "gateway-spool"        # their parts until completed (plaintext: the gateway's disk)
# spool_limit = "16 GiB"         # past it, parts go to the mesh one by one (slower)
# rule = "standard"              # coding rule of new objects (default: the client's)
"""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    listen: str
    admin: str | None
    client: ClientConfig
    region: str
    domains: tuple[str, ...]
    keys: Path
    uploads: Path
    spool: Path
    spool_limit: int
    rule: CodingRule


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and check ``gateway.toml``; :class:`ConfigError` names the file and the key."""
    reader = ConfigReader(path, read_toml(path), _SCHEMA)
    listen = reader.address("gateway", "listen")
    client_path = reader.existing_file("gateway", "client")
    assert listen is not None and client_path is not None  # required keys
    client = load_client_config(client_path)
    domains = reader.get("gateway", "domains") or []
    if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
        raise reader.error("[gateway] domains", "expected a list of host names")
    rule = client.rule
    rule_name = reader.string("gateway", "rule")
    if rule_name is not None:
        try:
            rule = find_rule(rule_name, client.rules)
        except ConfigError as exc:
            raise reader.error("[gateway] rule", str(exc)) from exc
    return GatewayConfig(
        path=path,
        listen=listen,
        admin=reader.address("gateway", "admin"),
        client=client,
        region=reader.string("gateway", "region") or "us-east-1",
        domains=tuple(domains),
        keys=reader.path_value("gateway", "keys") or path.parent / "gateway-keys.sqlite",
        uploads=reader.path_value("gateway", "uploads") or path.parent / "gateway-uploads.sqlite",
        spool=reader.path_value("gateway", "spool") or path.parent / "gateway-spool",
        spool_limit=_spool_limit(reader),
        rule=rule,
    )


def _spool_limit(reader: ConfigReader) -> int:
    value = reader.get("gateway", "spool_limit")
    if value is None:
        return SPOOL_LIMIT
    if type(value) is int and value >= 0:
        return value
    if not isinstance(value, str):
        problem = f'expected a size such as "16 GiB", got {value!r}'
        raise reader.error("[gateway] spool_limit", problem)
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise reader.error("[gateway] spool_limit", str(exc)) from exc


async def serve_gateway(config: GatewayConfig, *, ready: trio.Event | None = None) -> None:
    """Join the mesh and serve S3 until cancelled.  Raises :class:`ConfigError` if the client
    config names no tenant key."""
    from p2pstore.gateway.app import GatewaySettings, S3App
    from p2pstore.gateway.blobs import MeshBlobs
    from p2pstore.gateway.mesh_backend import MeshBackend
    from p2pstore.gateway.operations import HANDLERS
    from p2pstore.gateway.server import serve
    from p2pstore.gateway.uploads import UploadStore
    from p2pstore.net.client import ClientSettings

    tenant_key = config.client.read_tenant_key()
    keys = AccessKeyStore(config.keys)
    settings = ClientSettings(chunk_size=config.client.chunk_size)
    async with connected_client(config.client, settings=settings) as client:
        uploads = UploadStore(
            config.uploads, clock=time.time, spool=config.spool, spool_limit=config.spool_limit
        )
        backend = MeshBackend(MeshBlobs(client, config.rule), tenant_key, uploads)
        app = S3App(
            backend,
            key_of=keys.get,
            handlers=HANDLERS,
            settings=GatewaySettings(region=config.region, domains=config.domains),
        )
        try:
            async with trio.open_nursery() as nursery:
                if config.admin is not None:
                    await nursery.start(_admin_server(app, config.admin).run)
                urls = await nursery.start(serve, app, config.listen)
                click.echo(f"p2pstore gateway: serving S3 on {' '.join(urls)}", err=True)
                if ready is not None:
                    ready.set()
        finally:
            backend.close()
            keys.close()


def _admin_server(app: S3App, address: str) -> AdminServer:
    from p2pstore.net.address import parse_address
    from p2pstore.net.admin import AdminServer
    from p2pstore.net.http import Response
    from p2pstore.net.metrics import CONTENT_TYPE

    def metrics() -> Response:
        return Response(200, app.metrics.exposition(), content_type=CONTENT_TYPE)

    host, port = parse_address(address)
    return AdminServer({"/metrics": metrics}, host, port)


@click.group(invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    envvar=CONFIG_ENV,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The gateway's TOML file [env: {CONFIG_ENV}].",
)
@click.pass_context
def gateway(ctx: click.Context, config_path: Path | None) -> None:
    """Serve the mesh as an S3 endpoint (boto3, aws-cli, rclone, restic...).

    \b
    p2pstore gateway --config gateway.toml                 serve
    p2pstore gateway --config gateway.toml key create --tenant T
    p2pstore gateway --config gateway.toml key ls | key rm KEY_ID

    \b
    A gateway.toml:
    """
    if config_path is None:
        raise click.UsageError("give the gateway's TOML file with --config")
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        try:
            trio.run(serve_gateway, load_gateway_config(config_path))
        except KeyboardInterrupt:
            click.echo("p2pstore gateway: stopped", err=True)


gateway.help = (gateway.help or "") + "\n\b\n" + EXAMPLE


def _keys(ctx: click.Context) -> AccessKeyStore:
    return AccessKeyStore(load_gateway_config(ctx.obj).keys)


@gateway.group()
def key() -> None:
    """Create, list and remove the gateway's access keys."""


@key.command("create")
@click.option("--tenant", required=True, help="The tenant (institution) the key acts for.")
@click.option("--bucket", "buckets", multiple=True, help="Limit the key to this bucket (repeat).")
@click.option("--read-only", is_flag=True, help="Only reads and listings.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def key_create(
    ctx: click.Context, tenant: str, buckets: tuple[str, ...], read_only: bool, as_json: bool
) -> None:
    """Create an access key; its secret is shown once."""
    store = _keys(ctx)
    made = new_key(
        os.urandom(ENTROPY_BYTES),
        tenant=tenant,
        buckets=buckets or None,
        read_only=read_only,
        now=time.time(),
    )
    store.add(made)
    store.close()
    if as_json:
        click.echo(json.dumps({"access_key_id": made.key_id, "secret_access_key": made.secret}))
    else:
        click.echo(f"access key id:     {made.key_id}\nsecret access key: {made.secret}")


@key.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def key_ls(ctx: click.Context, as_json: bool) -> None:
    """List the access keys (never their secrets)."""
    store = _keys(ctx)
    rows = [
        {
            "access_key_id": k.key_id,
            "tenant": k.tenant,
            "buckets": list(k.buckets) if k.buckets is not None else None,
            "read_only": k.read_only,
            "created": k.created,
        }
        for k in store.all()
    ]
    store.close()
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        scope = ",".join(row["buckets"]) if row["buckets"] else "all buckets"  # type: ignore[arg-type]
        mode = "read-only" if row["read_only"] else "read-write"
        click.echo(f"{row['access_key_id']}  tenant {row['tenant']}  {scope}  {mode}")


@key.command("rm")
@click.argument("key_id")
@click.pass_context
def key_rm(ctx: click.Context, key_id: str) -> None:
    """Remove an access key: requests signed with it are refused from now on."""
    store = _keys(ctx)
    removed = store.remove(key_id)
    store.close()
    if not removed:
        raise ConfigError(f"no access key {key_id} in {store.path}")
    click.echo(f"removed {key_id}")
