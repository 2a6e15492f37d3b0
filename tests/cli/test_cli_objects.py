"""``p2pstore put / get / stat`` against real node processes over mutual TLS; a node killed with
SIGKILL in the middle of a put; the client's configuration."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from p2pstore.cli.client_config import connected_client, load_client_config, write_client_config
from p2pstore.cli.local_mesh import DevnetNode, create_mesh
from p2pstore.core.records import manifest_key
from p2pstore.core.rules import CodingRule
from p2pstore.errors import ConfigError, P2PStoreError
from p2pstore.store import DiskFragmentStore

DEADLINE = 120.0
REGIONS = ("FR-GES", "FR-IDF")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pstore", *args]


@asynccontextmanager
async def running_mesh(
    directory: Path,
    count: int,
    configure: Callable[[list[DevnetNode]], None] | None = None,
) -> AsyncIterator[tuple[list[DevnetNode], dict[str, trio.Process], Path]]:
    """``count`` node processes of a fresh local mesh, joined; yields members, their processes
    by name, and the client config.  ``configure`` may rewrite the nodes' node.toml first."""
    _authority, members, _client = create_mesh(directory, count, count, REGIONS)
    if configure is not None:
        configure(members)
    processes: dict[str, trio.Process] = {}
    logs = []
    try:
        for member in members:
            log = (member.directory / "node.log").open("ab")
            logs.append(log)
            processes[member.name] = await trio.lowlevel.open_process(
                cli("node", "run", "--config", str(member.directory / "node.toml")),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        config = directory / "client" / "client.toml"
        await wait_until_joined(config, count)
        yield members, processes, config
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.kill()
        with trio.CancelScope(shield=True):
            for process in processes.values():
                await process.wait()
        for log in logs:
            log.close()


async def wait_until_joined(config: Path, count: int) -> None:
    """Real processes: ask the mesh through a client until it knows every node (bounded)."""
    everyone = CodingRule("probe", k=1, n=1, repair_threshold=1)
    with trio.fail_after(60):
        while True:
            try:
                async with connected_client(load_client_config(config)) as client:
                    if len(await client.candidates(everyone)) >= count:
                        return
            except* (P2PStoreError, OSError):
                pass  # a node not listening yet
            await trio.sleep(0.3)


async def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    done = await trio.run_process(cli(*args), capture_stdout=True, capture_stderr=True, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"{args[0]} exited {done.returncode}: {done.stderr.decode()}")
    return done


@pytest.mark.integration
async def test_put_get_stat_across_node_processes(tmp_path):
    source = tmp_path / "report.bin"
    source.write_bytes(os.urandom(9 * 1024 * 1024 + 77))
    with trio.fail_after(DEADLINE):
        async with running_mesh(tmp_path / "mesh", 9) as (members, processes, config):
            put = await run("put", str(source), "--json", "--config", str(config))
            summary = json.loads(put.stdout)
            assert summary["size"] == source.stat().st_size
            assert (summary["k"], summary["n"], summary["rule"]) == (4, 8, "standard")
            assert summary["chunks"] == 3
            cap = summary["read_cap"]

            stat = json.loads((await run("stat", summary["verify_cap"], "--json",
                                         "--config", str(config))).stdout)
            assert stat["state"] == "healthy"
            assert [chunk["live"] for chunk in stat["chunks"]] == [8, 8, 8]
            every = {f["node_id"] for c in stat["chunks"] for f in c["fragments"]}
            assert {a["node_id"] for a in stat["audits"]} == every  # each proved a fragment
            assert {a["verdict"] for a in stat["audits"]} == {"passed"}
            assert stat["audit_failures"] == []

            # Kill n-k holders of chunk 0: it is down to k, and the file still comes back.
            holders = {f["node_id"] for f in stat["chunks"][0]["fragments"]}
            victims = [m for m in members if m.node_id.hex() in holders][:4]
            for victim in victims:
                processes[victim.name].send_signal(signal.SIGKILL)
                await processes[victim.name].wait()
            out = tmp_path / "copy.bin"
            await run("get", cap, "-o", str(out), "--config", str(config))
            assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(
                source.read_bytes()
            ).digest()
            stat = json.loads((await run("stat", cap, "--json", "--config", str(config))).stdout)
            assert stat["state"] == "degraded"
            assert stat["chunks"][0]["live"] == 4

            # Refusals are one clear line each, and never leave a file behind.
            exists = await run("get", cap, "-o", str(out), "--config", str(config), check=False)
            assert exists.returncode == 2 and b"exists" in exists.stderr
            verify_only = await run(
                "get", summary["verify_cap"], "-o", str(tmp_path / "x"), "--config",
                str(config), check=False,
            )
            assert verify_only.returncode == 2 and b"verify cap cannot read" in verify_only.stderr
            wrong_key = cap[: cap.rindex(":") + 1] + "a" * 52
            bad = await run("get", wrong_key, "-o", str(tmp_path / "y"), "--config",
                            str(config), check=False)
            assert bad.returncode == 1
            assert b"p2pstore: error:" in bad.stderr
            assert not (tmp_path / "y").exists()
            assert not list(tmp_path.glob(".y.*.part"))


@pytest.mark.integration
async def test_a_node_killed_mid_put_leaves_no_cap_and_no_corrupt_fragment(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 * 1024 * 1024))
    with trio.fail_after(DEADLINE):
        async with running_mesh(tmp_path / "mesh", 8) as (members, processes, config):
            # Small chunks: the put is a long stream of fragment writes to every node.
            text = config.read_text().replace('# chunk_size = "4 MiB"', 'chunk_size = "256 KiB"')
            config.write_text(text)
            victim = members[-1]
            fragments = victim.directory / "data" / "fragments"
            put = await trio.lowlevel.open_process(
                cli("put", str(source), "--json", "--config", str(config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            while sum(1 for f in fragments.rglob("*") if f.is_file()) < 20:  # bounded by fail_after
                if put.returncode is not None:
                    pytest.fail("the put finished before the node could be killed")
                await trio.sleep(0.05)
            processes[victim.name].send_signal(signal.SIGKILL)
            await processes[victim.name].wait()
            assert put.stdout is not None and put.stderr is not None
            stdout, stderr = b"", b""
            async with trio.open_nursery() as nursery:

                async def drain() -> None:
                    nonlocal stdout, stderr
                    stdout = await _read_all(put.stdout)
                    stderr = await _read_all(put.stderr)

                nursery.start_soon(drain)
                await put.wait()
            # Eight datacenters were needed, seven are left: the put fails naming why, and no
            # capability is printed for an object that is not fully stored.
            assert put.returncode == 1, stderr
            assert b"p2ps:read" not in stdout
            assert re.search(rb"needs 8 .*\b7 (datacenters|are reachable)", stderr), stderr

    # The killed node's disk: every fragment under its name is whole and hashes to its id.
    store = DiskFragmentStore(victim.directory / "data", 1 << 30)
    try:
        usage = store.usage()
        assert usage.fragments > 0
        report = store.scrub(1 << 40, None)
        assert report.checked == usage.fragments
        assert report.corrupt_ids == ()
    finally:
        store.close()


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = []
    while data := await stream.receive_some(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_client_config_errors_name_the_key(tmp_path):
    (tmp_path / "c.key").write_text("k")
    (tmp_path / "c.crt").write_text("c")
    (tmp_path / "ca.crt").write_text("ca")
    path = write_client_config(
        tmp_path,
        key="c.key",
        certificate="c.crt",
        ca_certificate="ca.crt",
        revocation_list=None,
        bootstrap_peers=("127.0.0.1:7000",),
    )
    config = load_client_config(path)
    assert config.rule.name == "standard"
    assert len(config.read_secret() or b"") == 64
    assert oct((tmp_path / "client.secret").stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    cases = {
        'rule = "standard"': ('rule = "fast"', "[client] rule: no coding rule named 'fast'"),
        '# chunk_size = "4 MiB"': ('chunk_size = "12 parsecs"', "[client] chunk_size"),
        'peers = ["127.0.0.1:7000"]': ("peers = []", "[bootstrap]: name at least one peer"),
        "[client]": ("[client]\nrul = 1", "did you mean 'rule'"),
    }
    for old, (new, expected) in cases.items():
        path.write_text(text.replace(old, new))
        with pytest.raises(ConfigError) as error:
            load_client_config(path)
        assert expected in str(error.value)
    path.write_text(text)
    (tmp_path / "client.secret").write_text("short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_client_config(path).read_secret()


@pytest.mark.integration
async def test_check_sees_silent_holders_and_repair_rebuilds_them_with_a_verify_cap(tmp_path):
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(1024 * 1024 + 5))
    with trio.fail_after(DEADLINE):
        async with running_mesh(tmp_path / "mesh", 12) as (members, processes, config):
            put = json.loads((await run("put", str(source), "--json", "--config",
                                        str(config))).stdout)
            verify = put["verify_cap"]
            healthy = await run("check", verify, "--json", "--config", str(config))
            report = json.loads(healthy.stdout)
            assert report["exit_status"] == 0
            assert len(report["audits"]) == 8 and report["audit_failures"] == []
            assert {a["verdict"] for a in report["audits"]} == {"passed"}
            stat = json.loads((await run("stat", verify, "--json", "--config",
                                         str(config))).stdout)
            holders = [f["node_id"] for f in stat["chunks"][0]["fragments"]]
            victims = [m for m in members if m.node_id.hex() in holders][:3]
            for victim in victims:
                processes[victim.name].send_signal(signal.SIGKILL)
                await processes[victim.name].wait()
            # Within the grace period the silent holders still count: readable, below threshold.
            degraded = await run("check", verify, "--json", "--config", str(config), check=False)
            report = json.loads(degraded.stdout)
            assert degraded.returncode == 3, degraded.stderr
            chunk = report["objects"][0]["chunks"][0]
            assert (len(chunk["live"]), len(chunk["silent"])) == (5, 3)
            # --repair: the operator overrides the grace period; a verify cap is enough.
            repaired = await run("check", verify, "--repair", "--json", "--config", str(config))
            report = json.loads(repaired.stdout)
            moved = report["objects"][0]["chunks"][0]["repaired"]
            dead = {v.node_id.hex() for v in victims}
            assert len(moved) == 3 and not {m["node"] for m in moved} & dead
            stat = json.loads((await run("stat", verify, "--json", "--config",
                                         str(config))).stdout)
            assert stat["chunks"][0]["live"] == 8
            datacenters = [f["datacenter"] for f in stat["chunks"][0]["fragments"]]
            assert len(set(datacenters)) == 8


@pytest.mark.integration
async def test_node_drain_moves_a_stopped_nodes_fragments_off_it_and_exits_empty(tmp_path):
    """The operator's path out of the mesh: stop the daemon, ``p2pstore node drain``; stewards
    copy every fragment it holds to datacenters the rule allows, and the node ends empty."""

    def distance(member: DevnetNode, cap: dict[str, str]) -> int:
        key = manifest_key(bytes.fromhex(cap["object_id"]))
        return int.from_bytes(member.node_id, "big") ^ int.from_bytes(key, "big")

    sources: list[Path] = []
    caps: list[dict[str, str]] = []
    with trio.fail_after(DEADLINE):
        async with running_mesh(tmp_path / "mesh", 10) as (members, processes, config):
            counts = {m.node_id.hex(): 0 for m in members}
            # The hard case: the node leaving is the steward (the node closest to the key) of
            # an object it holds a fragment of, so no other node stewards that object while it
            # runs; it must come back from its restart holding the object's records.  Objects
            # are put until one's steward holds one of its fragments (8 of 10 nodes do).
            leaving = None
            while leaving is None or len(caps) < 3:
                assert len(caps) < 12, "no object's steward held one of its fragments"
                source = tmp_path / f"object-{len(caps)}.bin"
                source.write_bytes(os.urandom(512 * 1024 + len(caps)))
                sources.append(source)
                put = await run("put", str(source), "--json", "--config", str(config))
                caps.append(json.loads(put.stdout))
                stat = await run("stat", caps[-1]["verify_cap"], "--json", "--config", str(config))
                holders = [
                    fragment["node_id"]
                    for chunk in json.loads(stat.stdout)["chunks"]
                    for fragment in chunk["fragments"]
                ]
                for holder in holders:
                    counts[holder] += 1
                steward = min(members, key=lambda m: distance(m, caps[-1]))
                if leaving is None and steward.node_id.hex() in holders:
                    leaving = steward
            held = counts[leaving.node_id.hex()]
            assert held >= 1
            processes[leaving.name].send_signal(signal.SIGTERM)
            assert await processes[leaving.name].wait() == 0

            drained = await run(
                "node", "drain", "--config", str(leaving.directory / "node.toml"),
                "--deadline", "90s", check=False,
            )  # fmt: skip
            assert drained.returncode == 0, drained.stderr.decode()[-3000:]
            assert f"drained: {held} of {held} fragments moved" in drained.stdout.decode()
            with DiskFragmentStore(leaving.directory / "data", 1 << 40) as store:
                assert store.usage().fragments == 0

            for cap, source in zip(caps, sources, strict=True):
                stat = json.loads((await run("stat", cap["verify_cap"], "--json", "--config",
                                             str(config))).stdout)  # fmt: skip
                for chunk in stat["chunks"]:
                    holders = [f["node_id"] for f in chunk["fragments"]]
                    assert leaving.node_id.hex() not in holders
                    assert chunk["live"] == 8  # copies, every one live, none lost
                    assert len({f["datacenter"] for f in chunk["fragments"]}) == 8
                copy = tmp_path / f"copy-{source.name}"
                await run("get", cap["read_cap"], "-o", str(copy), "--config", str(config))
                assert copy.read_bytes() == source.read_bytes()
