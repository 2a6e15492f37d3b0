"""``p2pstore demo``: what a newcomer wants to see, on real node processes over mutual TLS.

A local mesh comes up; a file of random bytes is put (encrypted, coded 4-of-8, spread over
eight datacenters); the nodes holding half of a chunk's fragments are killed with SIGKILL, down
to exactly k fragments for that chunk; the file is got back and compared byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import signal
import time
from pathlib import Path

import click
import trio
from rich.console import Console

from p2pstore.cli.config_sections import parse_size
from p2pstore.cli.devnet import Observer, launch_local_mesh
from p2pstore.cli.local_mesh import LOCAL_CHECK_INTERVAL, LOCAL_GRACE_PERIOD, DevnetNode
from p2pstore.cli.object_commands import transfer_bar
from p2pstore.cli.object_status import health, status_table
from p2pstore.core.rules import DEFAULT_RULE_NAME, find_rule
from p2pstore.errors import ConfigError, P2PStoreError
from p2pstore.net.client import Client, ClientSettings, PutResult
from p2pstore.net.status import ObjectStatus

MiB = 1024 * 1024


class DemoScenario:
    """Put, kill, get, compare; every step printed with what it proves."""

    def __init__(self, size: int, rule_name: str, seed: int | None) -> None:
        self.size = size
        self.rule = find_rule(rule_name)
        self.seed = seed

    def _payload(self) -> bytes:
        if self.seed is None:
            return os.urandom(self.size)
        return seeded_bytes(self.size, self.seed)

    async def __call__(
        self, observer: Observer, members: list[DevnetNode], console: Console
    ) -> bool:
        try:
            return await self._run(observer, members, console)
        except P2PStoreError as error:
            console.print(f"[bold red]demo failed:[/] {error}")
            return False

    async def _run(self, observer: Observer, members: list[DevnetNode], console: Console) -> bool:
        client = Client(observer.dht, settings=ClientSettings())
        data = self._payload()
        digest = hashlib.sha256(data).hexdigest()
        console.rule("1. put")
        console.print(
            f"a file of {len(data) / MiB:.0f} MiB of random bytes, sha256 {digest[:16]}…, is "
            f"encrypted on the client, cut into chunks and coded {self.rule.k}-of-{self.rule.n} "
            f"(rule {self.rule.name}): each chunk becomes {self.rule.n} fragments, any "
            f"{self.rule.k} of which rebuild it, on {self.rule.n} different datacenters"
        )
        started = time.monotonic()
        with transfer_bar(len(data), "put", quiet=False) as progress:
            result = await client.put(io.BytesIO(data), len(data), self.rule, progress=progress)
        elapsed = time.monotonic() - started
        console.print(
            f"stored in {elapsed:.1f}s ({len(data) / MiB / elapsed:.0f} MiB/s); "
            f"the manifest went to {result.record_copies} nodes"
        )
        console.print(f"read cap:   {result.read_cap.to_string()}")
        console.print(f"verify cap: {result.verify_cap.to_string()}")
        console.print(status_table(await client.stat(result.verify_cap)))

        console.rule("2. kill")
        by_id = {member.node_id: member for member in members}
        victims = [by_id[h.node_id] for h in result.placement.chunks[0] if h is not None]
        victims = victims[: self.rule.n - self.rule.k]
        for victim in victims:
            if victim.process is not None:
                victim.process.send_signal(signal.SIGKILL)
        for victim in victims:
            if victim.process is not None:
                await victim.process.wait()
        killed_at = time.monotonic()
        names = ", ".join(f"{v.name} ({v.datacenter}, {v.region})" for v in victims)
        console.print(
            f"SIGKILL to {len(victims)} nodes holding fragments of chunk 0: {names}. "
            f"Chunk 0 is down to exactly k = {self.rule.k} live fragments; no chunk has fewer."
        )
        status = await client.stat(result.verify_cap)
        console.print(status_table(status))

        console.rule("3. get")
        received = hashlib.sha256()
        got = 0

        async def write(piece: bytes) -> None:
            nonlocal got
            received.update(piece)
            got += len(piece)

        started = time.monotonic()
        with transfer_bar(len(data), "get", quiet=False) as progress:
            await client.get(result.read_cap, write, progress=progress)
        elapsed = time.monotonic() - started
        same = received.hexdigest() == digest and got == len(data)
        if not same:
            console.print("[bold red]the bytes got back differ from the bytes put[/]")
            return False
        console.print(
            f"[bold green]got it back byte-identical[/] (sha256 {digest[:16]}…) in {elapsed:.1f}s "
            f"from the {len(members) - len(victims)} surviving nodes; the object is "
            f"{health(status)}: every fragment was checked against its id, every chunk "
            "authenticated by AES-256-GCM"
        )

        return await self._watch_repair(client, result, killed_at, console)

    async def _watch_repair(
        self, client: Client, result: PutResult, killed_at: float, console: Console
    ) -> bool:
        """Step 4: wait, without any command, for the stewards to repair what the kill broke."""
        console.rule("4. repair")
        rule = self.rule
        console.print(
            f"No command needed: each object's steward (the live node closest to its id) checks "
            f"the holders every {LOCAL_CHECK_INTERVAL:g}s; a holder silent for the grace period "
            f"({LOCAL_GRACE_PERIOD:g}s here, an hour by default) counts as lost, and a chunk "
            f"below {rule.repair_threshold} live fragments is rebuilt from any {rule.k} "
            "survivors, without the key, onto other datacenters (chunks still at or above the "
            "threshold are left alone: lazy repair)."
        )

        def healthy(status: ObjectStatus) -> bool:
            return all(status.live(i) >= rule.repair_threshold for i in range(len(status.present)))

        with trio.move_on_after(REPAIR_WAIT):
            while not healthy(status := await client.stat(result.verify_cap)):  # noqa: ASYNC110 - polls remote nodes: no local event to wait on
                await trio.sleep(LOCAL_CHECK_INTERVAL / 2)
        elapsed = time.monotonic() - killed_at
        console.print(status_table(status))
        if not healthy(status):
            console.print(
                f"[bold red]still below the repair threshold after {REPAIR_WAIT:g}s[/]: "
                "see the node logs"
            )
            return False
        console.print(
            f"[bold green]repaired[/]: chunk 0 is back to {status.live(0)}/{rule.n} live "
            f"fragments and every chunk is healthy, {elapsed:.0f}s after the kill, with no "
            "command run"
        )
        return True


REPAIR_WAIT = 180.0
"""Longest wait for the stewards to bring the object back to full redundancy."""


def seeded_bytes(size: int, seed: int) -> bytes:
    """Reproducible payload bytes for ``--seed`` (SHAKE-256 of the seed)."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


@click.command()
@click.option("--nodes", "-n", default=12, show_default=True, help="Node processes to start.")
@click.option("--size", default="24 MiB", show_default=True, help="Size of the random file to put.")
@click.option(
    "--rule", default=DEFAULT_RULE_NAME, show_default=True, help="Coding rule of the file."
)
@click.option("--seed", type=int, help="Make the file's bytes reproducible from this seed.")
@click.option(
    "--regions", default="FR-GES,FR-IDF", show_default=True, help="Region codes of the mesh."
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the mesh's files here [default: a temporary directory].",
)
@click.option("--keep", is_flag=True, help="Keep the mesh running after the demo (Ctrl-C stops).")
def demo(
    nodes: int,
    size: str,
    rule: str,
    seed: int | None,
    regions: str,
    directory: Path | None,
    keep: bool,
) -> None:
    """Start a local mesh, put a file, kill nodes down to k fragments, get it back, and
    watch the mesh repair itself.

    Everything is real: node processes on loopback talking mutual TLS with certificates from a
    throw-away mesh CA, fragments fsynced to each node's disk, the DHT finding the manifest.
    """
    # The demo narrates; the node logs (in each node's directory) keep the details.
    logging.getLogger("p2pstore").setLevel(logging.ERROR)
    try:
        scenario = DemoScenario(parse_size(size), rule, seed)
    except ConfigError as error:
        raise click.BadParameter(str(error)) from error
    launch_local_mesh(
        nodes,
        None,
        regions,
        directory,
        exit_when_ready=not keep,
        ready_timeout=60.0,
        scenario=scenario,
    )
