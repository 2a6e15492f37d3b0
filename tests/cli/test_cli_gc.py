"""Garbage collection across real node processes with a short lease and grace period: a tenant's
cp -> ls -> get -> overwrite -> rm, and the space is freed on every node; two names for the
same bytes (a convergent put) keep them until both are removed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
from test_cli_objects import DEADLINE, run, running_mesh

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import LOCAL_RULES
from p2pstore.net.collection import CollectionSettings

GC = CollectionSettings(grace_period=3.0, sweep_interval=0.5, enabled=True, initial_lease=4.0)
SETTLED = GC.initial_lease + GC.grace_period + 8.0
"""A lease and the grace, plus steward rounds (1 s) and sweeps: when what nothing keeps is gone."""


def short_gc(members) -> None:
    for member in members:
        write_local_node_config(
            member.directory,
            listen=member.address,
            bootstrap_peers=() if member is members[0] else (members[0].address,),
            rules=LOCAL_RULES,
            repair_check_interval=1.0,
            gc=GC,
        )


def fragments(members) -> dict[str, int]:
    """Fragment files on each node's disk."""
    counted = {}
    for member in members:
        root = Path(member.directory) / "data" / "fragments"
        counted[member.name] = sum(1 for p in root.rglob("*") if p.is_file())
    return counted


async def until(members, condition, bound: float) -> dict[str, int]:
    with trio.fail_after(bound):
        while not condition(held := fragments(members)):  # noqa: ASYNC110 - other processes
            await trio.sleep(0.5)
    return held


@pytest.mark.integration
async def test_removed_names_free_the_space_on_every_node_process(tmp_path):
    first, second, shared = (os.urandom(150_000) for _ in range(3))
    files = {}
    for name, data in (("first", first), ("second", second), ("shared", shared)):
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    with trio.fail_after(DEADLINE * 4):
        async with running_mesh(tmp_path / "mesh", 6, short_gc) as (members, _processes, config):
            c = ("--config", str(config))
            await run("bucket", "create", "lab", "--rule", "replica-3", *c)
            await run("cp", str(files["first"]), "lab/run.bin", *c)
            await run("cp", str(files["shared"]), "lab/a.bin", *c)
            await run("cp", str(files["shared"]), "lab/b.bin", *c)  # the same bytes again
            listed = json.loads((await run("ls", "lab", "--json", *c)).stdout)
            assert [o["key"] for o in listed] == ["a.bin", "b.bin", "run.bin"]
            caps = {o["key"]: o["cap"] for o in listed}
            assert caps["a.bin"] == caps["b.bin"]  # deduplicated: one object, two names
            back = tmp_path / "back"
            await run("cp", "lab/run.bin", str(back), *c)
            assert back.read_bytes() == first
            assert sum(fragments(members).values()) == 6  # two objects, three replicas each

            await trio.sleep(SETTLED)  # lease and grace pass: named objects are renewed
            assert sum(fragments(members).values()) == 6, "a named object lost fragments"

            await run("cp", str(files["second"]), "lab/run.bin", *c)  # overwrite
            await run("rm", "lab/a.bin", *c)
            await until(members, lambda held: sum(held.values()) == 6, SETTLED + 30)
            await run("cp", "lab/b.bin", str(back), *c)  # b.bin still names the bytes
            assert back.read_bytes() == shared
            await run("cp", "lab/run.bin", str(back), *c)
            assert back.read_bytes() == second

            await run("rm", "lab/b.bin", *c)
            await run("rm", "lab/run.bin", *c)
            removed = trio.current_time()
            held = await until(members, lambda held: sum(held.values()) == 0, SETTLED + 30)
            assert set(held.values()) == {0}
            assert trio.current_time() - removed <= SETTLED + 30
            assert json.loads((await run("ls", "lab", "--json", *c)).stdout) == []
