"""The ``p2pstore`` command.

Every P2PStoreError reaching the top is printed as one line on stderr with exit code 1 (2 for
usage and configuration errors): the messages are written for the person at the terminal, so no
traceback is shown unless ``--debug`` asks for it.
"""

from __future__ import annotations

import sys

import click

from p2pstore import __version__
from p2pstore.errors import ConfigError, P2PStoreError


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as trio's nurseries raise them."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (P2PStoreError, BaseExceptionGroup) as error:
            leaves = _leaves(error)
            if ctx.params.get("debug") or not all(isinstance(e, P2PStoreError) for e in leaves):
                raise
            for leaf in leaves:
                click.echo(f"p2pstore: error: {leaf}", err=True)
            sys.exit(2 if all(isinstance(e, ConfigError) for e in leaves) else 1)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="p2pstore")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """p2pstore: a sovereign peer-to-peer storage mesh.

    \b
    Start here:
      p2pstore demo              a local mesh: put a file, kill nodes, get it back
      p2pstore devnet            a local mesh of node processes on loopback
      p2pstore put FILE          store a file (see put --help for the client config)
      p2pstore get CAP -o FILE   read it back;  p2pstore stat CAP: where it lives
      p2pstore check CAP         verify every fragment (--repair rebuilds what is missing)
      p2pstore bucket create B   a bucket; then cp FILE B/KEY, ls B/, cp B/KEY FILE, rm B/KEY
      p2pstore ca --help         create the mesh CA, issue and revoke certificates
      p2pstore node run --help   run a datacenter node from its TOML config
      p2pstore simulate S --out D   run churn scenario S in the simulator (simulations/)
      p2pstore gateway --config G   serve the mesh as an S3 endpoint
    """


def _register() -> None:
    from p2pstore.cli.bucket_commands import bucket, cp, ls, rm, stat
    from p2pstore.cli.ca_commands import ca
    from p2pstore.cli.check_command import check
    from p2pstore.cli.demo import demo
    from p2pstore.cli.devnet import devnet
    from p2pstore.cli.gateway_commands import gateway
    from p2pstore.cli.node_commands import node
    from p2pstore.cli.object_commands import get, put
    from p2pstore.cli.simulate import simulate

    cli.add_command(ca)
    cli.add_command(node)
    cli.add_command(devnet)
    cli.add_command(demo)
    cli.add_command(simulate)
    cli.add_command(gateway)
    for command in (put, get, stat, check, bucket, cp, ls, rm):
        cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli()
