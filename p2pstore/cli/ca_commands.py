"""``p2pstore ca``: the mesh CA ceremony — create it, issue node certificates, revoke them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from p2pstore.errors import IdentityError
from p2pstore.identity import (
    MeshCA,
    Role,
    format_serial,
    identity_from_certificate,
    load_certificate,
    parse_serial,
)


def _now() -> datetime:
    return datetime.now(UTC)


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
    """Create the mesh CA; issue, list and revoke node certificates.

    Keep the CA directory offline: only ca.crt and crl.pem are copied to nodes.
    """


@ca.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--mesh", "mesh_name", required=True, help="The mesh's name, written into every certificate."
)
@click.option("--days", default=3650, show_default=True, help="Validity of the CA certificate.")
def init(directory: Path, mesh_name: str, days: int) -> None:
    """Create a new mesh CA in DIRECTORY (refuses to overwrite one)."""
    authority = MeshCA.create(directory, mesh_name=mesh_name, now=_now(), valid_days=days)
    click.echo(f"created mesh CA {mesh_name!r} in {directory}")
    click.echo(f"  private key:      {directory / 'ca.key'} (mode 0600: keep it offline)")
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
    """Issue a node (or client) identity signed by the CA in DIRECTORY."""
    authority = MeshCA.load(directory)
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
def revoke(directory: Path, serial: int | None, certificate_path: Path | None) -> None:
    """Revoke a certificate and re-sign the revocation list (crl.pem)."""
    if (serial is None) == (certificate_path is None):
        raise click.UsageError("give exactly one of --serial or --certificate")
    if certificate_path is not None:
        serial = identity_from_certificate(load_certificate(certificate_path)).serial
    assert serial is not None
    authority = MeshCA.load(directory)
    crl_path = authority.revoke(serial, now=_now())
    click.echo(
        f"revoked serial {format_serial(serial)}; copy {crl_path} to every node and send them "
        "SIGHUP"
    )


@ca.command("list")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def list_issued(directory: Path) -> None:
    """List the certificates the CA in DIRECTORY issued, and which are revoked."""
    authority = MeshCA.load(directory)
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
