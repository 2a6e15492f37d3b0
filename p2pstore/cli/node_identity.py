"""``p2pstore node init``: the node makes its own key, which never leaves it, and a certificate
request for the mesh CA (see identity/signing_request.py for why)."""

from __future__ import annotations

from pathlib import Path

import click

from p2pstore.identity.signing_request import write_new_identity


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True, help="File name: NAME.key (stays here) and NAME.csr.")
@click.option(
    "--datacenter", required=True, help="The datacenter the node runs in, e.g. dc-strasbourg-1."
)
@click.option("--region", required=True, help="The region code of its jurisdiction, e.g. FR-GES.")
def init(directory: Path, name: str, datacenter: str, region: str) -> None:
    """Create this node's private key and a certificate request in DIRECTORY.

    The key (NAME.key, mode 0600) never leaves the node. Send NAME.csr to the mesh CA's
    operator, who runs `p2pstore ca sign CA_DIR NAME.csr` and sends back NAME.crt.
    """
    key_path, request_path, node_id = write_new_identity(
        directory, name, datacenter=datacenter, region=region
    )
    click.echo(f"created the key of node {node_id.hex()}")
    click.echo(f"  private key: {key_path} (mode 0600: it never leaves this machine)")
    click.echo(f"  request:     {request_path} (send it to the mesh CA's operator)")
    click.echo(f"  asks for:    datacenter {datacenter}, region {region}")
    click.echo(
        "Tell the CA operator the node id above by another channel (phone, ticket): they check "
        "it against the request before signing."
    )
