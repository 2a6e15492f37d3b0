"""``[limits]`` of node.toml: which key sets which bound of the transport, sessions and node.

Why a table: every bound is a key of one section, read and checked the same way
(:func:`p2pstore.cli.config.read_limits`), so adding a bound is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pstore.net.node import NodeSettings
from p2pstore.net.tls import TlsSettings


@dataclass(frozen=True, slots=True)
class Limits:
    """``[limits]``: the bounds on what peers may use, as the transport's and node's settings
    (keys left out keep the settings' defaults)."""

    transport: TlsSettings = field(default_factory=TlsSettings)
    node: NodeSettings = field(default_factory=NodeSettings)


LIMIT_KEYS: dict[str, tuple[str, str, str]] = {
    # key -> (kind of value, settings it sets, field)
    "requests_per_session": ("count", "session", "max_inbound"),
    "busy_replies_per_session": ("count", "session", "max_busy_replies"),
    "idle_timeout": ("duration", "session", "idle_timeout"),
    "sessions_per_client": ("count", "node", "max_sessions_per_client"),
    "sessions_per_address": ("count", "node", "max_sessions_per_address"),
    "requests_in_flight": ("count", "admission", "max_requests"),
    "requests_in_flight_per_peer": ("count", "admission", "max_peer_requests"),
    "lookups_per_second": ("number", "admission", "lookups_per_second"),
    "lookup_burst": ("number", "admission", "lookup_burst"),
    "stores_per_second": ("number", "admission", "stores_per_second"),
    "store_burst": ("number", "admission", "store_burst"),
    "fragment_bytes_per_second": ("size", "admission", "fragment_bytes_per_second"),
    "fragment_burst": ("size", "admission", "fragment_burst"),
    "receive_buffer": ("size", "transport", "receive_budget"),
    "receive_buffer_per_peer": ("size", "transport", "receive_budget_per_peer"),
    "partial_frame_timeout": ("duration", "transport", "partial_frame_timeout"),
    "handshake_timeout": ("duration", "transport", "handshake_timeout"),
    "handshakes": ("count", "transport", "max_concurrent_handshakes"),
    "handshakes_per_address": ("count", "transport", "max_handshakes_per_address"),
    "handshakes_reserved_for_members": ("count", "transport", "member_handshakes"),
    "handshake_rate_per_address": ("number", "transport", "handshake_rate_per_address"),
    "handshake_burst_per_address": ("number", "transport", "handshake_burst_per_address"),
}
