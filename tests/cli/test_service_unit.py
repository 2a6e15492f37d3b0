"""bootstrap/p2pstore-node.service: hardened as the operator's guide says, runs a command that
exists, and passes ``systemd-analyze verify`` where systemd is installed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from p2pstore.cli.main import cli
from p2pstore.net.node import NodeSettings

UNIT = Path(__file__).resolve().parents[2] / "bootstrap" / "p2pstore-node.service"


def directives() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, in order (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, sep, value = line.partition("=")
            assert sep, f"not a directive: {line!r}"
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_is_hardened():
    unit = directives()
    expected = {
        "User": "p2pstore",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "p2pstore",
        "StateDirectoryMode": "0700",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "KillSignal": "SIGTERM",
        "RestartPreventExitStatus": "2",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_the_stop_timeout_outlasts_the_nodes_own_goodbyes():
    (timeout,) = directives()["TimeoutStopSec"]
    assert int(timeout) > 2 * NodeSettings().stop_timeout


def test_exec_start_runs_an_existing_command():
    (command,) = directives()["ExecStart"]
    program, *argv = shlex.split(command)
    assert Path(program).name == "p2pstore"
    assert argv == ["node", "run", "--config", "/etc/p2pstore/node.toml"]
    group = cli.get_command(click.Context(cli), argv[0])
    assert isinstance(group, click.Group)
    run = group.get_command(click.Context(group), argv[1])
    assert run is not None
    assert "--config" in {opt for param in run.params for opt in getattr(param, "opts", [])}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """The unit as shipped, with ExecStart pointed at this interpreter (verify checks that the
    program exists; /opt/p2pstore is where the guide installs it on a real machine)."""
    text = UNIT.read_text(encoding="utf-8")
    (command,) = directives()["ExecStart"]
    program = shlex.split(command)[0]
    local = text.replace(f"ExecStart={program} ", f"ExecStart={sys.executable} -m p2pstore ")
    assert local != text
    copy = tmp_path / UNIT.name
    copy.write_text(local, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert UNIT.name not in result.stdout + result.stderr  # no warning about our unit
