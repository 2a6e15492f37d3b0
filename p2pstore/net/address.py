"""Network addresses as "host:port" strings, with IPv6 in brackets."""

from __future__ import annotations

from p2pstore.errors import ConfigError


def parse_address(text: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; :class:`ConfigError` names the bad text."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"bad address {text!r}: expected host:port, e.g. 127.0.0.1:7400")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad address {text!r}: port {port} is outside 0-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
