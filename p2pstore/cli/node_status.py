"""``p2pstore node status``: what a running node holds and whom it sees, from its admin endpoint.

Why through the admin endpoint: the running node is the only one that knows its sessions and
tables, and the endpoint is already there for Prometheus; reading it needs no credentials and
cannot disturb the node.  The request goes straight to the configured loopback address (never
through an HTTP proxy from the environment), is bounded in time and size, and every failure
becomes one line saying what to check.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import click

from p2pstore.cli.certificate_expiry import EXPIRY_WARNING
from p2pstore.cli.config import NodeConfig, load_node_config
from p2pstore.errors import ConfigError, PeerUnreachable, RemoteProtocolError
from p2pstore.net.address import parse_address

STATUS_TIMEOUT = 5.0
MAX_STATUS_BYTES = 4 * 1024 * 1024
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - we dial, not bind


@click.command("status")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's TOML file (its [metrics] listen address is where the node is asked).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the node's JSON status as is.")
def status(config_path: Path, as_json: bool) -> None:
    """Show what a running node holds and whom it sees.

    Reads /status from the node's admin endpoint, which must be on ([metrics] listen).
    """
    config = load_node_config(config_path)
    document = fetch_status(config)
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        click.echo(render_status(document))


def fetch_status(config: NodeConfig) -> dict[str, Any]:
    """The running node's /status document.

    Raises :class:`ConfigError` if the admin endpoint is off in ``config``,
    :class:`PeerUnreachable` if no node answers there, and :class:`RemoteProtocolError` if what
    answers is not a node's status.
    """
    if config.metrics_listen is None:
        raise ConfigError(
            f"{config.path}: [metrics] listen is not set, so the node has no admin endpoint to "
            'ask: set it (e.g. listen = "127.0.0.1:9464") and restart the node'
        )
    host, port = parse_address(config.metrics_listen)
    host = _WILDCARDS.get(host, host)
    where = f"http://{config.metrics_listen}/status"
    connection = http.client.HTTPConnection(host, port, timeout=STATUS_TIMEOUT)
    try:
        connection.request("GET", "/status")
        response = connection.getresponse()
        body = response.read(MAX_STATUS_BYTES + 1)
    except ConnectionRefusedError as exc:
        raise PeerUnreachable(
            f"no node answers on {config.metrics_listen}: is it running with this config "
            f"({config.path})?"
        ) from exc
    except TimeoutError as exc:
        raise PeerUnreachable(f"{where} did not answer within {STATUS_TIMEOUT:g}s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise PeerUnreachable(f"cannot read {where}: {exc}") from exc
    finally:
        connection.close()
    if response.status != 200 or len(body) > MAX_STATUS_BYTES:
        raise RemoteProtocolError(
            f"{where} answered {response.status} {response.reason} ({len(body)} bytes): is "
            f"another program listening there?"
        )
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise RemoteProtocolError(f"{where} did not answer JSON: {exc}") from exc
    if not isinstance(document, dict) or "node_id" not in document:
        raise RemoteProtocolError(f"{where} answered JSON that is not a node's status")
    return document


def render_status(document: dict[str, Any]) -> str:
    """A node's status as a few readable lines."""
    lines = [
        f"node      {document.get('node_id')}",
        f"where     {document.get('datacenter')}, {document.get('region')}, "
        f"listening on {document.get('address')}",
        f"version   {document.get('version')}",
        f"joined    {'yes' if document.get('joined') else 'NO'}",
        *_certificate_lines(document.get("certificate")),
    ]
    store = document.get("store")
    if isinstance(store, dict):
        writable = "writable" if store.get("writable") else f"NOT WRITABLE: {store.get('reason')}"
        lines.append(
            f"store     {store.get('fragments')} fragments, {_size(store.get('bytes_used'))} "
            f"of {_size(store.get('quota_bytes'))} quota, {writable}"
        )
        if store.get("corrupt_found"):
            lines.append(f"          {store['corrupt_found']} corrupt fragments found and removed")
    records = document.get("records") or {}
    table = document.get("routing_table") or {}
    lines.append(
        f"dht       {table.get('contacts', 0)} contacts in the routing table, "
        f"{records.get('held', 0)} records held ({_size(records.get('bytes_held'))}), "
        f"{records.get('published', 0)} published"
    )
    lines += _audit_lines(document.get("audits"))
    peers = document.get("peers") or []
    clients = (document.get("sessions") or {}).get("client", 0)
    lines.append(f"peers     {len(peers)} nodes connected, {clients} client sessions")
    for peer in peers:
        direction = "to" if peer.get("outbound") else "from"
        lines.append(
            f"  {str(peer.get('node_id'))[:16]}  {peer.get('role'):<6} "
            f"{peer.get('datacenter')}, {peer.get('region')}  {direction} {peer.get('address')}"
            f"  for {_duration(peer.get('connected_seconds'))}"
            + (f"  wire v{peer['wire_version']}" if peer.get("wire_version") else "")
        )
    return "\n".join(lines)


def _certificate_lines(certificate: object) -> list[str]:
    """Its certificate's end, and a warning from 30 days before it."""
    if not isinstance(certificate, dict):
        return []
    days = certificate.get("expires_in_days")
    if not isinstance(days, int | float):
        return []
    lines = [
        f"cert      serial {certificate.get('serial')}, valid until "
        f"{certificate.get('not_after')} ({days:.0f} days)"
    ]
    if days < 0:
        lines.append("          EXPIRED: peers refuse this node; renew it (p2pstore ca renew)")
    elif days <= EXPIRY_WARNING.days:
        lines.append(
            f"          WARNING: expires in {days:.1f} days; renew it (p2pstore ca renew), "
            "install it and restart the node"
        )
    return lines


def _audit_lines(audits: object) -> list[str]:
    """What the node's steward's audits found: counts, then each holder that failed one."""
    if not isinstance(audits, dict):
        return []
    holders = [h for h in audits.get("holders") or [] if isinstance(h, dict)]
    failing = [h for h in holders if h.get("failed")]
    lines = [
        f"audits    {len(holders)} holders audited by this node's steward, "
        f"{len(failing)} failed some"
    ]
    for holder in failing:
        lines.append(
            f"  {str(holder.get('node_id'))[:16]}  {holder.get('datacenter')}  failed "
            f"{holder.get('failed')}, passed {holder.get('passed')} "
            f"(last: {holder.get('last_verdict')})"
        )
    return lines


def _size(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    size, index = float(value), 0
    while size >= 1024 and index < len(units) - 1:
        size, index = size / 1024, index + 1
    return f"{size:.0f} B" if index == 0 else f"{size:.1f} {units[index]}"


def _duration(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    seconds = int(value)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
