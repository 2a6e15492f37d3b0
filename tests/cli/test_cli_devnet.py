"""``p2pstore devnet``: a local mesh of real node processes that all see each other, then stop
cleanly; and the help texts that lead a newcomer there."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from process_groups import Watched, children_of, command_line, kill_group, run_group
from prometheus_client.parser import text_string_to_metric_families

from p2pstore.cli.config import load_node_config
from p2pstore.cli.main import cli
from p2pstore.identity import TrustAnchor

DEADLINE = 90.0


def devnet(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "p2pstore", "devnet", "--exit-when-ready", "--timeout", "60"]
    return run_group(
        [*command, *args], env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=DEADLINE
    )


def table_rows(output: str) -> dict[str, list[str]]:
    """The rows of the who-sees-whom table, by node name, as lists of cell texts."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|┃]", line)[1:-1]]
        if cells and re.fullmatch(r"node-\d+", cells[0]):
            rows[cells[0]] = cells
    return rows


@pytest.mark.integration
def test_eight_nodes_join_through_one_bootstrap_peer_and_find_each_others_records():
    """The DHT on real processes: every node but the first is given only node-1's address, and
    from each node as the entry point every other node's signed announcement is found."""
    result = devnet("--nodes", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "8 nodes joined through node-1" in text
    assert "(56/56 lookups)" in text
    rows = table_rows(result.stdout)
    assert len(rows) == 8 and all(cells[5] == "up" for cells in rows.values())
    assert re.findall(r"exit code (-?\d+)", result.stdout) == ["0"] * 8


@pytest.mark.integration
def test_ctrl_c_in_a_terminal_stops_every_node_cleanly(tmp_path):
    """A terminal's Ctrl-C sends SIGINT to the whole process group: the devnet and every node
    at once, and the devnet then sends its own SIGTERM to nodes already stopping."""
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pstore", "devnet", "--nodes", "3", "--dir", str(tmp_path / "m")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        start_new_session=True,  # its own process group, like a shell job
    )
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:  # bounded: the devnet gives up after its --timeout (60 s)
            seen.append(line)
            if "Ctrl-C stops every node" in line:
                break
        assert any("mesh ready" in line for line in seen), "".join(seen)
        # Every node's admin endpoint is on, on the loopback port the devnet printed.
        urls = re.findall(r"node-\d+ +(http://127\.0\.0\.1:\d+/metrics)", "".join(seen))
        assert len(urls) == 3, "".join(seen)
        for url in urls:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                text = response.read().decode()
            joined = {f.name: f for f in text_string_to_metric_families(text)}["p2pstore_joined"]
            assert joined.samples[0].value == 1
            health = url.removesuffix("/metrics") + "/health"
            with urllib.request.urlopen(health, timeout=10) as response:
                assert json.loads(response.read())["joined"] is True
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, rest
    codes = re.findall(r"node-\d+ stopped \(exit code (-?\d+)\)", rest)
    assert codes == ["0", "0", "0"], rest


def start_devnet(directory: Path, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """A devnet of 3 nodes in its own session, read until it is ready and waiting for Ctrl-C."""
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pstore", "devnet", "--dir", str(directory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        start_new_session=True,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # bounded: the devnet gives up after its --timeout (60 s)
        seen.append(line)
        if "Ctrl-C stops every node" in line:
            break
    assert any("mesh ready" in line for line in seen), "".join(seen)
    return process, seen


def node_processes(parent: int) -> list[int]:
    return [pid for pid in children_of(parent) if "node" in command_line(pid)]


@pytest.mark.integration
@pytest.mark.parametrize("how", ["SIGKILL", "closed terminal"])
def test_the_nodes_of_a_devnet_die_with_it(tmp_path, how):
    """However the devnet ends (SIGKILL gives it no chance to stop anything; a closed terminal
    sends SIGHUP to the whole job, and the nodes take SIGHUP as "reload the CRL"), no node
    process outlives it: each stops cleanly, its log ending with ``node stopped``."""
    directory = tmp_path / "m"
    process, _seen = start_devnet(directory, "--nodes", "3")
    watched = None
    try:
        nodes = node_processes(process.pid)
        assert len(nodes) == 3, [command_line(pid) for pid in children_of(process.pid)]
        watched = Watched(nodes)
        if how == "SIGKILL":
            process.kill()  # the devnet alone: its nodes are left to notice
        else:
            os.killpg(process.pid, signal.SIGHUP)
        rest, _ = process.communicate(timeout=DEADLINE)
        assert watched.wait_all_gone(timeout=30) == []
    finally:
        if watched is not None:
            watched.close()
        kill_group(process.pid)  # nodes outliving the test would hide the failure: none may
        process.wait()
    for name in ("node-1", "node-2", "node-3"):
        log = (directory / name / "node.log").read_text(encoding="utf-8")
        assert "node stopped" in log.rstrip().splitlines()[-1], log
        if how == "SIGKILL":
            assert "event=parent_exited" in log
    if how == "closed terminal":
        assert process.returncode == 0, rest
        assert "SIGHUP: stopping every node" in rest
        assert re.findall(r"node-\d+ stopped \(exit code (-?\d+)\)", rest) == ["0"] * 3


@pytest.mark.integration
def test_devnet_brings_up_five_nodes_that_see_each_other_and_stops_them():
    result = devnet("--nodes", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mesh ready" in result.stdout
    assert "(20/20 lookups)" in " ".join(result.stdout.split())
    rows = table_rows(result.stdout)
    assert sorted(rows) == [f"node-{i}" for i in range(1, 6)]
    for index, name in enumerate(sorted(rows)):
        cells = rows[name]
        _node, node_id, datacenter, region, address, state, *marks = cells
        assert re.fullmatch(r"[0-9a-f]{8}", node_id)
        assert datacenter == f"dc-{index + 1}"
        assert region == ("FR-GES", "FR-IDF")[index % 2]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
        assert state == "up"
        assert marks == ["✓" if other != index else "-" for other in range(5)]
    for i in range(1, 6):
        assert f"node-{i} stopped (exit code 0)" in result.stdout
    # Without --dir the mesh lived in a temporary directory, removed on exit.
    match = re.search(r"files in (\S+)", result.stdout)
    assert match is not None
    assert not Path(match.group(1)).exists()


@pytest.mark.integration
def test_devnet_keeps_its_files_with_dir(tmp_path):
    directory = tmp_path / "mesh"
    result = devnet("--nodes", "2", "--regions", "FR-ARA", "--dir", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"files in {directory}" in result.stdout
    ca_dir = directory / "ca"
    assert {"ca.key", "ca.crt", "crl.pem"} <= {p.name for p in ca_dir.iterdir()}
    TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    first = load_node_config(directory / "node-1" / "node.toml")
    admin_addresses = set()
    for name in ("node-1", "node-2"):
        config = load_node_config(directory / name / "node.toml")
        assert config.revocation_list == directory / name / ".." / "ca" / "crl.pem"
        # node-1 starts the mesh; every other node joins through it.
        assert config.bootstrap_peers == (() if name == "node-1" else (first.listen,))
        # Its admin endpoint is on, on loopback, on a port of its own, and the devnet said where.
        assert config.metrics_listen is not None
        assert config.metrics_listen.startswith("127.0.0.1:")
        assert not config.metrics_allow_public
        admin_addresses.add(config.metrics_listen)
        assert re.search(rf"{name} +http://{config.metrics_listen}/metrics", result.stdout)
        log = (directory / name / "node.log").read_text(encoding="utf-8")
        assert f"admin endpoint on http://{config.metrics_listen}" in log
        assert f"listening on {config.listen}" in log
        assert "(dc-" in log and "FR-ARA" in log
        assert "node stopped" in log.rstrip().splitlines()[-1]
    assert len(admin_addresses | {first.listen}) == 3

    # The same command again restarts the stopped mesh: same identities, addresses and data.
    again = devnet("--regions", "FR-ARA", "--dir", str(directory))
    assert again.returncode == 0, again.stdout + again.stderr
    text = " ".join(again.stdout.split())
    assert f"restarting the mesh of 2 nodes in {directory}" in text
    assert "mesh ready" in text and "(2/2 lookups)" in text
    before = {cells[1] for cells in table_rows(result.stdout).values()}
    assert {cells[1] for cells in table_rows(again.stdout).values()} == before
    for name in ("node-1", "node-2"):
        log = (directory / name / "node.log").read_text(encoding="utf-8")
        assert log.count("event=stopped") == 2
    wrong = devnet("--nodes", "3", "--dir", str(directory))
    assert wrong.returncode == 2
    assert "has 2 nodes; leave --nodes out to restart it" in " ".join(wrong.stderr.split())


@pytest.mark.integration
def test_a_devnet_that_did_not_come_up_keeps_its_logs():
    result = devnet("--nodes", "2", "--timeout", "0.01")
    match = re.search(r"kept (\S+) for inspection", result.stdout)
    assert match is not None, result.stdout + result.stderr
    kept = Path(match.group(1))
    try:
        assert result.returncode == 1
        assert "the mesh did not come up" in result.stdout
        for name in ("node-1", "node-2"):
            assert str(kept / name / "node.log") in result.stdout
            assert (kept / name / "node.log").is_file()
    finally:
        shutil.rmtree(kept)


def test_devnet_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "something").write_text("x", encoding="utf-8")
    result = CliRunner().invoke(cli, ["devnet", "--dir", str(tmp_path), "--exit-when-ready"])
    assert result.exit_code == 2
    assert "is not empty and holds no local mesh to restart" in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["something"]


def test_devnet_needs_two_nodes():
    result = CliRunner().invoke(cli, ["devnet", "--nodes", "1"])
    assert result.exit_code == 2
    assert "at least 2 nodes" in result.stderr


def help_text(*command: str) -> str:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # unwrapped, so phrases do not depend on width


def test_top_level_help_points_to_the_first_commands():
    text = help_text()
    for phrase in (
        "p2pstore demo",
        "p2pstore devnet",
        "p2pstore put FILE",
        "p2pstore get CAP",
        "p2pstore ca --help",
        "p2pstore node run --help",
        "--debug",
    ):
        assert phrase in text
    assert "storage mesh" in text


def test_devnet_help_explains_what_it_starts():
    text = help_text("devnet")
    for phrase in ("local mesh", "loopback", "mutual TLS", "--nodes", "--exit-when-ready", "--dir"):
        assert phrase in text
    assert "[default: 10]" in text


def test_node_run_help_names_the_config_and_signals():
    text = help_text("node", "run")
    for phrase in ("--config", "SIGTERM", "SIGHUP reloads the revocation list", "node.toml"):
        assert phrase in text


def test_ca_issue_help_gives_examples_of_datacenter_and_region():
    text = help_text("ca", "issue")
    for phrase in ("--datacenter", "--region", "FR-GES", "NAME.key and NAME.crt", "--client"):
        assert phrase in text


def test_ca_help_lists_the_ceremony():
    text = help_text("ca")
    for command in ("init", "issue", "revoke", "list", "show"):
        assert re.search(rf"\b{command}\b", text)
    assert "offline" in text


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"p2pstore, version \d+\.\d+\.\d+\S*\n", result.output)
