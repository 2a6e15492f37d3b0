"""[metrics] in node.toml (off by default, loopback unless allowed) and ``p2pstore node status``
when there is nothing to ask."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli_config import GOOD, refusal, write

from p2pstore.cli.config import is_loopback, load_node_config
from p2pstore.cli.config_render import render_node_config
from p2pstore.cli.local_mesh import free_loopback_ports
from p2pstore.cli.main import cli
from p2pstore.cli.node_status import render_status
from p2pstore.identity import MeshCA


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a node's identity files, as ``p2pstore ca`` writes them."""
    directory = tmp_path_factory.mktemp("node")
    now = datetime.now(UTC)
    authority = MeshCA.create(directory / "ca", mesh_name="test", now=now)
    authority.issue(directory, "node", datacenter="dc-1", region="FR-GES", now=now)
    return directory


def with_metrics(**metrics: object) -> dict[str, object]:
    return {**GOOD, "metrics": metrics}


def test_the_endpoint_is_off_unless_configured(node_dir):
    config = load_node_config(write(node_dir, GOOD))
    assert (config.metrics_listen, config.metrics_allow_public) == (None, False)


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9464", "127.8.0.1:9464", "[::1]:9464", "localhost:0"]
)
def test_loopback_addresses_are_accepted(node_dir, listen):
    config = load_node_config(write(node_dir, with_metrics(listen=listen)))
    assert config.metrics_listen == listen


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9464", "[::]:9464", "10.0.0.7:9464", "metrics.example.org:9464"]
)
def test_a_reachable_address_is_refused_unless_allowed(node_dir, listen):
    message = refusal(node_dir, with_metrics(listen=listen))
    assert "[metrics] listen" in message
    assert "allow_public" in message
    config = load_node_config(write(node_dir, with_metrics(listen=listen, allow_public=True)))
    assert (config.metrics_listen, config.metrics_allow_public) == (listen, True)


@pytest.mark.parametrize(
    ("metrics", "named"),
    [
        ({"listen": "127.0.0.1"}, "[metrics] listen"),
        ({"listen": 9464}, "[metrics] listen"),
        ({"listen": "127.0.0.1:9464", "allow_public": "yes"}, "[metrics] allow_public"),
        ({"lisen": "127.0.0.1:9464"}, "did you mean 'listen'"),
    ],
)
def test_bad_metrics_keys_are_named(node_dir, metrics, named):
    assert named in refusal(node_dir, with_metrics(**metrics))


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.1")
    assert not is_loopback("localhost.example.org")


def test_a_rendered_config_keeps_its_metrics_address(node_dir):
    text = render_node_config(
        listen="127.0.0.1:7401",
        data_dir="data",
        key="node.key",
        certificate="node.crt",
        ca_certificate="ca/ca.crt",
        metrics_listen="127.0.0.1:9465",
    )
    (node_dir / "rendered-metrics.toml").write_text(text, encoding="utf-8")
    config = load_node_config(node_dir / "rendered-metrics.toml")
    assert (config.metrics_listen, config.metrics_allow_public) == ("127.0.0.1:9465", False)


def test_node_status_with_the_endpoint_off_exits_2_naming_the_key(node_dir):
    config = write(node_dir, GOOD, "no-metrics.toml")
    result = CliRunner().invoke(cli, ["node", "status", "--config", str(config)])
    assert result.exit_code == 2
    assert "[metrics] listen is not set" in result.output


def test_node_status_with_no_node_running_exits_1(node_dir):
    listen = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    config = write(node_dir, with_metrics(listen=listen), "not-running.toml")
    result = CliRunner().invoke(cli, ["node", "status", "--config", str(config)])
    assert result.exit_code == 1
    assert f"no node answers on {listen}" in result.output
    assert "Traceback" not in result.output


def test_the_status_summary_reads_well():
    document = {
        "node_id": "ab" * 20,
        "datacenter": "dc-strasbourg-1",
        "region": "FR-GES",
        "address": "10.0.0.1:7400",
        "version": "0.1.0",
        "joined": True,
        "sessions": {"node": 1, "client": 2},
        "peers": [
            {
                "node_id": "cd" * 20,
                "role": "node",
                "datacenter": "dc-nancy-1",
                "region": "FR-GES",
                "address": "10.0.0.2:7400",
                "outbound": True,
                "connected_seconds": 7300.0,
                "wire_version": 3,
            }
        ],
        "routing_table": {"contacts": 12},
        "store": {
            "fragments": 3,
            "bytes_used": 3 * 2**20,
            "quota_bytes": 500 * 2**30,
            "free_bytes": 500 * 2**30 - 3 * 2**20,
            "writable": False,
            "reason": "read-only file system",
            "corrupt_found": 1,
        },
        "records": {"held": 4, "bytes_held": 2048, "published": 1},
        "audits": {
            "holders": [
                {"node_id": "ef" * 20, "datacenter": "dc-metz-1", "passed": 0, "failed": 3,
                 "last_verdict": "wrong-proof", "watched_fragments": 0},
                {"node_id": "cd" * 20, "datacenter": "dc-nancy-1", "passed": 9, "failed": 0,
                 "last_verdict": "passed", "watched_fragments": 5},
            ],
            "recent_failures": [],
        },
    }  # fmt: skip
    text = render_status(document)
    assert "2 holders audited by this node's steward, 1 failed some" in text
    assert "efefefefefefefef  dc-metz-1  failed 3, passed 0 (last: wrong-proof)" in text
    assert "ab" * 20 in text
    assert "dc-strasbourg-1, FR-GES, listening on 10.0.0.1:7400" in text
    assert "3 fragments, 3.0 MiB of 500.0 GiB quota, NOT WRITABLE: read-only file system" in text
    assert "1 corrupt fragments found" in text
    assert "12 contacts in the routing table, 4 records held (2.0 KiB), 1 published" in text
    assert "1 nodes connected, 2 client sessions" in text
    assert "cdcdcdcdcdcdcdcd  node   dc-nancy-1, FR-GES  to 10.0.0.2:7400  for 2h01m" in text
    assert "for 2h01m  wire v3" in text
