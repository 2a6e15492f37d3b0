"""A datacenter node's lifecycle on real processes: SIGTERM in the middle of a put, a restart from
the same data directory with its bootstrap peer down, and a restart on a read-only disk.

Real processes, sockets and time.  Every wait is on something a process reports (a JSON log
line, its exit, a reply) under a deadline; nothing sleeps to let something happen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from disk_faults import refusing_writes
from test_admin_node import http_get
from test_cli_node import in_process_node
from test_cli_objects import wait_until_joined

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import DevnetNode, create_mesh
from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.errors import RemoteError
from p2pstore.net.contact_book import ContactBook
from p2pstore.net.fragments import fetch_fragment, store_fragment
from p2pstore.net.node import NodeSettings
from p2pstore.store import MAX_PAGE, DiskFragmentStore
from p2pstore.wire import HasFragments, HasFragmentsReply

pytestmark = pytest.mark.integration

REGIONS = ("FR-GES", "FR-IDF")
DEADLINE = 90.0
STOP_TIMEOUT = NodeSettings().stop_timeout
STOP_BOUND = 2 * STOP_TIMEOUT + 5.0
"""SIGTERM to exit: finishing the writes in flight and the goodbyes are each bounded by the
node's stop_timeout; the margin is for saving contacts, closing the store and exiting."""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pstore", *args]


class NodeRun:
    """One ``p2pstore node run`` process; a task of the test's nursery reads its JSON log
    (stderr) as it comes, so the pipe never fills and waits wake on the line they want."""

    def __init__(self, member: DevnetNode, process: trio.Process) -> None:
        self.member = member
        self.process = process
        self.records: list[dict[str, object]] = []
        self._changed = trio.Event()
        self._ended = False

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        async with self.process.stderr:
            while data := await self.process.stderr.receive_some(65536):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    try:
                        self.records.append(json.loads(text))
                    except ValueError:  # e.g. a traceback: kept, and shown if a wait fails
                        self.records.append({"event": None, "message": text})
                self._wake()
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def events(self, event: str) -> list[dict[str, object]]:
        return [record for record in self.records if record.get("event") == event]

    async def wait_for(self, event: str, count: int = 1, **fields: object) -> dict[str, object]:
        """The ``count``-th log record with this event and these field values."""
        while True:
            found = [r for r in self.events(event) if all(r.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found[count - 1]
            if self._ended:
                raise AssertionError(
                    f"{self.member.name}'s log ended without {count} {event} {fields}:\n"
                    + "\n".join(str(r.get("message")) for r in self.records)
                )
            await self._changed.wait()

    async def stop(self) -> None:
        """SIGTERM; asserts it exits 0 within :data:`STOP_BOUND` (trio's clock)."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_BOUND):
            code = await self.process.wait()
        assert code == 0, f"{self.member.name} exited {code}"


@contextlib.asynccontextmanager
async def node_runs(nursery: trio.Nursery) -> AsyncIterator[list[NodeRun]]:
    """Collects the node processes started in it; kills whatever is left on the way out."""
    runs: list[NodeRun] = []
    try:
        yield runs
    finally:
        for run in runs:
            if run.process.returncode is None:
                run.process.kill()
        with trio.CancelScope(shield=True):
            for run in runs:
                await run.process.wait()


async def start(nursery: trio.Nursery, runs: list[NodeRun], member: DevnetNode) -> NodeRun:
    process = await trio.lowlevel.open_process(
        cli("node", "run", "--config", str(member.directory / "node.toml")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run = NodeRun(member, process)
    runs.append(run)
    nursery.start_soon(run.read_log)
    return run


def configure(member: DevnetNode, bootstrap: tuple[str, ...]) -> None:
    write_local_node_config(
        member.directory,
        listen=member.address,
        bootstrap_peers=bootstrap,
        log_format="json",
        metrics_listen=member.admin_address,
    )


def stored_ids(data_dir: Path) -> tuple[set[bytes], int]:
    """The fragment ids in a stopped node's store, and how many a full scrub found corrupt."""
    with DiskFragmentStore(data_dir, 1 << 40) as store:
        ids = set(store.ids(None, MAX_PAGE))
        report = store.scrub(1 << 40, None)
        assert report.done and report.checked == len(ids) == store.usage().fragments
        return ids, len(report.corrupt_ids)


async def test_sigterm_during_a_put_then_a_restart_with_the_bootstrap_peer_down(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(16 * 1024 * 1024))
    _authority, members, _client = create_mesh(tmp_path / "mesh", 5, 5, REGIONS)
    hub, victim = members[0], members[-1]
    for member in members:
        configure(member, () if member is hub else (hub.address,))
    config = tmp_path / "mesh" / "client" / "client.toml"
    # Small chunks: the put is a long stream of fragment writes to every node.
    config.write_text(
        config.read_text().replace('# chunk_size = "4 MiB"', 'chunk_size = "256 KiB"')
    )
    put_done = trio.Event()
    put: subprocess.CompletedProcess[bytes] | None = None

    async def run_put() -> None:
        nonlocal put
        put = await trio.run_process(
            cli("put", str(source), "--rule", "replica-3", "--json", "--config", str(config)),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        put_done.set()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery, node_runs(nursery) as runs:
            nodes = {m.name: await start(nursery, runs, m) for m in members}
            for run in nodes.values():  # each joined the DHT (a node whose hub was not up yet
                await run.wait_for("joined")  # retries), and the client sees them all
            await wait_until_joined(config, len(members))

            # SIGTERM the victim once it holds a few fragments, while the put goes on.
            nursery.start_soon(run_put)
            await nodes[victim.name].wait_for("fragment_stored", count=5)
            assert not put_done.is_set(), "the put ended before the node was stopped"
            await nodes[victim.name].stop()  # exits 0 within STOP_BOUND
            await put_done.wait()
            assert put is not None
            stopping = await nodes[victim.name].wait_for("stopping")
            assert "SIGTERM" in str(stopping["message"])
            await nodes[victim.name].wait_for("stopped")
            acknowledged = {
                bytes.fromhex(str(r["fragment"]))
                for r in nodes[victim.name].events("fragment_stored")
            }

            # The put completes (another node takes the victim's share) or fails cleanly.
            if put.returncode == 0:
                summary = json.loads(put.stdout)
                assert summary["chunks"] == 64
            else:
                assert put.returncode == 1, put.stderr
                assert b"p2ps:read" not in put.stdout
                assert put.stderr.decode().startswith("p2pstore: error:"), put.stderr
                summary = None

            # Every fragment the victim acknowledged is on its disk, whole.
            at_stop, corrupt = stored_ids(victim.directory / "data")
            assert corrupt == 0
            assert acknowledged and acknowledged <= at_stop
            if summary is not None:
                stat = await trio.run_process(
                    cli("stat", summary["verify_cap"], "--json", "--config", str(config)),
                    capture_stdout=True,
                    capture_stderr=True,
                )
                placed_on_victim = {
                    bytes.fromhex(fragment["fragment_id"])
                    for chunk in json.loads(stat.stdout)["chunks"]
                    for fragment in chunk["fragments"]
                    if fragment["node_id"] == victim.node_id.hex()
                }
                assert placed_on_victim <= at_stop

            # The bootstrap peer goes down; the victim restarts from the same data directory
            # and rejoins through the contacts it saved.
            saved = {contact.id for contact in ContactBook(victim.directory / "data").load()}
            assert hub.node_id in saved and len(saved) >= 2  # whom it knew besides the hub
            await nodes[hub.name].stop()
            again = await start(nursery, runs, victim)
            opened = await again.wait_for("store_opened")
            assert (opened["fragments"], opened["writable"]) == (len(at_stop), True)
            # The DHT records it held for the mesh (manifests, placements, announcements).
            saved_records = (await nodes[victim.name].wait_for("records_saved"))["records"]
            assert saved_records >= 1
            loaded = await again.wait_for("records_loaded")
            assert (loaded["records"], loaded["dropped"]) == (saved_records, 0)
            assert (await again.wait_for("contacts_loaded"))["contacts"] == len(saved)
            await again.wait_for("bootstrap_failed", remote=hub.address)
            joined = await again.wait_for("joined")
            assert joined["saved_contacts"] == len(saved) - 1  # all but the hub
            await again.wait_for("announced")
            status, body = await http_get(victim.admin_address, "/health")
            assert status == 200, body

            if summary is not None:  # the object comes back whole, the hub still down
                copy = tmp_path / "copy.bin"
                got = await trio.run_process(
                    cli("get", summary["read_cap"], "-o", str(copy), "--config", str(config)),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                assert got.returncode == 0, got.stderr
                assert _digest(copy) == _digest(source)

            await again.stop()
            after_restart, corrupt = stored_ids(victim.directory / "data")
            assert (after_restart, corrupt) == (at_stop, 0)
            for name in (m.name for m in members[1:-1]):
                await nodes[name].stop()


def _digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


# --- a read-only disk ------------------------------------------------------------------------


def read_only(data_dir: Path) -> contextlib.AbstractContextManager[str]:
    """Everything in ``data_dir`` refuses writes, as on a disk remounted read-only."""
    return refusing_writes([*data_dir.rglob("*"), data_dir])


async def test_a_node_restarted_on_a_read_only_disk_serves_reads_and_refuses_writes(tmp_path):
    authority, (first, second), _client = create_mesh(tmp_path, 2, 2, REGIONS)
    assert authority.directory is not None
    configure(first, ())
    kept = b"stored while the disk was fine" * 1000
    kept_id = fragment_id(kept)
    late = b"arrives after the disk went read-only" * 100
    late_id = fragment_id(late)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery, node_runs(nursery) as runs:
            client = in_process_node(second, authority.directory)
            await nursery.start(client.run)
            run = await start(nursery, runs, first)
            await run.wait_for("joined")
            await store_fragment(client, first.node_id, first.address, kept_id, kept)
            await run.stop()
            with read_only(first.directory / "data") as strerror:
                run = await start(nursery, runs, first)
                opened = await run.wait_for("store_opened")
                assert opened["writable"] is False and opened["fragments"] == 1
                assert "NOT WRITABLE" in str(opened["message"])
                await run.wait_for("joined")

                status, body = await http_get(first.admin_address, "/health")
                health = json.loads(body)
                assert (status, health["joined"], health["store_writable"]) == (503, True, False)
                assert "opened read-only" in health["write_refusal"]
                assert strerror in health["write_refusal"]

                # Reads go on; writes get a typed refusal saying why; the node stays up.
                served = await fetch_fragment(client, first.node_id, first.address, kept_id)
                assert served == kept
                for _ in range(2):
                    with pytest.raises(RemoteError) as refused:
                        await store_fragment(client, first.node_id, first.address, late_id, late)
                    assert refused.value.code == "StoreNotWritable"
                    assert "store is not writable" in str(refused.value)
                reply = await client.call(
                    first.node_id, first.address, HasFragments(fragment_ids=(kept_id, late_id))
                )
                assert reply == HasFragmentsReply(present=(True, False))
                refusal = await run.wait_for("fragment_refused", reason="StoreNotWritable")
                assert late_id.hex()[:16] in str(refusal["message"])
                await run.stop()
            nursery.cancel_scope.cancel()
