"""node.toml's [limits]: each key sets its bound, the defaults are the settings' own, and a bad
value is refused with the key named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from p2pstore.cli.config import Limits, load_node_config
from p2pstore.cli.config_render import render_node_config
from p2pstore.errors import ConfigError
from p2pstore.identity import MeshCA

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("node")
    authority = MeshCA.create(directory / "ca", mesh_name="test", now=datetime.now(UTC))
    authority.issue(directory, "node", datacenter="dc-1", region="FR-GES", now=datetime.now(UTC))
    return directory


def load(node_dir: Path, limits: dict[str, int | float | str] | None) -> Limits:
    text = render_node_config(
        listen="127.0.0.1:0", data_dir="data", key="node.key", certificate="node.crt",
        ca_certificate="ca/ca.crt", limits=limits,
    )  # fmt: skip
    (node_dir / "node.toml").write_text(text, encoding="utf-8")
    return load_node_config(node_dir / "node.toml").limits


def test_without_a_limits_table_the_defaults_apply(node_dir):
    assert load(node_dir, None) == Limits()


def test_every_key_sets_its_bound(node_dir):
    limits = load(
        node_dir,
        {
            "requests_per_session": 10, "busy_replies_per_session": 11, "idle_timeout": "2m",
            "sessions_per_client": 3, "sessions_per_address": 12,
            "requests_in_flight": 100, "requests_in_flight_per_peer": 20,
            "lookups_per_second": 7.5, "lookup_burst": 30, "stores_per_second": 8,
            "store_burst": 40, "fragment_bytes_per_second": "10 MiB", "fragment_burst": "1 GiB",
            "receive_buffer": "128 MiB", "receive_buffer_per_peer": 33554432,
            "partial_frame_timeout": 20, "handshake_timeout": 2.5, "handshakes": 32,
            "handshakes_per_address": 4, "handshakes_reserved_for_members": 8,
            "handshake_rate_per_address": 2.5, "handshake_burst_per_address": 10,
        },
    )  # fmt: skip
    session, node, admission, tls = (
        limits.node.session, limits.node, limits.node.admission, limits.transport,
    )  # fmt: skip
    assert (session.max_inbound, session.max_busy_replies, session.idle_timeout) == (10, 11, 120)
    assert (node.max_sessions_per_client, node.max_sessions_per_address) == (3, 12)
    assert (admission.max_requests, admission.max_peer_requests) == (100, 20)
    assert (admission.lookups_per_second, admission.lookup_burst) == (7.5, 30)
    assert (admission.stores_per_second, admission.store_burst) == (8, 40)
    assert (admission.fragment_bytes_per_second, admission.fragment_burst) == (10 * MiB, 1024 * MiB)
    assert (tls.receive_budget, tls.receive_budget_per_peer) == (128 * MiB, 32 * MiB)
    assert (tls.partial_frame_timeout, tls.handshake_timeout) == (20, 2.5)
    assert (tls.max_concurrent_handshakes, tls.max_handshakes_per_address) == (32, 4)
    assert (tls.member_handshakes, tls.handshake_rate_per_address) == (8, 2.5)
    assert tls.handshake_burst_per_address == 10
    gate = tls.handshake_limits()
    assert (gate.slots, gate.member_slots, gate.per_address, gate.rate, gate.burst) == (
        32, 8, 4, 2.5, 10,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("requests_per_session", 0, "whole number >= 1"),
        ("sessions_per_client", 2.5, "whole number >= 1"),
        ("lookups_per_second", -1, "number > 0"),
        ("stores_per_second", "fast", "number > 0"),
        ("receive_buffer", "lots", "bad size"),
        ("fragment_burst", 0, "size such as"),
        ("idle_timeout", 0, "more than 0 seconds"),
        ("handshake_timeout", "soon", "duration"),
        ("handshake_burst_per_address", 0.5, "burst >= 1"),
        ("handshakes_reserved_for_members", 0, "whole number >= 1"),
        ("requests_in_flight_per_peer", 1000, "max_peer_requests <= max_requests"),
        ("receive_buffer_per_peer", "1 GiB", "receive_budget_per_peer <= receive_budget"),
        ("sesions_per_client", 3, "did you mean 'sessions_per_client'"),
    ],
)
def test_a_bad_value_names_its_key(node_dir, key, value, problem):
    with pytest.raises(ConfigError, match="limits") as error:
        load(node_dir, {key: value})
    assert problem in str(error.value)
