"""``p2pstore ca``: the mesh CA ceremony — create it, sign nodes' requests, renew and revoke
their certificates."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import trio
from cryptography.hazmat.primitives import serialization

from p2pstore.cli.client_config import connected_client, load_client_config
from p2pstore.cli.policy_file import read_policy_file
from p2pstore.core.ca_records import policy_record, revocation_record
from p2pstore.core.published import next_sequence
from p2pstore.errors import IdentityError, KeyEncrypted
from p2pstore.identity import (
    MeshCA,
    Role,
    format_serial,
    identity_from_certificate,
    load_certificate,
    parse_serial,
)
from p2pstore.identity.credentials import PUBLIC_FILE_MODE, write_new_file
from p2pstore.identity.signing_request import read_request, renew_certificate
from p2pstore.net.mesh_trust import publish_ca_record
from p2pstore.wire import SignedRecord

PASSPHRASE_ENV = "P2PSTORE_CA_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


def _now() -> datetime:
    return datetime.now(UTC)


def _load(directory: Path) -> MeshCA:
    """The CA in ``directory``; an encrypted key's passphrase comes from $P2PSTORE_CA_PASSPHRASE
    or is asked for on the terminal."""
    try:
        return MeshCA.load(directory)
    except KeyEncrypted:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if passphrase is None:
            passphrase = click.prompt(
                f"passphrase of {directory / 'ca.key'}", hide_input=True, err=True
            )
        return MeshCA.load(directory, passphrase.encode())


def _new_passphrase() -> bytes:
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        passphrase = click.prompt(
            "passphrase for the CA key", hide_input=True, confirmation_prompt=True, err=True
        )
    if len(passphrase) < 12:
        raise click.BadParameter("the passphrase must have at least 12 characters")
    return passphrase.encode()


def _serial_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--serial`` as ``p2pstore ca issue`` printed it (decimal) or in 0x-prefixed hex."""
    if value is None:
        return None
    try:
        return parse_serial(value)
    except IdentityError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group()
def ca() -> None:
    """Create the mesh CA; sign nodes' requests, renew, list and revoke their certificates.

    Keep the CA directory offline: only ca.crt and crl.pem are copied to nodes. Nodes make
    their own keys (p2pstore node init) and send a request; `issue`, which makes the key here,
    is for clients and rehearsals.
    """


@ca.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--mesh", "mesh_name", required=True, help="The mesh's name, written into every certificate."
)
@click.option("--days", default=3650, show_default=True, help="Validity of the CA certificate.")
@click.option(
    "--encrypt",
    is_flag=True,
    help=f"Encrypt ca.key with a passphrase (asked for, or ${PASSPHRASE_ENV}); every command "
    "that signs then asks for it.",
)
def init(directory: Path, mesh_name: str, days: int, encrypt: bool) -> None:
    """Create a new mesh CA in DIRECTORY (refuses to overwrite one)."""
    passphrase = _new_passphrase() if encrypt else None
    authority = MeshCA.create(
        directory, mesh_name=mesh_name, now=_now(), valid_days=days, passphrase=passphrase
    )
    click.echo(f"created mesh CA {mesh_name!r} in {directory}")
    sealed = "encrypted, " if encrypt else ""
    click.echo(f"  private key:      {directory / 'ca.key'} ({sealed}mode 0600: keep it offline)")
    click.echo(f"  certificate:      {directory / 'ca.crt'} (copy to every node)")
    click.echo(
        f"  revocation list:  {directory / 'crl.pem'} (copy to every node after each revoke)"
    )
    click.echo(f"  expires:          {authority.certificate.not_valid_after_utc:%Y-%m-%d}")


@ca.command("issue")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="File name for the identity: NAME.key and NAME.crt.")
@click.option(
    "--datacenter", required=True, help="The datacenter the node runs in, e.g. dc-strasbourg-1."
)
@click.option("--region", required=True, help="The region code of its jurisdiction, e.g. FR-GES.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the key and certificate [default: the CA directory].",
)
@click.option("--client", is_flag=True, help="A client identity (put/get), not a storage node.")
@click.option(
    "--tenant",
    default=None,
    help="The tenant (institution) a client identity acts for: its buckets and names.",
)
@click.option("--days", default=365, show_default=True, help="Validity of the certificate.")
def issue(
    directory: Path,
    name: str,
    datacenter: str,
    region: str,
    out_dir: Path | None,
    client: bool,
    tenant: str | None,
    days: int,
) -> None:
    """Issue a key and certificate made here, on the CA machine (clients, rehearsals).

    For a datacenter node prefer `p2pstore node init` on the node and `ca sign`: its key then
    never leaves it.
    """
    authority = _load(directory)
    target = out_dir or directory
    target.mkdir(parents=True, exist_ok=True)
    credentials = authority.issue(
        target,
        name,
        datacenter=datacenter,
        region=region,
        role=Role.CLIENT if client else Role.NODE,
        now=_now(),
        valid_days=days,
        tenant=tenant,
    )
    identity = credentials.identity
    click.echo(f"issued {identity.role.value} identity {name}")
    click.echo(f"  node id:     {identity.node_id.hex()}")
    click.echo(f"  datacenter:  {identity.datacenter}")
    click.echo(f"  region:      {identity.region}")
    if identity.tenant is not None:
        click.echo(f"  tenant:      {identity.tenant}")
    click.echo(f"  serial:      {identity.serial}")
    click.echo(f"  expires:     {identity.not_after:%Y-%m-%d}")
    click.echo(f"  key:         {credentials.key_path} (mode 0600)")
    click.echo(f"  certificate: {credentials.certificate_path}")


def _write_certificate(path: Path, pem: bytes) -> None:
    write_new_file(path, pem, PUBLIC_FILE_MODE)


@ca.command("sign")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("request_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the certificate [default: NAME.crt beside the request].",
)
@click.option("--datacenter", help="Certify this datacenter instead of the one requested.")
@click.option("--region", help="Certify this region instead of the one requested.")
@click.option("--client", is_flag=True, help="A client identity (put/get), not a storage node.")
@click.option(
    "--tenant",
    default=None,
    help="The tenant (institution) a client identity acts for: its buckets and names.",
)
@click.option("--days", default=365, show_default=True, help="Validity of the certificate.")
def sign(
    directory: Path,
    request_path: Path,
    out: Path | None,
    datacenter: str | None,
    region: str | None,
    client: bool,
    tenant: str | None,
    days: int,
) -> None:
    """Certify the key of a node's request (made by `p2pstore node init`) with the CA in
    DIRECTORY; the node's private key is never seen here.

    Check the printed node id with the node's operator before sending the certificate back.
    """
    request = read_request(request_path.read_bytes(), str(request_path))
    authority = _load(directory)
    certificate = authority.certify(
        request.public_key,
        request.name,
        datacenter=datacenter or request.datacenter,
        region=region or request.region,
        role=Role.CLIENT if client else Role.NODE,
        now=_now(),
        valid_days=days,
        tenant=tenant,
    )
    path = out or request_path.with_name(f"{request.name}.crt")
    _write_certificate(path, certificate.public_bytes(serialization.Encoding.PEM))
    _echo_certificate("signed", path)


@ca.command("renew")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("certificate_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the new certificate [default: NAME.renewed.crt beside the old one].",
)
@click.option("--days", default=365, show_default=True, help="Validity of the new certificate.")
def renew(directory: Path, certificate_path: Path, out: Path | None, days: int) -> None:
    """Certify the same key again (same node id, datacenter and region) for --days from now.

    Needs only the node's current certificate (public). The node keeps its id, fragments and
    records: install the new certificate in place of the old one and send the node SIGHUP (no
    restart). The old one stays valid until it expires.
    """
    authority = _load(directory)
    certificate = renew_certificate(
        authority, load_certificate(certificate_path), now=_now(), valid_days=days
    )
    path = out or certificate_path.with_name(f"{certificate_path.stem}.renewed.crt")
    _write_certificate(path, certificate.public_bytes(serialization.Encoding.PEM))
    _echo_certificate("renewed", path)


def _echo_certificate(what: str, path: Path) -> None:
    identity = identity_from_certificate(load_certificate(path))
    click.echo(f"{what} the {identity.role.value} certificate {path}")
    click.echo(f"  node id:     {identity.node_id.hex()}")
    click.echo(f"  datacenter:  {identity.datacenter}")
    click.echo(f"  region:      {identity.region}")
    if identity.tenant is not None:
        click.echo(f"  tenant:      {identity.tenant}")
    click.echo(f"  serial:      {identity.serial}")
    click.echo(f"  expires:     {identity.not_after:%Y-%m-%d}")


@ca.command("revoke")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--serial",
    callback=_serial_option,
    help="Serial number of the certificate to revoke (as 'ca issue' and 'ca list' print it).",
)
@click.option(
    "--certificate",
    "certificate_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate file to revoke.",
)
@click.option(
    "--publish",
    "client_config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Publish the new list in the mesh at once through this client's TOML file "
    "(as `ca publish --config` does).",
)
def revoke(
    directory: Path, serial: int | None, certificate_path: Path | None, client_config: Path | None
) -> None:
    """Revoke a certificate and re-sign the revocation list (crl.pem); with --publish, send it
    to the mesh, where every node adopts it within minutes."""
    if (serial is None) == (certificate_path is None):
        raise click.UsageError("give exactly one of --serial or --certificate")
    if certificate_path is not None:
        serial = identity_from_certificate(load_certificate(certificate_path)).serial
    assert serial is not None
    authority = _load(directory)
    crl_path = authority.revoke(serial, now=_now())
    click.echo(f"revoked serial {format_serial(serial)}; the revocation list is {crl_path}")
    if client_config is None:
        click.echo(
            f"publish it: p2pstore ca publish {directory} --config CLIENT.toml (nodes adopt it "
            "within minutes; no file is copied)"
        )
    else:
        _publish(revocation_record(authority, time.time()), "revocation list", client_config)


@ca.command("publish")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--config",
    "client_config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A client's TOML file: the identity that carries the records to the mesh (the CA key "
    "signs them, so any client of the mesh will do).",
)
def publish(directory: Path, client_config: Path) -> None:
    """Publish the CA's revocation list in the mesh's DHT, signed by the CA key.

    Every node fetches it when it joins and every [identity] trust_refresh, and passes a newer
    list on to its peers at once: revoked identities lose their sessions, their records and
    receipts stop counting, and stewards repair their fragments elsewhere. Run it after every
    revoke, and at least monthly: it re-signs crl.pem first (a new number, the next update 30
    days ahead), so the list in force never goes stale (the record lives 40 days).
    """
    authority = _load(directory)
    authority.refresh_revocation_list(now=_now())
    _publish(revocation_record(authority, time.time()), "revocation list", client_config)


@ca.command("policy")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "client_config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A client's TOML file, as for `ca publish`.",
)
def policy(directory: Path, policy_file: Path, client_config: Path) -> None:
    """Sign the mesh policy in POLICY_FILE (coding rules, steward pace, protocol versions; see
    bootstrap/README.md) and publish it: every node and client takes the newest, and a node's
    own [rules] may only tighten it. A put under a rule it does not know is refused."""
    now = time.time()
    mesh_policy = read_policy_file(policy_file, next_sequence(None, now))
    record = policy_record(_load(directory), mesh_policy, now)
    _publish(record, "mesh policy", client_config)


def _publish(record: SignedRecord, what: str, client_config: Path) -> None:
    config = load_client_config(client_config)

    async def send() -> int:
        async with connected_client(config) as client:
            return await publish_ca_record(client.dht, record)

    stored = trio.run(send)
    if not stored:
        raise click.ClickException(
            f"no node took {what} {record.sequence}: they already hold it or a newer one (see "
            "the nodes' revocation_list_adopted and mesh_policy_adopted log events)"
        )
    click.echo(f"published {what} {record.sequence}: {stored} nodes took it")


@ca.command("list")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def list_issued(directory: Path) -> None:
    """List the certificates the CA in DIRECTORY issued, and which are revoked."""
    authority = _load(directory)
    revoked = {revocation.serial for revocation in authority.revocations()}
    issued = authority.issued_certificates()
    click.echo(f"mesh CA {authority.mesh_name!r}: {len(issued)} issued, {len(revoked)} revoked")
    row = "{:>20}  {:<16} {:<6} {:<8}  {:<20} {:<8} {}"
    click.echo(row.format("serial", "name", "role", "node id", "datacenter", "region", "state"))
    for entry in issued:
        state = "revoked" if entry.serial in revoked else f"valid to {entry.not_after:%Y-%m-%d}"
        click.echo(
            row.format(
                format_serial(entry.serial),
                entry.name or "-",
                entry.role.value,
                entry.node_id.hex()[:8],
                entry.datacenter,
                entry.region,
                state,
            )
        )


@ca.command("show")
@click.argument("certificate_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def show(certificate_path: Path) -> None:
    """Print the identity a certificate binds."""
    identity = identity_from_certificate(load_certificate(certificate_path))
    click.echo(f"node id:     {identity.node_id.hex()}")
    click.echo(f"role:        {identity.role.value}")
    click.echo(f"datacenter:  {identity.datacenter}")
    click.echo(f"region:      {identity.region}")
    click.echo(f"serial:      {identity.serial}")
    window = f"{identity.not_before:%Y-%m-%d %H:%M} to {identity.not_after:%Y-%m-%d %H:%M} UTC"
    click.echo(f"valid:       {window}")
