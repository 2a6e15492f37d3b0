"""Revocation on real processes, as the operator's guide says to do it: ``ca revoke --publish``
through a client, and no file copied to any node, no SIGHUP.  Every node process adopts the new
list, and the revoked holder's fragments are rebuilt on other nodes.

Real processes, sockets and time; waits poll what the processes report (their log files, a
``stat``) under a deadline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
from test_cli_objects import run, running_mesh

from p2pstore.cli.config_render import render_rules, write_local_node_config
from p2pstore.cli.local_mesh import LOCAL_CHECK_INTERVAL, LOCAL_RULES, DevnetNode
from p2pstore.core.rules import CodingRule
from p2pstore.identity import identity_from_certificate, load_certificate

pytestmark = pytest.mark.integration

DEADLINE = 150.0
STRICT = CodingRule("strict", k=4, n=8, repair_threshold=8, grace_period=20.0)
"""Repair as soon as one fragment of eight stops counting: a revoked holder's, here."""


def declare_strict(members: list[DevnetNode]) -> None:
    """Every node and the client declare ``strict`` besides the local rules."""
    for member in members:
        others = () if member is members[0] else (members[0].address,)
        write_local_node_config(
            member.directory,
            listen=member.address,
            bootstrap_peers=others,
            metrics_listen=member.admin_address,
            rules={**LOCAL_RULES, STRICT.name: STRICT},
            repair_check_interval=LOCAL_CHECK_INTERVAL,
        )
    client = members[0].directory.parent / "client" / "client.toml"
    with client.open("a", encoding="utf-8") as toml:
        toml.write("\n" + "\n".join(render_rules({STRICT.name: STRICT})))


def adopted(log: Path, number: int) -> bool:
    return f"adopted revocation list {number} " in log.read_text(encoding="utf-8", errors="replace")


async def test_a_published_revocation_reaches_every_node_process_and_moves_fragments(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(512 * 1024 + 3))
    mesh = tmp_path / "mesh"
    with trio.fail_after(DEADLINE):
        async with running_mesh(mesh, 9, declare_strict) as (members, _processes, config):
            put_args = ("put", str(source), "--rule", STRICT.name, "--json")
            put = json.loads((await run(*put_args, "--config", str(config))).stdout)
            verify = put["verify_cap"]
            stat = json.loads((await run("stat", verify, "--json", "--config", str(config))).stdout)
            holders = {f["node_id"] for f in stat["chunks"][0]["fragments"]}
            victim = next(m for m in members if m.node_id.hex() in holders)
            serial = identity_from_certificate(
                load_certificate(victim.directory / "node.crt")
            ).serial
            crl = (mesh / "ca" / "crl.pem").read_bytes()

            done = await run(
                "ca", "revoke", str(mesh / "ca"), "--serial", str(serial), "--publish", str(config)
            )
            assert b"published revocation list 2" in done.stdout, done.stdout
            assert (mesh / "ca" / "crl.pem").read_bytes() != crl  # only the CA's copy changed

            started = trio.current_time()
            logs = [m.directory / "node.log" for m in members if m is not victim]
            while True:  # the revoked node is told nothing: everyone closed its sessions
                if all(adopted(log, 2) for log in logs):
                    break
                await trio.sleep(0.2)
            spread = trio.current_time() - started
            assert spread < 30, spread  # gossip: seconds, not the 5-minute refresh

            while True:  # the stewards' next rounds rebuild the victim's fragments
                stat = json.loads(
                    (await run("stat", verify, "--json", "--config", str(config))).stdout
                )
                nodes = {f["node_id"] for c in stat["chunks"] for f in c["fragments"]}
                if victim.node_id.hex() not in nodes and all(
                    c["live"] == 8 for c in stat["chunks"]
                ):
                    break
                await trio.sleep(1.0)
            copy = tmp_path / "copy.bin"
            await run("get", put["read_cap"], "-o", str(copy), "--config", str(config))
            assert copy.read_bytes() == source.read_bytes()


async def test_put_under_a_rule_the_mesh_policy_does_not_know_is_refused(tmp_path):
    """The issue's client whose ``standard`` said k=5: once the CA published a policy, its put
    is refused naming the rule, and so is a rule only the client declares; a known rule works."""
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(4096))
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        '[policy]\nprotocol_versions = [2, 3]\ncheck_interval = "5s"\n\n'
        + "\n".join(render_rules(LOCAL_RULES)),
        encoding="utf-8",
    )
    mesh = tmp_path / "mesh"
    with trio.fail_after(DEADLINE):
        async with running_mesh(mesh, 4) as (members, _processes, config):
            done = await run(
                "ca", "policy", str(mesh / "ca"), str(policy_file), "--config", str(config)
            )
            assert b"published mesh policy" in done.stdout, done.stdout
            ok = await run("put", str(source), "--rule", "replica-3", "--config", str(config))
            assert ok.returncode == 0
            wrong = CodingRule("standard", k=5, n=8, repair_threshold=6)
            mine = CodingRule("mine", k=1, n=2, repair_threshold=2)
            with config.open("a", encoding="utf-8") as toml:
                toml.write("\n" + "\n".join(render_rules({"mine": mine})))
            text = config.read_text(encoding="utf-8").replace(
                "[rules.standard]\nk = 4", "[rules.standard]\nk = 5"
            )
            config.write_text(text, encoding="utf-8")
            for rule, expected in ((wrong, b"5-of-8"), (mine, b"knows no coding rule 'mine'")):
                refused = await run(
                    "put", str(source), "--rule", rule.name, "--config", str(config), check=False
                )
                assert refused.returncode == 2, refused.stderr
                assert expected in refused.stderr, refused.stderr
            logs = [m.directory / "node.log" for m in members]
            assert all("adopted mesh policy" in log.read_text(encoding="utf-8") for log in logs)
