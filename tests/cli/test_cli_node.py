"""``p2pstore node run`` as a real process: it listens, admits a peer by its certificate, drops it
when the CA revokes it on SIGHUP, and stops cleanly on SIGTERM/SIGINT.  Real sockets and real
time; every wait reads the process's log lines under a deadline."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import DevnetNode, create_mesh
from p2pstore.codec.fragment_ids import fragment_id as fragment_id_of
from p2pstore.errors import PeerRefused, PeerUnreachable
from p2pstore.identity import MeshCA, NodeCredentials, TrustAnchor
from p2pstore.net.fragments import fetch_fragment, store_fragment
from p2pstore.net.node import Node
from p2pstore.net.tls import TlsSettings, TlsTransport

pytestmark = pytest.mark.integration

DEADLINE = 30.0
STOP_DEADLINE = 5.0


def node_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "p2pstore", "node", "run", "--config", str(config)]


class NodeProcess:
    """A running ``p2pstore node run`` whose stderr (its log) is read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._pending = b""
        self._eof = False

    async def _read_line(self) -> bool:
        """Read until one more line is complete; False at end of output."""
        assert self.process.stderr is not None
        while b"\n" not in self._pending:
            data = await self.process.stderr.receive_some(65536)
            if not data:
                if self._pending:
                    self.lines.append(self._pending.decode())
                    self._pending = b""
                    return True
                self._eof = True
                return False
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        self.lines.append(line.decode())
        return True

    async def wait_for(self, matches: Callable[[str], bool]) -> str:
        """The first line (already read or coming) that ``matches``; fails at end of output."""
        index = 0
        while True:
            while index < len(self.lines):
                if matches(self.lines[index]):
                    return self.lines[index]
                index += 1
            if self._eof or not await self._read_line():
                raise AssertionError("the node's log ended without the line:\n" + self.log())

    async def wait_for_event(
        self, event: str, *, saying: str = "", **fields: str
    ) -> dict[str, object]:
        """The first JSON log record with this ``event``, these field values, and ``saying`` in
        its message."""

        def matches(line: str) -> bool:
            record = json.loads(line)
            return (
                record.get("event") == event
                and saying in record.get("message", "")
                and all(record.get(k) == v for k, v in fields.items())
            )

        return json.loads(await self.wait_for(matches))

    async def read_to_end(self) -> list[str]:
        while not self._eof and await self._read_line():
            pass
        return self.lines

    def log(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def node_process(config: Path, parent_fd: int | None = None) -> AsyncIterator[NodeProcess]:
    extra = [] if parent_fd is None else ["--parent-fd", str(parent_fd)]
    process = await trio.lowlevel.open_process(
        [*node_command(config), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=() if parent_fd is None else (parent_fd,),
    )
    try:
        yield NodeProcess(process)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            assert process.stderr is not None
            await process.stderr.aclose()


def write_config(member: DevnetNode, log_format: str, listen: str = "127.0.0.1:0") -> Path:
    """node.toml of ``member``, created by devnet.create_mesh, with no bootstrap peers."""
    return write_local_node_config(member.directory, listen=listen, log_format=log_format)


@pytest.fixture
def mesh(tmp_path: Path) -> tuple[MeshCA, list[DevnetNode]]:
    authority, members, _observer = create_mesh(tmp_path, 2, 2, ("FR-GES", "FR-IDF"))
    return authority, members


def in_process_node(member: DevnetNode, ca_dir: Path) -> Node:
    credentials = NodeCredentials.load(member.directory / "node.key", member.directory / "node.crt")
    trust = TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    transport = TlsTransport(
        credentials,
        trust,
        str(ca_dir / "ca.crt"),
        settings=TlsSettings(connect_timeout=5, handshake_timeout=5),
    )
    return Node(credentials, transport)


async def test_node_admits_a_peer_drops_it_when_revoked_and_stops_cleanly(mesh, log_events):
    authority, (first, second) = mesh
    assert authority.directory is not None
    ca_dir = authority.directory
    config = write_config(first, "json")
    with trio.fail_after(DEADLINE):
        async with node_process(config) as daemon, trio.open_nursery() as nursery:
            starting = await daemon.wait_for_event("starting")
            assert starting["level"] == "info"
            listening = await daemon.wait_for_event("listening")
            address = str(listening["address"])
            assert address.startswith("127.0.0.1:") and not address.endswith(":0")

            # A second node connects; each side names the other from its certificate.
            peer = in_process_node(second, ca_dir)
            await nursery.start(peer.run)
            who = await peer.connect(address, expected_id=first.node_id)
            assert (who.datacenter, who.region) == (first.datacenter, first.region)
            connected = await daemon.wait_for_event("peer_connected", peer=second.node_id.hex())
            assert connected["datacenter"] == second.datacenter == "dc-2"
            assert connected["region"] == second.region == "FR-IDF"
            assert second.node_id.hex()[:8] in str(connected["message"])

            # The CA revokes the peer; SIGHUP makes the running node drop it.
            serial = peer.identity.serial
            authority.revoke(serial, now=datetime.now(UTC))
            daemon.process.send_signal(signal.SIGHUP)
            await daemon.wait_for_event("peer_revoked", peer=second.node_id.hex())
            reloaded = await daemon.wait_for_event("trust_reloaded")
            assert "1 revoked" in str(reloaded["message"])
            while peer.peers():
                await peer.wait_peers_changed()
            record = await log_events.wait_for(event="peer_disconnected", peer=first.node_id.hex())
            assert "certificate revoked" in record.getMessage()

            # ... and refuses it from now on.
            with pytest.raises((PeerUnreachable, PeerRefused)):
                await peer.connect(address, expected_id=first.node_id)
            await daemon.wait_for_event("peer_refused", reason="revoked")

            # A revocation list that cannot be read, or a CA the TLS contexts were not built
            # with, is refused on SIGHUP; the node keeps running on what it had.
            (ca_dir / "crl.pem").write_text("garbage\n", encoding="utf-8")
            daemon.process.send_signal(signal.SIGHUP)
            await daemon.wait_for_event("trust_reload_failed", saying="crl.pem")
            other = MeshCA.create(
                ca_dir.parent / "other-ca", mesh_name="other", now=datetime.now(UTC)
            )
            assert other.directory is not None
            for name in ("ca.crt", "crl.pem"):
                (ca_dir / name).write_bytes((other.directory / name).read_bytes())
            daemon.process.send_signal(signal.SIGHUP)
            await daemon.wait_for_event("trust_reload_failed", saying="restart the node")
            assert daemon.process.returncode is None

            daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(STOP_DEADLINE):
                assert await daemon.process.wait() == 0
            lines = await daemon.read_to_end()
            nursery.cancel_scope.cancel()

    records = [json.loads(line) for line in lines]
    events = [record.get("event") for record in records]
    assert all(isinstance(record, dict) for record in records)
    assert None not in events, "a log line without an event field:\n" + "\n".join(lines)
    # The stop: the signal, what was saved for the next start, the end.
    assert events[-3:] == ["stopping", "records_saved", "stopped"]
    assert "SIGTERM" in records[-3]["message"]
    assert {"time", "level", "logger", "message", "event"} <= set(records[-1])


async def test_node_logs_text_and_stops_on_sigint(mesh):
    _authority, (first, _second) = mesh
    config = write_config(first, "text")
    with trio.fail_after(DEADLINE):
        async with node_process(config) as daemon:
            line = await daemon.wait_for(lambda text: " listening on 127.0.0.1:" in text)
            assert "INFO" in line and f"({first.datacenter}, {first.region})" in line
            daemon.process.send_signal(signal.SIGINT)
            with trio.fail_after(STOP_DEADLINE):
                assert await daemon.process.wait() == 0
            lines = await daemon.read_to_end()
    stopping = [i for i, line in enumerate(lines) if "received SIGINT: stopping" in line]
    assert len(stopping) == 1 and stopping[0] < len(lines) - 1
    assert lines[-1].endswith("node stopped [event=stopped]"), lines[-3:]
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert (first.directory / "data").is_dir()


@pytest.mark.parametrize("parent_gone", ["while running", "before it started"])
async def test_node_stops_cleanly_when_the_pipe_from_its_parent_closes(mesh, parent_gone):
    """``--parent-fd``: how a local mesh's nodes die with it.  End-of-file on the inherited pipe
    (the parent exited, however) stops the node as SIGTERM would, even if the parent was gone
    before the node looked."""
    _authority, (first, _second) = mesh
    config = write_config(first, "json")
    read_end, write_end = os.pipe()
    try:
        with trio.fail_after(DEADLINE):
            async with node_process(config, parent_fd=read_end) as daemon:
                os.close(read_end)
                if parent_gone == "while running":
                    await daemon.wait_for_event("listening")
                os.close(write_end)
                write_end = -1
                await daemon.wait_for_event("parent_exited")
                with trio.fail_after(STOP_DEADLINE):
                    assert await daemon.process.wait() == 0
                lines = await daemon.read_to_end()
    finally:
        if write_end >= 0:
            os.close(write_end)
    events = [json.loads(line).get("event") for line in lines]
    assert events.index("parent_exited") < events.index("stopping")
    assert events[-2:] == ["records_saved", "stopped"]


def test_a_config_error_exits_2_with_one_line_naming_the_key(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text('[node]\nlisen = "127.0.0.1:7400"\n', encoding="utf-8")
    result = subprocess.run(
        node_command(config), check=False, capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"p2pstore: error: {config}: [node] lisen: unknown key; did you mean 'listen'?\n"
    )


def test_a_missing_config_file_exits_2(tmp_path):
    result = subprocess.run(
        node_command(tmp_path / "nowhere.toml"),
        check=False,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"p2pstore: error: {tmp_path / 'nowhere.toml'}: no such configuration file"
    ]


def test_a_busy_port_exits_1_with_one_line(mesh):
    _authority, (first, _second) = mesh
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(first, "text", listen=f"127.0.0.1:{port}")
        result = subprocess.run(
            node_command(config), check=False, capture_output=True, text=True, timeout=DEADLINE
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"p2pstore: error: cannot listen on 127.0.0.1:{port}: ")


def test_a_data_directory_of_sha256_fragment_ids_is_refused_and_kept(mesh):
    """A data directory of the previous release (store format 1): the node exits 1 saying what
    to do, and every file in it is left as it was."""
    _authority, (first, _second) = mesh
    config = write_config(first, "text")
    data_dir = first.directory / "data"
    old = b"a fragment stored by the previous release"
    old_file = data_dir / "fragments" / hashlib.sha256(old).hexdigest()[:2]
    old_file.mkdir(parents=True)
    old_file = old_file / hashlib.sha256(old).hexdigest()
    old_file.write_bytes(old)
    before = sorted(p for p in data_dir.rglob("*"))
    result = subprocess.run(
        node_command(config), check=False, capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert "is a fragment store of format 1" in last and "empty data directory" in last
    assert sorted(p for p in data_dir.rglob("*") if p.name != "lock") == before
    assert old_file.read_bytes() == old


async def test_a_node_process_keeps_fragments_across_a_restart(mesh):
    """A fragment stored over mutual TLS is durable: after SIGTERM and a restart on the same
    data directory the node still serves it, byte for byte."""
    authority, (first, second) = mesh
    assert authority.directory is not None
    config = write_config(first, "json", listen=first.address)
    data = b"an encrypted, erasure-coded fragment" * 1000
    fragment_id = fragment_id_of(data)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            client = in_process_node(second, authority.directory)
            await nursery.start(client.run)
            async with node_process(config) as daemon:
                opened = await daemon.wait_for_event("store_opened")
                assert opened["fragments"] == 0 and opened["writable"] is True
                await daemon.wait_for_event("listening")
                await store_fragment(client, first.node_id, first.address, fragment_id, data)
                daemon.process.send_signal(signal.SIGTERM)
                with trio.fail_after(STOP_DEADLINE):
                    assert await daemon.process.wait() == 0
            async with node_process(config) as daemon:
                reopened = await daemon.wait_for_event("store_opened")
                assert reopened["fragments"] == 1 and reopened["bytes_used"] == len(data)
                await daemon.wait_for_event("listening")
                served = await fetch_fragment(client, first.node_id, first.address, fragment_id)
                assert served == data
                daemon.process.send_signal(signal.SIGTERM)
                with trio.fail_after(STOP_DEADLINE):
                    assert await daemon.process.wait() == 0
            nursery.cancel_scope.cancel()
