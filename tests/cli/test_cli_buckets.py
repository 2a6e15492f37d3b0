"""``p2pstore bucket``, ``cp``, ``ls``, ``rm`` and ``stat BUCKET/KEY`` against real node
processes over mutual TLS, as a tenant's user types them (the devnet client acts for a tenant)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import trio
from test_cli_objects import DEADLINE, cli, run, running_mesh

from p2pstore.cli.client_config import load_client_config, write_client_config
from p2pstore.errors import ConfigError


async def run_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    done = await trio.run_process(
        cli(*args), stdin=data, capture_stdout=True, capture_stderr=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{args[0]} exited {done.returncode}: {done.stderr.decode()}")
    return done


@pytest.mark.integration
async def test_a_tenant_uses_buckets_and_names_across_node_processes(tmp_path):
    report = tmp_path / "report.bin"
    report.write_bytes(os.urandom(300_000))
    with trio.fail_after(DEADLINE * 2):
        async with running_mesh(tmp_path / "mesh", 6) as (_members, _processes, config):
            c = ("--config", str(config))
            await run("bucket", "create", "photos", "--rule", "replica-3", *c)
            listed = json.loads((await run("bucket", "ls", "--json", *c)).stdout)
            assert [b["name"] for b in listed] == ["photos"]
            again = await run("bucket", "create", "photos", *c, check=False)
            assert again.returncode == 1 and b"already exists" in again.stderr

            await run("cp", str(report), "photos/2026/report.bin", *c)
            await run_stdin(b"from stdin", "cp", "-", "photos/notes.txt", *c)
            names = json.loads((await run("ls", "photos/2026/", "--json", *c)).stdout)
            assert [(o["key"], o["size"]) for o in names] == [("2026/report.bin", 300_000)]
            everything = (await run("ls", "photos", *c)).stdout.decode()
            assert "2026/report.bin" in everything and "notes.txt" in everything

            back = tmp_path / "back.bin"
            await run("cp", "photos/2026/report.bin", str(back), *c)
            assert back.read_bytes() == report.read_bytes()
            out = await run("cp", "photos/notes.txt", "-", *c)
            assert out.stdout == b"from stdin"

            stat = json.loads((await run("stat", "photos/notes.txt", "--json", *c)).stdout)
            assert stat["size"] == 10 and stat["cap"].startswith("p2ps:read:")
            health = json.loads((await run("stat", stat["cap"], "--json", *c)).stdout)
            assert health["state"] == "healthy"  # a read cap still works for sharing
            info = json.loads((await run("bucket", "info", "photos", "--json", *c)).stdout)
            assert info["objects"] == 2 and info["rule"] == "replica-3"

            busy = await run("bucket", "rm", "photos", *c, check=False)
            assert busy.returncode == 1 and b"still holds 2 objects" in busy.stderr
            await run("rm", "photos/notes.txt", *c)
            await run("rm", "photos/2026/report.bin", *c)
            gone = await run("stat", "photos/notes.txt", *c, check=False)
            assert gone.returncode == 1 and b"no object" in gone.stderr
            await run("bucket", "rm", "photos", *c)
            assert json.loads((await run("bucket", "ls", "--json", *c)).stdout) == []


def test_a_client_without_tenant_key_is_told_what_to_add(tmp_path):
    for name in ("k", "c", "ca"):
        (tmp_path / name).write_text("x")
    path = write_client_config(
        tmp_path, key="k", certificate="c", ca_certificate="ca", revocation_list=None,
        bootstrap_peers=("127.0.0.1:1",),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="tenant_key is not set"):
        load_client_config(path).read_tenant_key()
    (tmp_path / "tenant.key").write_text("abcd\n")
    path.write_text(
        path.read_text().replace('# tenant_key = "tenant.key"', 'tenant_key = "tenant.key"')
    )
    with pytest.raises(ConfigError, match="holds 2 bytes"):
        load_client_config(path).read_tenant_key()
